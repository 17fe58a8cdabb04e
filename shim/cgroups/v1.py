"""The cgroup v1 driver: one directory per mounted controller hierarchy.

The same cgroups path is made in every hierarchy, under ``<mount>/dockyard``; a process is added
to all of them, and each resource is written in the hierarchy of its controller.
"""

from __future__ import annotations

import glob
import os
import signal
from collections.abc import Callable, Mapping

from dockyard_common.cgroups import PARENT, normalize_path, prune_parents, v1_mounts
from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound, Unavailable

from .base import (
    BlkioEntry,
    CpuStats,
    HugetlbStats,
    IoDeviceStat,
    IoStats,
    MemoryEntry,
    MemoryEvents,
    MemoryStats,
    PidsStats,
    Resources,
    Stats,
    ThrottleDevice,
    check_unclaimed,
    claim_leaf,
    claimed,
    make_dirs,
    parse_flat,
    read_int,
    read_opt,
    read_procs,
    release_claim,
    remove_tree,
    remove_unclaimed,
    signal_pids,
    wait_until,
    write_file,
)

# Controllers Dockyard makes directories in when mounted (named hierarchies such as
# name=systemd belong to the init system and are left alone).
MANAGED = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
           "net_cls", "net_prio", "perf_event")
FREEZE_TIMEOUT = 5.0
EXIT_TIMEOUT = 5.0


class EventfdWatch:
    """An eventfd registered through cgroup.event_control; readable once an OOM began."""

    def __init__(self, efd: int, oom_control: str) -> None:
        self._fd = efd
        self._oom_control = oom_control

    def fileno(self) -> int:
        return self._fd

    def consume(self) -> int:
        try:
            count = os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0
        # The kernel also signals the eventfd when the cgroup goes away: that is no OOM.
        return count if os.path.exists(self._oom_control) else 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class V1Manager:
    """A container's cgroup on a v1 host. ``mounts`` maps controller -> mount point (v1_mounts)."""

    version = 1

    def __init__(self, mounts: Mapping[str, str] | None = None) -> None:
        mounts = v1_mounts() if mounts is None else mounts
        self._mounts = {c: m for c, m in mounts.items() if c in MANAGED}
        self._rel: str | None = None
        self._claim: int | None = None  # the first hierarchy's leaf locked until a process joined (claim_leaf)

    # ----- paths ---------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return "/" + self._bound()

    def _bound(self) -> str:
        if self._rel is None:
            raise FailedPrecondition("cgroup manager is not bound to a cgroup (call create or load)")
        return self._rel

    def _hierarchies(self) -> list[str]:
        """Distinct mount points (co-mounted controllers share one)."""
        return sorted(set(self._mounts.values()))

    def _leaf(self, mount: str) -> str:
        return os.path.join(mount, PARENT, self._bound())

    def _dir(self, controller: str) -> str:
        mount = self._mounts.get(controller)
        if mount is None:
            raise FailedPrecondition(f"cgroup controller {controller} is not mounted")
        return self._leaf(mount)

    def _file(self, controller: str, name: str) -> str:
        return os.path.join(self._dir(controller), name)

    def _has(self, controller: str, name: str) -> bool:
        return controller in self._mounts and os.path.exists(self._file(controller, name))

    def _write(self, controller: str, name: str, value: str | int) -> None:
        parent = os.path.join(self._mounts[controller], PARENT) if controller in self._mounts else "/nonexistent"
        write_file(self._file(controller, name), value, parent)

    # ----- lifecycle -----------------------------------------------------------------------------

    def create(self, path: str, resources: Resources | None = None) -> None:
        rel = normalize_path(path)
        if not self._mounts:
            raise FailedPrecondition("no cgroup v1 controller is mounted")
        for mount in self._hierarchies():
            check_unclaimed(os.path.join(mount, PARENT), rel)
        made: list[str] = []
        try:
            for mount in self._hierarchies():
                cpuset = mount == self._mounts.get("cpuset")
                make_dirs(mount, [PARENT, *rel.split("/")], made, _cpuset_preparer(mount) if cpuset else None)
            # One lock for all hierarchies: every create takes the first one's.
            self._claim = claim_leaf(os.path.join(self._hierarchies()[0], PARENT), rel)
            self._rel = rel
            if resources is not None:
                self.apply(resources)
        except BaseException:
            if self._claim is None:  # another create holds the leaves: theirs now, whoever made them
                leaves = {os.path.join(m, PARENT, rel) for m in self._hierarchies()}
                made = [d for d in made if d not in leaves]
            # Our leaves go as every level we made: under a shared lock (a create that locks one
            # after finds it removed), unless another create claimed it meanwhile (theirs then).
            self._release()
            for d in reversed(made):  # only what this call made, deepest first
                remove_unclaimed(d)
            for mount in self._hierarchies():
                top = os.path.join(mount, PARENT)
                prune_parents(os.path.join(top, rel), top, keep=self._claimed)
            self._rel = None
            raise

    def load(self, path: str) -> None:
        rel = normalize_path(path)
        if not any(os.path.isdir(os.path.join(m, PARENT, rel)) for m in self._hierarchies()):
            raise NotFound(f"cgroup {'/' + rel}")
        self._rel = rel

    def exists(self) -> bool:
        return any(os.path.isdir(self._leaf(m)) for m in self._hierarchies())

    def add_process(self, pid: int) -> None:
        for mount in self._hierarchies():
            leaf = self._leaf(mount)
            if not os.path.isdir(leaf):
                continue
            write_file(os.path.join(leaf, "cgroup.procs"), pid, os.path.join(mount, PARENT))
        self._release()  # a process in it now shows the leaves in use

    def _release(self) -> None:
        release_claim(self._claim)
        self._claim = None

    def _claimed(self, level: str) -> bool:
        """`prune_parents` keeps a level another create claimed (claims live in the first
        hierarchy): its leaf, being made."""
        hierarchies = self._hierarchies()
        return bool(hierarchies) and claimed(os.path.join(hierarchies[0], PARENT, level))

    # ----- resources -----------------------------------------------------------------------------

    def apply(self, resources: Resources) -> None:
        resources.validate()
        r = resources
        if r.unified:
            raise InvalidArgument("linux.resources.unified needs cgroup v2; this host uses v1")
        if r.cpu_shares:
            self._write("cpu", "cpu.shares", r.cpu_shares)
        self._set_cfs(r.cpu_quota or None, r.cpu_period or None)
        # mems before cpus is arbitrary: both must be non-empty before tasks join (create did that).
        if r.mems is not None:
            self._write("cpuset", "cpuset.mems", r.mems)
        if r.cpus is not None:
            self._write("cpuset", "cpuset.cpus", r.cpus)
        self._set_memory(r.memory_limit or None, r.memory_swap or None)
        if r.memory_reservation:
            self._write("memory", "memory.soft_limit_in_bytes", r.memory_reservation)
        if r.memory_swappiness is not None:
            self._write("memory", "memory.swappiness", r.memory_swappiness)
        if r.disable_oom_killer is not None:
            self._write("memory", "memory.oom_control", 1 if r.disable_oom_killer else 0)
        if r.pids_limit:
            self._write("pids", "pids.max", r.pids_limit if r.pids_limit > 0 else "max")
        if r.blkio_weight:
            # CFQ's blkio.weight is gone from modern kernels; BFQ takes the same 1..1000 scale.
            name = "blkio.weight" if self._has("blkio", "blkio.weight") else "blkio.bfq.weight"
            self._write("blkio", name, r.blkio_weight)
        for name, devs in (("read_bps_device", r.throttle_read_bps), ("write_bps_device", r.throttle_write_bps),
                           ("read_iops_device", r.throttle_read_iops),
                           ("write_iops_device", r.throttle_write_iops)):
            for d in devs:
                self._write("blkio", f"blkio.throttle.{name}", _throttle_line(d))
        # Device rules apply in order (a leading "deny all" then allows, as OCI runtimes emit them).
        for rule in r.devices:
            self._write("devices", "devices.allow" if rule.allow else "devices.deny", rule.v1_line())
        for h in r.hugepage_limits:
            self._write("hugetlb", f"hugetlb.{h.page_size}.limit_in_bytes", h.limit)

    def _set_cfs(self, quota: int | None, period: int | None) -> None:
        if period is not None:
            try:
                self._write("cpu", "cpu.cfs_period_us", period)
            except InvalidArgument:
                # The kernel checks period against the current quota (and the parent's bandwidth);
                # a shrinking pair only fits when the quota goes first.
                if quota is None:
                    raise
                self._write("cpu", "cpu.cfs_quota_us", quota)
                self._write("cpu", "cpu.cfs_period_us", period)
                return
        if quota is not None:
            self._write("cpu", "cpu.cfs_quota_us", quota)

    def _set_memory(self, limit: int | None, swap: int | None) -> None:
        if limit is None and swap is None:
            return
        memsw = self._has("memory", "memory.memsw.limit_in_bytes")
        if not memsw:
            swap = None  # the kernel does not account swap (swapaccount=0): nothing to limit
        elif limit == -1 and swap is None:
            swap = -1  # unlimited memory with a finite memsw would be refused (memsw < limit)
        if swap is None:
            if limit is not None:
                self._write("memory", "memory.limit_in_bytes", limit)
            return
        if limit is None:
            self._write("memory", "memory.memsw.limit_in_bytes", swap)
            return
        # The kernel keeps memory.limit <= memory.memsw.limit at every write. Growing: raise memsw
        # first (it stays above the old limit), then the limit. Shrinking below the current limit:
        # lower the limit first, then memsw can go down to meet it.
        current = read_int(self._file("memory", "memory.limit_in_bytes"))
        if swap == -1 or swap >= current:
            self._write("memory", "memory.memsw.limit_in_bytes", swap)
            self._write("memory", "memory.limit_in_bytes", limit)
        else:
            self._write("memory", "memory.limit_in_bytes", limit)
            self._write("memory", "memory.memsw.limit_in_bytes", swap)

    # ----- freezer -------------------------------------------------------------------------------

    def freeze(self) -> None:
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    def frozen(self) -> bool:
        return (read_opt(self._file("freezer", "freezer.state")) or "").strip() == "FROZEN"

    def _set_freezer(self, want: str) -> None:
        state = self._file("freezer", "freezer.state")

        def settled() -> bool:
            # Re-writing nudges tasks that were between states (FREEZING) on the last attempt.
            self._write("freezer", "freezer.state", want)
            return (read_opt(state) or "").strip() == want

        if not wait_until(settled, FREEZE_TIMEOUT):
            if want == "FROZEN":
                self._write("freezer", "freezer.state", "THAWED")  # never leave it half frozen
            raise Unavailable(f"cgroup {self.path}: freezer did not reach {want}")

    # ----- processes -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        # The union over hierarchies: a process moved in one hierarchy only still counts.
        pids: set[int] = set()
        for mount in self._hierarchies():
            pids |= read_procs(self._leaf(mount))
        return sorted(pids)

    def kill_all(self, sig: int) -> None:
        can_freeze = "freezer" in self._mounts and os.path.isdir(self._dir("freezer"))
        was_frozen = can_freeze and self.frozen()
        froze = False
        if can_freeze and not was_frozen:
            try:
                self.freeze()  # nothing forks between listing and signalling
                froze = True
            except DockyardError:
                pass
        try:
            signal_pids(self.pids(), sig)
        finally:
            # Frozen v1 tasks act on SIGKILL only once thawed; other signals wait for resume.
            if froze or (was_frozen and sig == signal.SIGKILL):
                self.thaw()

    def delete(self, force: bool = False) -> None:
        rel = self._bound()
        self._release()
        if self.pids():
            if not force:
                raise FailedPrecondition(f"cgroup /{rel} has {len(self.pids())} processes")
            self.kill_all(signal.SIGKILL)
            if not wait_until(lambda: not self.pids(), EXIT_TIMEOUT):
                raise Unavailable(f"cgroup /{rel}: processes {self.pids()} did not exit after SIGKILL")
        for mount in self._hierarchies():
            remove_tree(self._leaf(mount), os.path.join(mount, PARENT))
        for mount in self._hierarchies():  # every leaf first: a level empties in all of them
            prune_parents(self._leaf(mount), os.path.join(mount, PARENT), keep=self._claimed)

    # ----- stats ---------------------------------------------------------------------------------

    def stats(self) -> Stats:
        s = Stats(version=1, memory_events=self.oom_events() if "memory" in self._mounts else MemoryEvents())
        if "cpuacct" in self._mounts:
            s.cpu = self._cpu_usage()
        if "cpu" in self._mounts:
            st = parse_flat(read_opt(self._file("cpu", "cpu.stat")))
            s.cpu.nr_periods = st.get("nr_periods", 0)
            s.cpu.nr_throttled = st.get("nr_throttled", 0)
            s.cpu.throttled_time = st.get("throttled_time", 0)
        if "memory" in self._mounts:
            s.memory = self._memory()
        if "pids" in self._mounts:
            s.pids = PidsStats(read_int(self._file("pids", "pids.current")),
                               read_int(self._file("pids", "pids.max"), max_value=0))
        if "blkio" in self._mounts:
            s.io = self._blkio()
        if "hugetlb" in self._mounts:
            s.hugetlb = self._hugetlb()
        return s

    def _cpu_usage(self) -> CpuStats:
        f = lambda name: self._file("cpuacct", name)  # noqa: E731
        c = CpuStats(usage_total=read_int(f("cpuacct.usage")))
        if os.path.exists(f("cpuacct.usage_user")):
            c.usage_user = read_int(f("cpuacct.usage_user"))
            c.usage_kernel = read_int(f("cpuacct.usage_sys"))
        else:  # older kernels: clock ticks only
            ticks = parse_flat(read_opt(f("cpuacct.stat")))
            ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            c.usage_user = ticks.get("user", 0) * ns_per_tick
            c.usage_kernel = ticks.get("system", 0) * ns_per_tick
        c.per_cpu = [int(v) for v in (read_opt(f("cpuacct.usage_percpu")) or "").split()]
        return c

    def _memory(self) -> MemoryStats:
        def entry(prefix: str) -> MemoryEntry:
            f = lambda name: self._file("memory", f"memory.{prefix}{name}")  # noqa: E731
            return MemoryEntry(read_int(f("usage_in_bytes")), read_int(f("max_usage_in_bytes")),
                               read_int(f("limit_in_bytes")), read_int(f("failcnt")))

        stat = parse_flat(read_opt(self._file("memory", "memory.stat")))
        return MemoryStats(usage=entry(""), swap=entry("memsw."), kernel=entry("kmem."),
                           kernel_tcp=entry("kmem.tcp."), cache=stat.get("cache", 0), rss=stat.get("rss", 0),
                           stat=stat)

    def _blkio(self) -> IoStats:
        d = self._dir("blkio")
        # Legacy CFQ files when present, else the throttle layer's, which sees every bio.
        prefix = "blkio." if os.path.exists(os.path.join(d, "blkio.io_serviced_recursive")) else "blkio.throttle."
        io = IoStats(service_bytes=parse_blkio(read_opt(os.path.join(d, prefix + "io_service_bytes_recursive"))),
                     serviced=parse_blkio(read_opt(os.path.join(d, prefix + "io_serviced_recursive"))))
        io.devices = fold_blkio(io.service_bytes, io.serviced)
        return io

    def _hugetlb(self) -> list[HugetlbStats]:
        d = self._dir("hugetlb")
        out = []
        for limit in sorted(glob.glob(os.path.join(glob.escape(d), "hugetlb.*.limit_in_bytes"))):
            size = os.path.basename(limit)[len("hugetlb."):-len(".limit_in_bytes")]
            f = lambda name, size=size: os.path.join(d, f"hugetlb.{size}.{name}")  # noqa: E731
            out.append(HugetlbStats(size, read_int(f("usage_in_bytes")), read_int(f("max_usage_in_bytes")),
                                    read_int(limit), read_int(f("failcnt"))))
        return out

    # ----- OOM -----------------------------------------------------------------------------------

    def oom_events(self) -> MemoryEvents:
        oc = parse_flat(read_opt(self._file("memory", "memory.oom_control")))
        kills = oc.get("oom_kill", 0)
        return MemoryEvents(oom=kills, oom_kill=kills, under_oom=bool(oc.get("under_oom", 0)),
                            oom_kill_disable=bool(oc.get("oom_kill_disable", 0)))

    def oom_watch(self) -> EventfdWatch:
        """Register an eventfd for OOM notifications (cgroup.event_control "<efd> <oom_control fd>").

        The kernel keeps the registration until the eventfd is closed or the cgroup is removed
        (it signals the eventfd then too), so the oom_control fd is closed right away.
        """
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        oom_control = self._file("memory", "memory.oom_control")
        try:
            cfd = os.open(oom_control, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._write("memory", "cgroup.event_control", f"{efd} {cfd}")
            finally:
                os.close(cfd)
        except BaseException:
            os.close(efd)
            raise
        return EventfdWatch(efd, oom_control)


def _cpuset_preparer(mount: str) -> Callable[[str, str, bool], None]:
    top = os.path.join(mount, PARENT)

    def prepare(parent: str, directory: str, _last: bool) -> None:
        _init_cpuset(parent, directory, top)

    return prepare


def _init_cpuset(parent_dir: str, child: str, top: str) -> None:
    """Copy cpuset.cpus/mems from the parent when empty: v1 refuses tasks in an empty cpuset."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = os.path.join(child, name)
        if (read_opt(mine) or "").strip():
            continue
        value = (read_opt(os.path.join(parent_dir, name)) or "").strip()
        if value:
            write_file(mine, value, top)


def _throttle_line(d: ThrottleDevice) -> str:
    return f"{d.major}:{d.minor} {d.rate}"


def parse_blkio(text: str | None) -> list[BlkioEntry]:
    """``8:0 Read 4096`` lines; the trailing ``Total`` line and blank files give nothing."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        try:
            out.append(BlkioEntry(int(major), int(minor), parts[1], int(parts[2])))
        except ValueError:
            continue
    return out


def fold_blkio(service_bytes: list[BlkioEntry], serviced: list[BlkioEntry]) -> list[IoDeviceStat]:
    """Per-device totals in io.stat's shape, so one consumer reads both versions."""
    devs: dict[tuple[int, int], IoDeviceStat] = {}
    for entries, suffix in ((service_bytes, "bytes"), (serviced, "ios")):
        for e in entries:
            field_ = {"Read": "r", "Write": "w", "Discard": "d"}.get(e.op)
            if field_ is None:
                continue
            dev = devs.setdefault((e.major, e.minor), IoDeviceStat(e.major, e.minor))
            setattr(dev, field_ + suffix, e.value)
    return [devs[k] for k in sorted(devs)]
