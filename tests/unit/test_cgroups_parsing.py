"""Pure logic of the cgroup drivers: paths, OCI resources, file formats, detection, Metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_common.cgroups import check_inside, host_version, normalize_path, v1_mounts, v2_mountpoint
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.mountinfo import parse_mountinfo
from shim.cgroups.base import (
    UNLIMITED,
    BlkioEntry,
    DeviceRule,
    HugepageLimit,
    HugetlbStats,
    IoDeviceStat,
    MemoryEntry,
    MemoryEvents,
    Resources,
    Stats,
    ThrottleDevice,
    parse_flat,
    parse_pressure,
    write_file,
)
from shim.cgroups.metrics import to_metrics, to_v1_metrics, to_v2_metrics
from shim.cgroups.v1 import fold_blkio, parse_blkio
from shim.cgroups.v2 import blkio_to_io_weight, parse_io_stat, shares_to_weight

# ----- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "want"), [
    ("/default/web", "default/web"),
    ("default/web", "default/web"),
    ("//default///web/", "default/web"),
    ("/./default/./web", "default/web"),
    ("/x", "x"),
])
def test_normalize_path_places_under_parent(given: str, want: str) -> None:
    assert normalize_path(given) == want


@pytest.mark.parametrize("bad", ["", "/", "///", ".", "..", "/..", "/../process_api", "a/../../b", "a/..",
                                 "/default/../../x", "system.slice:docker:abc", "a\0b", "a\nb"])
def test_normalize_path_refuses_escapes_and_foreign_syntax(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize_path(bad)


def test_check_inside_follows_symlinks(tmp_path: Path) -> None:
    parent = tmp_path / "dockyard"
    parent.mkdir()
    (tmp_path / "host").mkdir()
    (parent / "link").symlink_to(tmp_path / "host")
    assert check_inside(str(parent / "a" / "b"), str(parent)).endswith("/dockyard/a/b")
    assert check_inside(str(parent), str(parent))
    with pytest.raises(InvalidArgument):
        check_inside(str(parent / "link" / "memory.max"), str(parent))
    with pytest.raises(InvalidArgument):
        check_inside(str(tmp_path / "dockyardx" / "f"), str(parent))


def test_write_file_guards_and_maps_errors(tmp_path: Path) -> None:
    parent = tmp_path / "dockyard"
    parent.mkdir()
    (parent / "pids.max").write_text("max\n")
    write_file(str(parent / "pids.max"), 5, str(parent))
    assert (parent / "pids.max").read_text() == "5"
    with pytest.raises(FailedPrecondition, match="does not exist"):
        write_file(str(parent / "memory.max"), 1, str(parent))
    assert not (parent / "memory.max").exists()  # never created
    (tmp_path / "outside").write_text("keep")
    with pytest.raises(InvalidArgument):
        write_file(str(parent / ".." / "outside"), "x", str(parent))
    assert (tmp_path / "outside").read_text() == "keep"


# ----- resources -------------------------------------------------------------------------------


def test_resources_from_a_full_oci_object() -> None:
    r = Resources.from_oci({
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rw"}],
        "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 2 << 30, "kernel": 1 << 20,
                   "swappiness": 10, "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0",
                "realtimeRuntime": 0},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "unified": {"memory.high": "900000000"},
        "network": {"classID": 1},
    })
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.cpus, r.mems) == (1024, 50000, 100000, "0-1", "0")
    assert (r.memory_limit, r.memory_reservation, r.memory_swap) == (1 << 30, 1 << 29, 2 << 30)
    assert (r.memory_swappiness, r.disable_oom_killer, r.pids_limit, r.blkio_weight) == (10, False, 100, 500)
    assert r.throttle_read_bps == (ThrottleDevice(8, 0, 1048576),)
    assert r.hugepage_limits == (HugepageLimit("2MB", 4 << 20),)
    assert [d.v1_line() for d in r.devices] == ["a", "c 1:3 rwm", "c 136:* rw"]
    assert r.devices[0] == DeviceRule(allow=False)
    assert r.unified == {"memory.high": "900000000"}


def test_resources_empty_and_none() -> None:
    assert Resources.from_oci(None) == Resources()
    assert Resources.from_oci({}) == Resources()


@pytest.mark.parametrize(("res", "match"), [
    ([], "must be an object"),
    ({"cpu": 3}, "cpu must be an object"),
    ({"memory": {"limit": "1G"}}, "memory.limit must be an integer"),
    ({"memory": {"limit": True}}, "memory.limit must be an integer"),
    ({"memory": {"limit": 100 << 20, "swap": 50 << 20}}, "must not be below"),
    ({"memory": {"swappiness": 101}}, "swappiness"),
    ({"memory": {"disableOOMKiller": 1}}, "boolean"),
    ({"cpu": {"shares": 1}}, "minimum of 2"),
    ({"cpu": {"period": 100}}, "outside"),
    ({"cpu": {"quota": 10}}, "minimum of 1000"),
    ({"cpu": {"cpus": "0;rm"}}, "cpu list"),
    ({"blockIO": {"weight": 5}}, "10..1000"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8}]}}, "need major, minor and rate"),
    ({"devices": [{"type": "c"}]}, "need allow"),
    ({"devices": [{"allow": True, "type": "x"}]}, "device type"),
    ({"devices": [{"allow": True, "access": "rwx"}]}, "access"),
    ({"devices": {}}, "must be an array"),
    ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}, "pageSize"),
    ({"unified": {"../memory.max": "1"}}, "not a cgroup file name"),
    ({"unified": {"cgroup.procs": "1"}}, "core files"),
    ({"unified": {"memory.max": 1}}, "strings to strings"),
])
def test_resources_refuse_bad_values(res: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        Resources.from_oci(res)  # type: ignore[arg-type]


def test_unlimited_values_are_valid() -> None:
    r = Resources.from_oci({"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}})
    assert (r.memory_limit, r.memory_swap, r.cpu_quota, r.pids_limit) == (-1, -1, -1, -1)


def test_v2_conversions() -> None:
    assert (shares_to_weight(2), shares_to_weight(1024), shares_to_weight(262144)) == (1, 39, 10000)
    assert (blkio_to_io_weight(10), blkio_to_io_weight(500), blkio_to_io_weight(1000)) == (1, 4950, 10000)


# ----- file formats ----------------------------------------------------------------------------


def test_parse_flat_and_pressure() -> None:
    assert parse_flat("cache 10\nrss 20\nbad line here\nx y\n\n") == {"cache": 10, "rss": 20}
    assert parse_flat(None) == {}
    p = parse_pressure("some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n")
    assert p is not None and (p.some.avg10, p.some.avg60, p.some.total) == (1.5, 0.25, 1234)
    assert p.full is not None and p.full.total == 99
    only_some = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n")
    assert only_some is not None and only_some.full is None and only_some.some.total == 7
    assert parse_pressure("") is None and parse_pressure(None) is None


def test_parse_blkio_and_fold() -> None:
    text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 100\n8:0 Discard 0\n8:16 Read 1\nTotal 12289\n"
    entries = parse_blkio(text)
    assert entries[0] == BlkioEntry(8, 0, "Read", 4096)
    assert len(entries) == 5
    ios = parse_blkio("8:0 Read 2\n8:0 Write 3\nTotal 5\n")
    folded = fold_blkio(entries, ios)
    assert folded == [IoDeviceStat(8, 0, rbytes=4096, wbytes=8192, rios=2, wios=3), IoDeviceStat(8, 16, rbytes=1)]
    assert parse_blkio(None) == []


def test_parse_io_stat() -> None:
    text = "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n\n253:1 rbytes=10 wbytes=0 rios=1 wios=0\n"
    assert parse_io_stat(text) == [IoDeviceStat(8, 0, 1, 2, 3, 4, 5, 6), IoDeviceStat(253, 1, 10, 0, 1, 0)]


# ----- detect ----------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/my\\040pids rw - cgroup cgroup rw,pids,clone_children,release_agent=/x
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
99 31 0:32 / /mnt/memory-again rw - cgroup cgroup rw,memory
"""


def test_detect_v1_mounts_and_v2(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert parse_mountinfo(MOUNTINFO)[4] == ("/sys/fs/cgroup/my pids", "cgroup",
                                             "rw,pids,clone_children,release_agent=/x")
    assert v1_mounts(str(info)) == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/my pids", "name=systemd": "/sys/fs/cgroup/systemd"}
    assert v2_mountpoint(str(info)) == "/sys/fs/cgroup/unified"
    root = tmp_path / "cg"
    root.mkdir()
    assert host_version(str(root)) == 1
    (root / "cgroup.controllers").write_text("cpu memory\n")
    assert host_version(str(root)) == 2


def test_detect_this_host() -> None:
    mounts = v1_mounts()
    if host_version() == 2:
        assert v2_mountpoint() is not None
    else:
        assert all(os.path.isdir(m) for m in mounts.values())


# ----- metrics ---------------------------------------------------------------------------------


def _v1_stats() -> Stats:
    s = Stats(version=1)
    s.cpu.usage_total, s.cpu.usage_user, s.cpu.usage_kernel, s.cpu.per_cpu = 3000, 2000, 1000, [1000, 2000]
    s.cpu.nr_periods, s.cpu.nr_throttled, s.cpu.throttled_time = 10, 4, 5000
    s.memory.usage = MemoryEntry(usage=100, max_usage=200, limit=9223372036854771712, failcnt=3)
    s.memory.swap = MemoryEntry(usage=110, max_usage=210, limit=UNLIMITED, failcnt=1)
    s.memory.stat = {"cache": 5, "rss": 6, "pgpgin": 7, "total_pgpgout": 8, "hierarchical_memsw_limit": 9,
                     "total_rss": 11, "unknown_key": 12, "pgmajfault": 13}
    s.memory_events = MemoryEvents(oom=2, oom_kill=2, under_oom=True)
    s.pids.current, s.pids.limit = 3, 0
    s.io.service_bytes = [BlkioEntry(8, 0, "Read", 4096)]
    s.io.serviced = [BlkioEntry(8, 0, "Read", 1)]
    s.hugetlb = [HugetlbStats("2MB", usage=1, max_usage=2, limit=3, failcnt=4)]
    return s


def test_to_v1_metrics() -> None:
    m = to_v1_metrics(_v1_stats())
    assert list(m.cpu.usage.per_cpu) == [1000, 2000]
    assert (m.cpu.usage.total, m.cpu.usage.user, m.cpu.usage.kernel) == (3000, 2000, 1000)
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods, m.cpu.throttling.throttled_time) == (
        10, 4, 5000)
    assert (m.memory.cache, m.memory.rss, m.memory.pg_pg_in, m.memory.total_pg_pg_out) == (5, 6, 7, 8)
    assert (m.memory.hierarchical_swap_limit, m.memory.total_rss, m.memory.pg_maj_fault) == (9, 11, 13)
    assert (m.memory.usage.usage, m.memory.usage.max, m.memory.usage.failcnt) == (100, 200, 3)
    assert m.memory.swap.limit == UNLIMITED
    assert (m.memory_oom_control.oom_kill, m.memory_oom_control.under_oom) == (2, 1)
    assert m.blkio.io_service_bytes_recursive[0].op == "Read"
    assert m.blkio.io_serviced_recursive[0].value == 1
    assert (m.hugetlb[0].pagesize, m.hugetlb[0].max, m.hugetlb[0].failcnt) == ("2MB", 2, 4)
    assert to_metrics(_v1_stats()).DESCRIPTOR.full_name == "io.containerd.cgroups.v1.Metrics"
    m.SerializeToString()


def test_to_v2_metrics() -> None:
    s = Stats(version=2)
    s.cpu.usage_total, s.cpu.usage_user, s.cpu.usage_kernel, s.cpu.throttled_time = 5_000_000, 3_000_000, 2_000, 7000
    s.memory.usage = MemoryEntry(usage=100, limit=UNLIMITED)
    s.memory.swap = MemoryEntry(usage=1, limit=2)
    s.memory.stat = {"anon": 1, "file": 2, "workingset_refault_anon": 3, "workingset_refault_file": 4,
                     "pgfault": 5, "slab": 6}
    s.memory_events = MemoryEvents(low=1, high=2, max=3, oom=4, oom_kill=5)
    s.io.devices = [IoDeviceStat(8, 0, 1, 2, 3, 4)]
    s.hugetlb = [HugetlbStats("1GB", usage=7, limit=8)]
    s.pids.current, s.pids.limit = 2, 9
    m = to_v2_metrics(s)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec, m.cpu.throttled_usec) == (5000, 3000, 2, 7)
    assert (m.memory.anon, m.memory.file, m.memory.workingset_refault, m.memory.pgfault, m.memory.slab) == (
        1, 2, 7, 5, 6)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.swap_usage, m.memory.swap_limit) == (100, UNLIMITED, 1, 2)
    assert (m.memory_events.max, m.memory_events.oom, m.memory_events.oom_kill) == (3, 4, 5)
    assert (m.io.usage[0].major, m.io.usage[0].wios) == (8, 4)
    assert (m.hugetlb[0].pagesize, m.hugetlb[0].current, m.hugetlb[0].max) == ("1GB", 7, 8)
    assert (m.pids.current, m.pids.limit) == (2, 9)
    assert to_metrics(s).DESCRIPTOR.full_name == "io.containerd.cgroups.v2.Metrics"
