"""Both drivers against a fake cgroupfs: plain directories holding the files the kernel would show.

This covers what the host cannot show for real: v2 with its controllers enabled (this CI host
binds them to v1), v1 hugetlb, swap-less memory, legacy blkio and cpuacct formats. The real
kernel is exercised in tests/integration/test_cgroups_real.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from shim.cgroups.base import Resources
from shim.cgroups.v1 import V1Manager
from shim.cgroups.v2 import V2Manager

V2_LEAF = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids\n", "cgroup.subtree_control": "",
    "cgroup.procs": "", "cgroup.freeze": "0\n", "cgroup.events": "populated 0\nfrozen 0\n",
    "cpu.weight": "100\n", "cpu.max": "max 100000\n", "cpuset.cpus": "", "cpuset.mems": "",
    "memory.max": "max\n", "memory.low": "0\n", "memory.swap.max": "max\n", "memory.current": "4096\n",
    "memory.peak": "8192\n", "memory.swap.current": "0\n", "memory.swap.peak": "0\n",
    "memory.events": "low 0\nhigh 1\nmax 2\noom 3\noom_kill 4\n",
    "memory.stat": "anon 100\nfile 200\nworkingset_refault_anon 1\nworkingset_refault_file 2\n",
    "pids.max": "max\n", "pids.current": "3\n", "io.weight": "default 100\n", "io.max": "",
    "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\nnr_throttled 3\n"
                "throttled_usec 70\n",
    "cpu.pressure": "some avg10=0.10 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 "
                    "total=7\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 "
                       "total=0\n",
    "hugetlb.2MB.max": "max\n", "hugetlb.2MB.current": "0\n", "hugetlb.2MB.events": "max 5\n",
    "hugetlb.2MB.rsvd.current": "0\n", "memory.high": "max\n",
}


def _fill(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


@pytest.fixture
def v2root(tmp_path: Path) -> Path:
    """A unified root whose host delegates controllers; dockyard/t/c1 and dockyard/t/c1/sub pre-made."""
    root = tmp_path / "cg2"
    _fill(root, {"cgroup.controllers": "cpuset cpu io memory hugetlb pids\n",
                 "cgroup.subtree_control": "cpu memory\n"})
    for d in (root / PARENT, root / PARENT / "t"):
        _fill(d, {"cgroup.controllers": "cpuset cpu io memory hugetlb pids\n", "cgroup.subtree_control": "",
                  "cgroup.procs": ""})
    _fill(root / PARENT / "t" / "c1", V2_LEAF)
    return root


def _read(p: Path) -> str:
    return p.read_text().strip()


def test_v2_create_enables_controllers_below_dockyard_only(v2root: Path) -> None:
    mgr = V2Manager(str(v2root))
    mgr.create("/t/c1")
    assert mgr.path == "/t/c1" and mgr.exists()
    want = "+cpuset +cpu +io +memory +hugetlb +pids"
    assert _read(v2root / PARENT / "cgroup.subtree_control") == want
    assert _read(v2root / PARENT / "t" / "cgroup.subtree_control") == want
    assert _read(v2root / PARENT / "t" / "c1" / "cgroup.subtree_control") == ""  # the leaf keeps its processes
    assert _read(v2root / "cgroup.subtree_control") == "cpu memory"  # the host's root is never written


def test_v2_apply_writes_the_converted_values(v2root: Path) -> None:
    mgr = V2Manager(str(v2root))
    res = Resources.from_oci({
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 100 << 20, "swap": 150 << 20, "reservation": 50 << 20, "swappiness": 30},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
        "devices": [{"allow": False, "access": "rwm"}],
        "unified": {"memory.high": "90000000"},
    })
    mgr.create("/t/c1", res)
    leaf = v2root / PARENT / "t" / "c1"
    assert _read(leaf / "cpu.weight") == "39"
    assert _read(leaf / "cpu.max") == "50000 200000"
    assert (_read(leaf / "cpuset.cpus"), _read(leaf / "cpuset.mems")) == ("0-1", "0")
    assert _read(leaf / "memory.max") == str(100 << 20)
    assert _read(leaf / "memory.swap.max") == str(50 << 20)  # OCI swap is memory+swap
    assert _read(leaf / "memory.low") == str(50 << 20)
    assert _read(leaf / "pids.max") == "64"
    assert _read(leaf / "io.weight") == "4950"
    assert _read(leaf / "io.max") == "8:0 rbps=1000"
    assert _read(leaf / "hugetlb.2MB.max") == str(2 << 20)
    assert _read(leaf / "memory.high") == "90000000"
    assert any(s.startswith("devices:") for s in mgr.skipped)
    assert any(s.startswith("memory.swappiness") for s in mgr.skipped)


def test_v2_update_keeps_what_is_not_set(v2root: Path) -> None:
    mgr = V2Manager(str(v2root))
    mgr.create("/t/c1", Resources(cpu_quota=20000, cpu_period=50000, memory_limit=64 << 20))
    leaf = v2root / PARENT / "t" / "c1"
    mgr.apply(Resources(cpu_quota=-1))
    assert _read(leaf / "cpu.max") == "max 50000"
    mgr.apply(Resources(cpu_period=100000))
    assert _read(leaf / "cpu.max") == "max 100000"
    mgr.apply(Resources(memory_swap=96 << 20))  # converted against the memory.max in place
    assert _read(leaf / "memory.swap.max") == str(32 << 20)
    assert _read(leaf / "memory.max") == str(64 << 20)
    mgr.apply(Resources(memory_limit=-1, memory_swap=-1, pids_limit=-1))
    assert (_read(leaf / "memory.max"), _read(leaf / "memory.swap.max"), _read(leaf / "pids.max")) == (
        "max", "max", "max")


def test_v2_bfq_weight_is_preferred(v2root: Path) -> None:
    leaf = v2root / PARENT / "t" / "c1"
    (leaf / "io.bfq.weight").write_text("default 100\n")
    mgr = V2Manager(str(v2root))
    mgr.create("/t/c1", Resources(blkio_weight=300))
    assert _read(leaf / "io.bfq.weight") == "300"
    assert _read(leaf / "io.weight") == "default 100"


def test_v2_missing_controller_file_is_failed_precondition(v2root: Path) -> None:
    leaf = v2root / PARENT / "t" / "c1"
    (leaf / "pids.max").unlink()
    mgr = V2Manager(str(v2root))
    with pytest.raises(FailedPrecondition, match=r"pids\.max"):
        mgr.create("/t/c1", Resources(pids_limit=5))
    with pytest.raises(FailedPrecondition):
        mgr.apply(Resources(pids_limit=5))  # unbound after the failed create
    mgr.create("/t/c1")
    with pytest.raises(FailedPrecondition, match=r"memory\.nonexistent"):
        mgr.apply(Resources(unified={"memory.nonexistent": "1"}))


def test_v2_stats_from_the_files(v2root: Path) -> None:
    mgr = V2Manager(str(v2root))
    mgr.create("/t/c1", Resources(memory_limit=1 << 30, pids_limit=10))
    s = mgr.stats()
    assert s.version == 2
    assert (s.cpu.usage_total, s.cpu.usage_user, s.cpu.usage_kernel) == (1_500_000, 1_000_000, 500_000)
    assert (s.cpu.nr_periods, s.cpu.nr_throttled, s.cpu.throttled_time) == (9, 3, 70_000)
    assert (s.memory.usage.usage, s.memory.usage.max_usage, s.memory.usage.limit) == (4096, 8192, 1 << 30)
    assert s.memory.usage.failcnt == 2  # memory.events max
    assert s.memory.swap.limit == 2**64 - 1  # "max"
    assert (s.memory.rss, s.memory.cache) == (100, 200)
    assert (s.memory_events.oom, s.memory_events.oom_kill, s.memory_events.high) == (3, 4, 1)
    assert (s.pids.current, s.pids.limit) == (3, 10)
    assert s.io.devices[0].rbytes == 10 and s.io.devices[0].wios == 2
    assert [(h.page_size, h.limit, h.failcnt) for h in s.hugetlb] == [("2MB", 2**64 - 1, 5)]
    assert s.cpu_pressure is not None and s.cpu_pressure.some.total == 42 and s.cpu_pressure.full is not None
    assert s.memory_pressure is not None and s.io_pressure is None
    assert mgr.oom_events().oom_kill == 4


def test_v2_pids_are_recursive(v2root: Path) -> None:
    leaf = v2root / PARENT / "t" / "c1"
    (leaf / "cgroup.procs").write_text("30\n10\n")
    _fill(leaf / "sub", {"cgroup.procs": "20\n10\n"})
    mgr = V2Manager(str(v2root))
    mgr.load("/t/c1")
    assert mgr.pids() == [10, 20, 30]
    with pytest.raises(FailedPrecondition, match="3 processes"):
        mgr.delete()
    with pytest.raises(NotFound):
        V2Manager(str(v2root)).load("/t/missing")


def test_unbound_manager_refuses() -> None:
    for mgr in (V2Manager("/nonexistent"), V1Manager({"memory": "/nonexistent"})):
        with pytest.raises(FailedPrecondition, match="not bound"):
            mgr.pids()
        with pytest.raises(InvalidArgument):
            mgr.create("../escape")


# ----- v1 ----------------------------------------------------------------------------------------

V1_FILES = {
    "cpu": {"cpu.shares": "1024\n", "cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n",
            "cpu.stat": "nr_periods 5\nnr_throttled 2\nthrottled_time 300\n"},
    "cpuacct": {"cpuacct.usage": "5000000\n", "cpuacct.stat": "user 3\nsystem 1\n",
                "cpuacct.usage_percpu": "2000000 3000000 \n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {"memory.limit_in_bytes": "9223372036854771712\n", "memory.soft_limit_in_bytes": "0\n",
               "memory.usage_in_bytes": "4096\n", "memory.max_usage_in_bytes": "8192\n", "memory.failcnt": "1\n",
               "memory.stat": "cache 10\nrss 20\ntotal_rss 30\n", "memory.swappiness": "60\n",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"},
    "pids": {"pids.max": "max\n", "pids.current": "1\n"},
    "blkio": {"blkio.weight": "500\n", "blkio.throttle.read_bps_device": "",
              "blkio.io_serviced_recursive": "8:0 Read 2\n8:0 Write 1\nTotal 3\n",
              "blkio.io_service_bytes_recursive": "8:0 Read 8192\n8:0 Write 4096\nTotal 12288\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 999\n"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "0\n", "hugetlb.2MB.usage_in_bytes": "0\n",
                "hugetlb.2MB.max_usage_in_bytes": "0\n", "hugetlb.2MB.failcnt": "7\n",
                "hugetlb.1GB.limit_in_bytes": "0\n", "hugetlb.1GB.usage_in_bytes": "0\n",
                "hugetlb.1GB.max_usage_in_bytes": "0\n", "hugetlb.1GB.failcnt": "0\n"},
    "freezer": {"freezer.state": "THAWED\n"},
}


@pytest.fixture
def v1mounts(tmp_path: Path) -> dict[str, str]:
    """One fake hierarchy per controller; dockyard/t/c1 pre-made with the kernel's files."""
    mounts = {}
    for ctrl, files in V1_FILES.items():
        mount = tmp_path / ctrl
        mounts[ctrl] = str(mount)
        _fill(mount, {"cgroup.procs": "", "cpuset.cpus": "0-3\n", "cpuset.mems": "0\n"} if ctrl == "cpuset"
              else {"cgroup.procs": ""})
        for d in (mount / PARENT, mount / PARENT / "t", mount / PARENT / "t" / "c1"):
            _fill(d, {"cgroup.procs": "", **files})
    return mounts


def test_v1_create_copies_cpuset_down_the_path(v1mounts: dict[str, str]) -> None:
    mgr = V1Manager(v1mounts)
    mgr.create("/t/c1")
    for d in (PARENT, f"{PARENT}/t", f"{PARENT}/t/c1"):
        base = Path(v1mounts["cpuset"]) / d
        assert (_read(base / "cpuset.cpus"), _read(base / "cpuset.mems")) == ("0-3", "0")
    assert _read(Path(v1mounts["cpuset"]) / "cpuset.cpus") == "0-3"  # the root only read


def test_v1_apply_writes_each_controller(v1mounts: dict[str, str]) -> None:
    mgr = V1Manager(v1mounts)
    mgr.create("/t/c1", Resources.from_oci({
        "cpu": {"shares": 512, "quota": 30000, "period": 60000},
        "memory": {"limit": 64 << 20, "swap": 128 << 20, "swappiness": 0, "disableOOMKiller": True},
        "pids": {"limit": -1}, "blockIO": {"weight": 200, "throttleReadBpsDevice": [
            {"major": 8, "minor": 0, "rate": 500}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
    }))
    leaf = {c: Path(m) / PARENT / "t" / "c1" for c, m in v1mounts.items()}
    assert (_read(leaf["cpu"] / "cpu.shares"), _read(leaf["cpu"] / "cpu.cfs_quota_us"),
            _read(leaf["cpu"] / "cpu.cfs_period_us")) == ("512", "30000", "60000")
    # no memory.memsw.* here (swap accounting off): the swap limit is skipped, the limit still set
    assert _read(leaf["memory"] / "memory.limit_in_bytes") == str(64 << 20)
    assert _read(leaf["memory"] / "memory.swappiness") == "0"
    assert _read(leaf["memory"] / "memory.oom_control") == "1"
    assert _read(leaf["pids"] / "pids.max") == "max"
    assert _read(leaf["blkio"] / "blkio.weight") == "200"
    assert _read(leaf["blkio"] / "blkio.throttle.read_bps_device") == "8:0 500"
    assert _read(leaf["hugetlb"] / "hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        mgr.apply(Resources(unified={"memory.high": "1"}))


def test_v1_missing_controller_is_failed_precondition(v1mounts: dict[str, str]) -> None:
    mounts = {c: m for c, m in v1mounts.items() if c != "pids"}
    mgr = V1Manager(mounts)
    with pytest.raises(FailedPrecondition, match="pids is not mounted"):
        mgr.create("/t/c1", Resources(pids_limit=3))
    mgr.create("/t/c1")
    assert mgr.stats().pids.limit == 0


def test_v1_stats_from_the_files(v1mounts: dict[str, str]) -> None:
    mgr = V1Manager(v1mounts)
    mgr.load("/t/c1")
    s = mgr.stats()
    tick = 1_000_000_000 // __import__("os").sysconf("SC_CLK_TCK")
    assert (s.cpu.usage_total, s.cpu.usage_user, s.cpu.usage_kernel) == (5_000_000, 3 * tick, tick)
    assert s.cpu.per_cpu == [2_000_000, 3_000_000]
    assert (s.cpu.nr_periods, s.cpu.nr_throttled, s.cpu.throttled_time) == (5, 2, 300)
    assert (s.memory.usage.usage, s.memory.usage.max_usage, s.memory.usage.failcnt) == (4096, 8192, 1)
    assert (s.memory.cache, s.memory.rss, s.memory.stat["total_rss"]) == (10, 20, 30)
    assert s.memory.swap.limit == 0  # no memsw files
    assert (s.memory_events.oom_kill, s.memory_events.oom, s.memory_events.under_oom) == (3, 3, False)
    assert (s.pids.current, s.pids.limit) == (1, 0)
    # legacy CFQ files win over the throttle layer when both exist
    assert [(e.op, e.value) for e in s.io.serviced] == [("Read", 2), ("Write", 1)]
    assert s.io.devices[0].rbytes == 8192 and s.io.devices[0].wios == 1
    assert [(h.page_size, h.failcnt) for h in s.hugetlb] == [("1GB", 0), ("2MB", 7)]
    assert s.cpu_pressure is None


def test_v1_pids_union_across_hierarchies(v1mounts: dict[str, str]) -> None:
    (Path(v1mounts["memory"]) / PARENT / "t" / "c1" / "cgroup.procs").write_text("5\n")
    (Path(v1mounts["pids"]) / PARENT / "t" / "c1" / "cgroup.procs").write_text("7\n5\n")
    mgr = V1Manager(v1mounts)
    mgr.load("/t/c1")
    assert mgr.pids() == [5, 7]
