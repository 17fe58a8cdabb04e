"""The cgroup drivers against the real kernel, as root.

v1 runs on the host's own hierarchies (when the host is v1); v2 runs on a private cgroup2 mount
in a temp dir, which shows the same unified tree. Every cgroup made here lives under
``dockyard/dytest-<random>/`` and is removed again; every child is killed by pid; the host's own
cgroups (``process_api`` and the roots) are compared before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from dockyard_common.cgroups import PARENT, host_version, v1_mounts
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from shim.cgroups import Resources, Stats, V1Manager, V2Manager
from shim.cgroups.metrics import to_v1_metrics, to_v2_metrics
from tests.cgroupfs import unmount_private
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")]

CONFIG_SUFFIXES = ("limit_in_bytes", ".max", "swappiness", "oom_control", "shares", "cfs_quota_us",
                   "cfs_period_us", ".cpus", ".mems", "freezer.state", "subtree_control", "devices.list")


# ----- host protection -------------------------------------------------------------------------


def _host_config() -> dict[str, tuple[str, float]]:
    """Contents and mtimes of the configuration files of every cgroup that is not ours:
    each hierarchy's root, every ``process_api`` cgroup and this process's own cgroups."""
    dirs: set[str] = set()
    mounts = v1_mounts()
    for mount in set(mounts.values()) | {"/sys/fs/cgroup/unified"}:
        if os.path.isdir(mount):
            dirs.add(mount)
            if os.path.isdir(os.path.join(mount, "process_api")):
                dirs.add(os.path.join(mount, "process_api"))
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.strip().split(":", 2)
            for c in ctrls.split(","):
                if c in mounts and path != "/":
                    dirs.add(mounts[c] + path)
    snap: dict[str, tuple[str, float]] = {}
    for d in dirs:
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isfile(p) and name.endswith(CONFIG_SUFFIXES):
                try:
                    with open(p) as fh:
                        text = fh.read()
                    if name.endswith("oom_control"):  # the counters move; the setting must not
                        text = text.splitlines()[0]
                    snap[p] = (text, os.stat(p).st_mtime)
                except OSError:
                    continue
    return snap


@pytest.fixture(scope="module", autouse=True)
def host_cgroups_untouched() -> Iterator[None]:
    before = _host_config()
    yield
    after = _host_config()
    changed = sorted(p for p in before if before[p] != after.get(p))
    assert not changed, f"host cgroup files changed: {changed}"


# ----- helpers ---------------------------------------------------------------------------------


class Children:
    """Child processes that wait on stdin until released, so a test can place them first."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, code: str) -> subprocess.Popen[str]:
        gated = "import sys\nsys.stdin.readline()\n" + code
        p = subprocess.Popen([sys.executable, "-c", gated], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    @staticmethod
    def release(p: subprocess.Popen[str]) -> None:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()

    def cleanup(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=10)


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def _cleanup_tree(top: str, prefix: str, made_top: bool) -> None:
    """Remove whatever a test left under top/prefix (leaf first, members killed by pid)."""
    root = os.path.join(top, prefix)
    if os.path.isdir(root):
        for here, _dirs, _files in os.walk(root, topdown=False):
            # thaw first: a frozen v1 task acts on SIGKILL only once thawed
            for state, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if os.path.exists(os.path.join(here, state)):
                    with open(os.path.join(here, state), "w") as f:
                        f.write(thawed)
            for _ in range(500):
                with open(os.path.join(here, "cgroup.procs")) as f:
                    pids = [int(x) for x in f.read().split()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
            os.rmdir(here)
    if made_top:
        with contextlib.suppress(OSError):  # another user of dockyard may have appeared meanwhile
            os.rmdir(top)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# ----- cgroup v1 -------------------------------------------------------------------------------

v1_only = pytest.mark.skipif(host_version() != 1 or "memory" not in v1_mounts(), reason="host is not cgroup v1")


@pytest.fixture
def v1() -> Iterator[Callable[..., V1Manager]]:
    """A factory of V1Managers bound to dockyard/dytest-<random>/<name>."""
    mounts = v1_mounts()
    prefix = f"dytest-{uuid.uuid4().hex[:8]}"
    tops = {m: os.path.join(m, PARENT) for m in set(V1Manager(mounts)._mounts.values())}
    made_top = {m: not os.path.isdir(t) for m, t in tops.items()}

    def make(name: str = "c", resources: Resources | None = None) -> V1Manager:
        mgr = V1Manager(mounts)
        mgr.create(f"/{prefix}/{name}", resources)
        return mgr

    try:
        yield make
    finally:
        for m, top in tops.items():
            _cleanup_tree(top, prefix, made_top[m])


def _v1_leaf(mgr: V1Manager, controller: str) -> str:
    return mgr._dir(controller)


@v1_only
def test_v1_create_add_pids_delete(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("life")
    leaves = [mgr._leaf(m) for m in mgr._hierarchies()]
    assert all(os.path.isdir(d) for d in leaves)
    # cpuset was copied from the parent, or tasks could not join
    assert _read(os.path.join(_v1_leaf(mgr, "cpuset"), "cpuset.cpus"))
    p = children.spawn("import time\ntime.sleep(60)")
    mgr.add_process(p.pid)
    assert mgr.pids() == [p.pid]
    for d in leaves:
        assert _read(os.path.join(d, "cgroup.procs")) == str(p.pid)

    other = V1Manager()
    other.load(mgr.path)
    assert other.pids() == [p.pid]
    with pytest.raises(NotFound):
        V1Manager().load(mgr.path + "-missing")

    with pytest.raises(FailedPrecondition):
        mgr.delete()
    assert all(os.path.isdir(d) for d in leaves)
    mgr.delete(force=True)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in leaves)
    assert not mgr.exists()


@v1_only
def test_v1_pids_lists_the_tgid_of_a_member_thread(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("thread")
    p = children.spawn("import threading, time\nt = threading.Thread(target=time.sleep, args=(60,), daemon=True)"
                       "\nt.start()\nprint(t.native_id, flush=True)\ntime.sleep(60)")
    children.release(p)
    assert p.stdout is not None
    tid = int(p.stdout.readline())
    assert tid != p.pid
    with open(os.path.join(_v1_leaf(mgr, "pids"), "tasks"), "w") as f:  # only the thread moves
        f.write(str(tid))
    assert mgr.pids() == [p.pid]
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(NotFound):
        mgr.add_process(gone.pid)  # reaped: ESRCH
    mgr.delete(force=True)  # signalling the tgid ends the whole process
    assert p.wait(timeout=10) == -signal.SIGKILL
    with pytest.raises(NotFound):
        V1Manager().load(mgr.path)


@v1_only
def test_v1_refuses_escaping_paths(v1: Callable[..., V1Manager]) -> None:
    mounts = v1_mounts()
    before = {m: sorted(os.listdir(m)) for m in set(mounts.values())}
    for bad in ("/../process_api/x", "../../x", "/a/../../b", "", "/", "a/..", "machine.slice:docker:x"):
        with pytest.raises(InvalidArgument):
            V1Manager(mounts).create(bad)
    assert {m: sorted(os.listdir(m)) for m in set(mounts.values())} == before


@v1_only
def test_v1_memory_limit_oom_kills_and_notifies(v1: Callable[..., V1Manager], children: Children) -> None:
    limit = 32 << 20
    mgr = v1("oom", Resources.from_oci({"memory": {"limit": limit, "swap": limit}}))
    assert int(_read(os.path.join(_v1_leaf(mgr, "memory"), "memory.limit_in_bytes"))) == limit
    watch = mgr.oom_watch()
    try:
        assert not _readable(watch.fileno(), 0)
        p = children.spawn("data = b'x' * (256 << 20)\nprint('survived', flush=True)")
        mgr.add_process(p.pid)
        children.release(p)
        assert p.wait(timeout=30) == -signal.SIGKILL
        assert _readable(watch.fileno(), 5), "the OOM eventfd did not fire"
        watch.consume()
        ev = mgr.oom_events()
        assert ev.oom_kill >= 1
        s = mgr.stats()
        assert s.memory_events.oom_kill == ev.oom_kill
        assert s.memory.usage.max_usage == limit
        assert s.memory.usage.max_usage <= limit
        assert to_v1_metrics(s).memory_oom_control.oom_kill == ev.oom_kill
        mgr.delete()
        # removal signals the eventfd once more; consume() does not count it as an OOM
        assert _readable(watch.fileno(), 5)
        assert watch.consume() == 0
    finally:
        watch.close()


@v1_only
async def test_v1_oom_watch_wakes_an_asyncio_loop(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("oomloop", Resources(memory_limit=24 << 20, memory_swap=24 << 20))
    watch = mgr.oom_watch()
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[int] = loop.create_future()

    def on_oom() -> None:
        n = watch.consume()
        if n and not fired.done():
            fired.set_result(n)

    loop.add_reader(watch.fileno(), on_oom)
    try:
        p = children.spawn("data = b'x' * (200 << 20)")
        mgr.add_process(p.pid)
        children.release(p)
        assert await asyncio.wait_for(fired, 30) >= 1
        assert p.wait(timeout=30) == -signal.SIGKILL
        assert mgr.oom_events().oom_kill >= 1
    finally:
        loop.remove_reader(watch.fileno())
        watch.close()


@v1_only
def test_v1_pids_limit_stops_forks(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("pids", Resources.from_oci({"pids": {"limit": 4}}))
    code = """
import os, time
ok = 0
for _ in range(10):
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    ok += 1
print(ok, flush=True)
time.sleep(60)
"""
    p = children.spawn(code)
    mgr.add_process(p.pid)
    children.release(p)
    assert p.stdout is not None
    assert int(p.stdout.readline()) == 3  # the parent itself is the fourth
    s = mgr.stats()
    assert (s.pids.current, s.pids.limit) == (4, 4)
    assert len(mgr.pids()) == 4
    mgr.delete(force=True)  # grandchildren too, by pid
    assert p.wait(timeout=10) == -signal.SIGKILL


@v1_only
def test_v1_cpu_quota_bounds_usage(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("cpu", Resources.from_oci({"cpu": {"quota": 20000, "period": 100000, "shares": 256}}))
    leaf = _v1_leaf(mgr, "cpu")
    assert (_read(f"{leaf}/cpu.cfs_quota_us"), _read(f"{leaf}/cpu.cfs_period_us")) == ("20000", "100000")
    assert _read(f"{leaf}/cpu.shares") == "256"
    p = children.spawn("while True: pass")
    mgr.add_process(p.pid)
    children.release(p)
    # From the first period the quota cut short on: the loop runs, and at its bound.
    wait_until(lambda: mgr.stats().cpu.nr_throttled > 0, timeout=60, what="the quota to throttle the loop")
    t0, s0 = time.monotonic(), mgr.stats()

    def throttled_8_more() -> Stats | None:
        s = mgr.stats()
        return s if s.cpu.nr_throttled >= s0.cpu.nr_throttled + 8 else None

    # Over 8 more throttled periods (0.7 s at least): however little CPU a loaded machine gives
    # the loop, it never gets more than its quota per period.
    s1 = wait_until(throttled_8_more, timeout=60, what="8 more throttled periods")
    t1 = time.monotonic()
    share = (s1.cpu.usage_total - s0.cpu.usage_total) / ((t1 - t0) * 1e9)
    assert 0 < share < 0.35, f"a 20% quota let the loop use {share:.0%} of a CPU"
    assert s1.cpu.throttled_time > 0
    assert s1.cpu.nr_periods >= s1.cpu.nr_throttled
    assert sum(s1.cpu.per_cpu) == pytest.approx(s1.cpu.usage_total, rel=0.05)
    m = to_v1_metrics(s1)
    assert m.cpu.throttling.throttled_periods == s1.cpu.nr_throttled
    # update: lift the quota
    mgr.apply(Resources(cpu_quota=-1))
    assert _read(f"{leaf}/cpu.cfs_quota_us") == "-1"
    mgr.delete(force=True)


@v1_only
def test_v1_freeze_and_thaw(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("freeze")
    p = children.spawn("print('looping', flush=True)\nwhile True: pass")
    mgr.add_process(p.pid)
    children.release(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "looping"
    mgr.freeze()
    assert mgr.frozen()
    assert _read(os.path.join(_v1_leaf(mgr, "freezer"), "freezer.state")) == "FROZEN"
    with open(f"/proc/{p.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] in ("D", "T")
    u0 = mgr.stats().cpu.usage_total
    time.sleep(0.3)  # a window in which nothing may happen: no event says "still frozen"
    assert mgr.stats().cpu.usage_total - u0 < 5_000_000  # frozen: no CPU
    mgr.thaw()
    assert not mgr.frozen()
    wait_until(lambda: mgr.stats().cpu.usage_total - u0 > 20_000_000, what="the thawed loop to use CPU again")
    # kill_all on a frozen cgroup: SIGKILL still ends the processes
    mgr.freeze()
    mgr.kill_all(signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL
    mgr.delete()


@v1_only
def test_v1_kill_all_signals_every_process(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("kill")
    procs = [children.spawn("import time\ntime.sleep(60)") for _ in range(3)]
    for p in procs:
        mgr.add_process(p.pid)
    assert mgr.pids() == sorted(p.pid for p in procs)
    mgr.kill_all(signal.SIGTERM)
    assert [p.wait(timeout=10) for p in procs] == [-signal.SIGTERM] * 3
    assert not mgr.frozen()
    mgr.delete()


@v1_only
def test_v1_memory_limit_and_swap_update_order(v1: Callable[..., V1Manager]) -> None:
    mgr = v1("order", Resources(memory_limit=64 << 20, memory_swap=128 << 20, memory_reservation=32 << 20))
    mem = _v1_leaf(mgr, "memory")
    memsw = os.path.exists(f"{mem}/memory.memsw.limit_in_bytes")

    def limits() -> tuple[int, int | None]:
        sw = int(_read(f"{mem}/memory.memsw.limit_in_bytes")) if memsw else None
        return int(_read(f"{mem}/memory.limit_in_bytes")), sw

    assert limits() == (64 << 20, (128 << 20) if memsw else None)
    assert int(_read(f"{mem}/memory.soft_limit_in_bytes")) == 32 << 20
    # growing past the current memsw needs memsw first; shrinking below the limit needs limit first
    mgr.apply(Resources(memory_limit=512 << 20, memory_swap=1024 << 20))
    assert limits() == (512 << 20, (1024 << 20) if memsw else None)
    mgr.apply(Resources(memory_limit=16 << 20, memory_swap=24 << 20))
    assert limits() == (16 << 20, (24 << 20) if memsw else None)
    mgr.apply(Resources(memory_limit=-1))
    lim, sw = limits()
    assert lim > 1 << 60 and (sw is None or sw > 1 << 60)
    s = mgr.stats()
    assert s.memory.usage.limit == lim
    with pytest.raises(InvalidArgument):
        mgr.apply(Resources(memory_limit=64 << 20, memory_swap=32 << 20))


@v1_only
def test_v1_devices_rules_enforced(v1: Callable[..., V1Manager], children: Children) -> None:
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    mgr = v1("dev", Resources.from_oci({"devices": rules}))
    assert _read(os.path.join(_v1_leaf(mgr, "devices"), "devices.list")) == "c 1:3 rwm"
    code = """
open('/dev/null', 'w').write('x')
try:
    open('/dev/zero', 'rb').read(1)
    print('zero-open')
except PermissionError:
    print('zero-denied')
"""
    p = children.spawn(code)
    mgr.add_process(p.pid)
    children.release(p)
    out, err = p.communicate(timeout=20)
    assert out.strip() == "zero-denied", err


@v1_only
def test_v1_cpuset_and_blkio_weight(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("cpuset", Resources(cpus="0", mems="0"))
    assert _read(os.path.join(_v1_leaf(mgr, "cpuset"), "cpuset.cpus")) == "0"
    p = children.spawn("import os\nprint(sorted(os.sched_getaffinity(0)), flush=True)")
    mgr.add_process(p.pid)
    children.release(p)
    out, _ = p.communicate(timeout=20)
    assert out.strip() == "[0]"
    blk = _v1_leaf(mgr, "blkio")
    weight_file = next((f for f in ("blkio.weight", "blkio.bfq.weight") if os.path.exists(f"{blk}/{f}")), None)
    if weight_file is None:
        pytest.skip("no blkio weight file on this kernel")
    mgr.apply(Resources(blkio_weight=300))
    assert _read(f"{blk}/{weight_file}").split()[-1] == "300"


@v1_only
def test_v1_stats_match_the_files(v1: Callable[..., V1Manager], children: Children) -> None:
    mgr = v1("stats", Resources(memory_limit=128 << 20, pids_limit=50))
    # 0.1 s of its own CPU: cpuacct.stat counts user and system time in ticks (10 ms), and the
    # allocation alone (~3 ms) can end between two ticks, leaving both at 0.
    p = children.spawn("data = b'x' * (8 << 20)\nimport time\nt = time.process_time()\n"
                       "while time.process_time() - t < 0.1: pass\nprint('ready', flush=True)\ntime.sleep(60)")
    mgr.add_process(p.pid)
    children.release(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    s = mgr.stats()
    mem, pids = _v1_leaf(mgr, "memory"), _v1_leaf(mgr, "pids")
    assert s.version == 1
    assert s.memory.usage.limit == int(_read(f"{mem}/memory.limit_in_bytes")) == 128 << 20
    assert s.memory.usage.usage == pytest.approx(int(_read(f"{mem}/memory.usage_in_bytes")), rel=0.2)
    assert s.memory.usage.usage >= 8 << 20
    assert s.memory.rss >= 8 << 20 and s.memory.rss == s.memory.stat["rss"]
    assert s.memory.stat["hierarchical_memory_limit"] == 128 << 20
    assert (s.pids.current, s.pids.limit) == (int(_read(f"{pids}/pids.current")), 50)
    assert s.cpu.usage_total <= int(_read(os.path.join(_v1_leaf(mgr, "cpuacct"), "cpuacct.usage")))
    assert s.cpu.usage_total > 0 and s.cpu.usage_user + s.cpu.usage_kernel > 0
    m = to_v1_metrics(s)
    assert m.memory.usage.limit == 128 << 20 and m.memory.rss == s.memory.rss
    assert m.memory.hierarchical_memory_limit == 128 << 20
    assert m.pids.limit == 50
    v2m = to_v2_metrics(s)  # the other shape still fills from v1 numbers
    assert v2m.memory.usage_limit == 128 << 20


@v1_only
def test_v1_failed_create_leaves_nothing(v1: Callable[..., V1Manager]) -> None:
    mgr, prefix = V1Manager(), f"dytest-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidArgument):
        # cpuset.cpus naming a CPU the machine lacks: the kernel refuses, create rolls back
        mgr.create(f"/{prefix}/bad", Resources(cpus="4095"))
    assert not any(os.path.isdir(os.path.join(m, PARENT, prefix)) for m in set(v1_mounts().values()))


# ----- cgroup v2 on a private cgroup2 mount ----------------------------------------------------


@pytest.fixture
def v2() -> Iterator[Callable[..., V2Manager]]:
    root = tempfile.mkdtemp(prefix="dytest-cg2-")
    if subprocess.run(["mount", "-t", "cgroup2", "none", root], capture_output=True).returncode != 0:
        os.rmdir(root)
        pytest.skip("cannot mount cgroup2 here")
    top = os.path.join(root, PARENT)
    made_top = not os.path.isdir(top)
    prefix = f"dytest-{uuid.uuid4().hex[:8]}"
    root_control = _read(os.path.join(root, "cgroup.subtree_control"))

    made: list[V2Manager] = []

    def make(name: str = "c", resources: Resources | None = None) -> V2Manager:
        mgr = V2Manager(root)
        mgr.create(f"/{prefix}/{name}", resources)
        made.append(mgr)
        return mgr

    try:
        yield make
    finally:
        for mgr in made:  # a leaf's claim (its flock fd) is held until a process joins: not here
            mgr._release()
        try:
            _cleanup_tree(top, prefix, made_top)
            assert _read(os.path.join(root, "cgroup.subtree_control")) == root_control
        finally:
            unmount_private(root)


def test_v2_create_procs_freeze_kill_delete(v2: Callable[..., V2Manager], children: Children) -> None:
    mgr = v2("life")
    leaf = mgr.directory
    assert os.path.isdir(leaf) and _read(f"{leaf}/cgroup.type") == "domain"
    p = children.spawn("while True: pass")
    mgr.add_process(p.pid)
    children.release(p)
    assert mgr.pids() == [p.pid]
    assert _read(f"{leaf}/cgroup.procs") == str(p.pid)
    assert "populated 1" in _read(f"{leaf}/cgroup.events")

    watch = mgr.events_watch()
    try:
        assert not _readable(watch.fileno(), 0)
        mgr.freeze()
        assert mgr.frozen() and _read(f"{leaf}/cgroup.freeze") == "1"
        assert _readable(watch.fileno(), 2), "cgroup.events change did not wake the watch"
        assert "frozen 1" in watch.consume()
        assert not _readable(watch.fileno(), 0)
        u0 = mgr.stats().cpu.usage_total
        time.sleep(0.3)  # a window in which nothing may happen: no event says "still frozen"
        assert mgr.stats().cpu.usage_total - u0 < 5_000_000
        mgr.thaw()
        assert not mgr.frozen()
        wait_until(lambda: mgr.stats().cpu.usage_total - u0 > 20_000_000, what="the thawed loop to use CPU again")
    finally:
        watch.close()

    with pytest.raises(FailedPrecondition):
        mgr.delete()
    mgr.delete(force=True)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not os.path.exists(leaf)


def test_v2_kill_all_while_frozen_and_nested(v2: Callable[..., V2Manager], children: Children) -> None:
    mgr = v2("kill")
    mgr._release()  # as once the init has joined: a claimed leaf takes no cgroup below it
    nested = V2Manager(mgr._root)
    nested.create(mgr.path + "/inner")  # a cgroup below a populated one is fine in v2 without controllers
    a, b = children.spawn("import time\ntime.sleep(60)"), children.spawn("import time\ntime.sleep(60)")
    mgr.add_process(a.pid)
    nested.add_process(b.pid)
    assert mgr.pids() == sorted([a.pid, b.pid])
    mgr.freeze()
    mgr.kill_all(signal.SIGKILL)
    assert a.wait(timeout=10) == -signal.SIGKILL and b.wait(timeout=10) == -signal.SIGKILL
    assert mgr.frozen()  # the state it was found in
    mgr.thaw()
    mgr.delete()
    assert not os.path.exists(nested.directory)


def test_v2_stats_and_pressure(v2: Callable[..., V2Manager], children: Children) -> None:
    mgr = v2("stats")
    # CPU time, not wall time: under load a wall-clock loop may get less than the 50 ms checked below.
    p = children.spawn("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.1: pass\n"
                       "print('done', flush=True)\ntime.sleep(60)")
    mgr.add_process(p.pid)
    children.release(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "done"
    s = mgr.stats()
    assert s.version == 2
    cpu_stat = dict(line.split() for line in _read(f"{mgr.directory}/cpu.stat").splitlines())
    assert 50_000 < s.cpu.usage_total // 1000 <= int(cpu_stat["usage_usec"])  # loose: the CPU is shared
    assert s.cpu.usage_user + s.cpu.usage_kernel > 0
    if os.path.exists(f"{mgr.directory}/cpu.pressure"):
        assert s.cpu_pressure is not None and s.cpu_pressure.some.total >= 0
    m = to_v2_metrics(s)
    assert m.cpu.usage_usec == s.cpu.usage_total // 1000


def test_v2_missing_controller_is_refused_and_rolled_back(v2: Callable[..., V2Manager]) -> None:
    probe = v2("probe")
    available = _read(os.path.join(os.path.dirname(probe.directory), "cgroup.controllers")).split()
    if "pids" in available:
        mgr = v2("pids", Resources(pids_limit=7))
        assert _read(f"{mgr.directory}/pids.max") == "7"
        return
    with pytest.raises(FailedPrecondition, match=r"pids\.max"):
        v2("nopids", Resources(pids_limit=7))
    assert not os.path.exists(os.path.join(os.path.dirname(probe.directory), "nopids"))


def test_v2_refuses_escaping_paths(v2: Callable[..., V2Manager]) -> None:
    probe = v2("probe")
    root = probe.directory.split(f"/{PARENT}/")[0]
    before = sorted(os.listdir(root))
    for bad in ("/../x", "../../escape", "a/../../b", "/"):
        with pytest.raises(InvalidArgument):
            V2Manager(root).create(bad)
    assert sorted(os.listdir(root)) == before


def test_v2_controllers_are_enabled_only_below_dockyard(v2: Callable[..., V2Manager]) -> None:
    mgr = v2("ctl")
    top = mgr.directory.split(f"/{PARENT}/")[0] + f"/{PARENT}"
    offered = set(_read(f"{top}/cgroup.controllers").split())
    enabled = set(_read(f"{top}/cgroup.subtree_control").split())
    assert enabled == offered & {"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"}
    leaf_controllers = set(_read(f"{mgr.directory}/cgroup.controllers").split())
    assert leaf_controllers == enabled
