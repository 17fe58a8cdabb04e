"""The cgroup v2 driver: one directory in the unified hierarchy, ``<root>/dockyard/<path>``.

Controllers reach a cgroup only when every ancestor lists them in ``cgroup.subtree_control``.
Dockyard enables them in the directories it owns (``dockyard`` and below), never in the root:
whatever the host root delegates is what containers get.

Not supported on v2, recorded in ``skipped`` instead of failing the container:
- device rules: v2 has no devices.allow; it needs an eBPF BPF_CGROUP_DEVICE program, which this
  driver does not load;
- ``memory.swappiness`` and ``disableOOMKiller``: no v2 interface file exists for them.
"""

from __future__ import annotations

import glob
import os
import select
import signal

from dockyard_common.cgroups import CGROUP_ROOT, PARENT, normalize_path, prune_parents
from dockyard_common.errors import DockyardError, FailedPrecondition, NotFound, Unavailable

from .base import (
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
    check_unclaimed,
    claim_leaf,
    claimed,
    make_dirs,
    parse_flat,
    parse_pressure,
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

CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
FREEZE_TIMEOUT = 5.0
EXIT_TIMEOUT = 5.0


class KernfsWatch:
    """Readable when a cgroup file that the kernel "notifies" (memory.events, cgroup.events) changed.

    kernfs wakes pollers of such a file with POLLPRI until the open file reads it again. An epoll
    set registered for POLLPRI only turns that into plain readability of the epoll fd, which is
    what an asyncio loop's add_reader understands (the file itself always polls readable).
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.read(self._fd, 4096)  # arm: a fresh open file counts as "changed" until read once
            self._ep = select.epoll()
            self._ep.register(self._fd, select.EPOLLPRI)
        except BaseException:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        return self._ep.fileno()

    def consume(self) -> str:
        """Re-arm, returning the file's current text."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        return os.read(self._fd, 4096).decode("ascii", "replace")

    def close(self) -> None:
        if self._fd >= 0:
            self._ep.close()
            os.close(self._fd)
            self._fd = -1


class OomWatch:
    """memory.events through a KernfsWatch; ``consume()`` counts new ``oom`` events."""

    def __init__(self, path: str) -> None:
        self._watch = KernfsWatch(path)
        self._seen = parse_flat(read_opt(path)).get("oom", 0)

    def fileno(self) -> int:
        return self._watch.fileno()

    def consume(self) -> int:
        try:
            now = parse_flat(self._watch.consume()).get("oom", 0)
        except OSError:  # the cgroup went away
            return 0
        new, self._seen = max(now - self._seen, 0), max(now, self._seen)
        return new

    def close(self) -> None:
        self._watch.close()


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) onto cpu.weight (1..10000), the linear map runc and the OCI doc use."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) onto io.weight (1..10000)."""
    return 1 + ((weight - 10) * 9999) // 990


class V2Manager:
    """A container's cgroup on the unified hierarchy mounted at ``root``."""

    version = 2

    def __init__(self, root: str | None = None) -> None:
        self._root = root or CGROUP_ROOT
        self._top = os.path.join(self._root, PARENT)
        self._rel: str | None = None
        self._claim: int | None = None  # the leaf's lock, until its first process joined (claim_leaf)
        self.skipped: list[str] = []  # what apply could not do on this host, for the shim to log

    # ----- paths ---------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return "/" + self._bound()

    def _bound(self) -> str:
        if self._rel is None:
            raise FailedPrecondition("cgroup manager is not bound to a cgroup (call create or load)")
        return self._rel

    @property
    def directory(self) -> str:
        return os.path.join(self._top, self._bound())

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _write(self, name: str, value: str | int) -> None:
        write_file(self._file(name), value, self._top)

    # ----- lifecycle -----------------------------------------------------------------------------

    def create(self, path: str, resources: Resources | None = None) -> None:
        rel = normalize_path(path)
        made: list[str] = []
        skipped = len(self.skipped)

        def prepare(parent: str, directory: str, last: bool) -> None:
            if parent == self._root:  # a walk (again) from the top reports its own refusals only
                del self.skipped[skipped:]
            if not last:
                # A parent hands controllers down only through its subtree_control; the root's
                # is the host's business, so this starts at dockyard.
                self._enable_controllers(directory)

        check_unclaimed(self._top, rel)
        leaf = os.path.join(self._top, rel)
        try:
            make_dirs(self._root, [PARENT, *rel.split("/")], made, prepare)
            self._claim = claim_leaf(self._top, rel)
            self._rel = rel
            if resources is not None:
                self.apply(resources)
        except BaseException:
            if self._claim is None and leaf in made:
                made.remove(leaf)  # another create holds the leaf: theirs now, whoever made it
            # Our leaf goes as every level we made: under a shared lock (a create that locks it
            # after finds it removed), unless another create claimed it meanwhile (theirs then).
            self._release()
            for d in reversed(made):
                remove_unclaimed(d)
            prune_parents(os.path.join(self._top, rel), self._top, keep=self._claimed)
            self._rel = None
            raise

    def _release(self) -> None:
        release_claim(self._claim)
        self._claim = None

    def _claimed(self, level: str) -> bool:
        """`prune_parents` keeps a level another create claimed: its leaf, being made."""
        return claimed(os.path.join(self._top, level))

    def _enable_controllers(self, directory: str) -> None:
        available_text = read_opt(os.path.join(directory, "cgroup.controllers"))
        if available_text is None and not os.path.isdir(directory):
            raise FileNotFoundError(directory)  # removed meanwhile: make_dirs starts again
        available = (available_text or "").split()
        enabled = (read_opt(os.path.join(directory, "cgroup.subtree_control")) or "").split()
        want = [c for c in CONTROLLERS if c in available and c not in enabled]
        if not want:
            return
        control = os.path.join(directory, "cgroup.subtree_control")
        try:
            write_file(control, " ".join("+" + c for c in want), self._top)
        except DockyardError:
            # One refusal (e.g. cpu while a realtime task lives below) must not cost the others.
            for c in want:
                try:
                    write_file(control, "+" + c, self._top)
                except DockyardError as e:
                    if not os.path.isdir(directory):
                        raise FileNotFoundError(directory) from None
                    self.skipped.append(f"controller {c} in {directory}: {e}")

    def load(self, path: str) -> None:
        rel = normalize_path(path)
        if not os.path.isdir(os.path.join(self._top, rel)):
            raise NotFound(f"cgroup {'/' + rel}")
        self._rel = rel

    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    def add_process(self, pid: int) -> None:
        self._write("cgroup.procs", pid)
        self._release()  # a process in it now shows the leaf in use

    # ----- resources -----------------------------------------------------------------------------

    def apply(self, resources: Resources) -> None:
        resources.validate()
        r = resources
        if r.cpu_shares:
            self._write("cpu.weight", shares_to_weight(r.cpu_shares))
        if r.cpu_quota or r.cpu_period:
            cur_quota, _, cur_period = (read_opt(self._file("cpu.max")) or "max 100000").strip().partition(" ")
            quota = cur_quota if not r.cpu_quota else ("max" if r.cpu_quota < 0 else str(r.cpu_quota))
            period = r.cpu_period or cur_period or "100000"
            self._write("cpu.max", f"{quota} {period}")  # one write: no ordering problem as on v1
        if r.mems is not None:
            self._write("cpuset.mems", r.mems)
        if r.cpus is not None:
            self._write("cpuset.cpus", r.cpus)
        self._set_memory(r)
        if r.pids_limit:
            self._write("pids.max", r.pids_limit if r.pids_limit > 0 else "max")
        if r.blkio_weight:
            if os.path.exists(self._file("io.bfq.weight")):
                self._write("io.bfq.weight", r.blkio_weight)  # BFQ keeps blkio's 1..1000 scale
            else:
                self._write("io.weight", blkio_to_io_weight(r.blkio_weight))
        for key, devs in (("rbps", r.throttle_read_bps), ("wbps", r.throttle_write_bps),
                          ("riops", r.throttle_read_iops), ("wiops", r.throttle_write_iops)):
            for d in devs:
                self._write("io.max", f"{d.major}:{d.minor} {key}={d.rate}")
        if r.devices:
            self.skipped.append("devices: cgroup v2 device rules need an eBPF program (not implemented)")
        for h in r.hugepage_limits:
            self._write(f"hugetlb.{h.page_size}.max", h.limit)
        for key, value in r.unified.items():
            self._write(key, value)

    def _set_memory(self, r: Resources) -> None:
        # v2 limits memory and swap separately, so unlike v1 the write order does not matter.
        if r.memory_limit:
            self._write("memory.max", "max" if r.memory_limit < 0 else r.memory_limit)
        if r.memory_reservation:
            self._write("memory.low", max(r.memory_reservation, 0))
        if r.memory_swap and os.path.exists(self._file("memory.swap.max")):
            if r.memory_swap < 0:
                self._write("memory.swap.max", "max")
            else:
                # OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
                limit = r.memory_limit or read_int(self._file("memory.max"), default=-1, max_value=-1)
                if limit > 0:
                    self._write("memory.swap.max", max(r.memory_swap - limit, 0))
                else:
                    self.skipped.append("memory.swap: needs a memory limit to convert memory+swap on v2")
        if r.memory_swappiness is not None:
            self.skipped.append("memory.swappiness: no cgroup v2 interface")
        if r.disable_oom_killer:
            self.skipped.append("memory.disableOOMKiller: no cgroup v2 interface")

    # ----- freezer -------------------------------------------------------------------------------

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def frozen(self) -> bool:
        return parse_flat(read_opt(self._file("cgroup.events"))).get("frozen", 0) == 1

    def _set_frozen(self, want: bool) -> None:
        self._write("cgroup.freeze", 1 if want else 0)
        # cgroup.freeze is a request; cgroup.events "frozen 1" is the kernel's word it is done.
        if not wait_until(lambda: self.frozen() == want, FREEZE_TIMEOUT):
            if want:
                self._write("cgroup.freeze", 0)
            raise Unavailable(f"cgroup {self.path}: did not become {'frozen' if want else 'thawed'}")

    def events_watch(self) -> KernfsWatch:
        """Readable when cgroup.events changes (populated, frozen): e.g. the last process left."""
        return KernfsWatch(self._file("cgroup.events"))

    # ----- processes -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return sorted(read_procs(self.directory))

    def kill_all(self, sig: int) -> None:
        was_frozen = self.frozen()
        froze = False
        if not was_frozen:
            try:
                self.freeze()  # nothing forks between listing and signalling
                froze = True
            except DockyardError:
                pass
        try:
            signal_pids(self.pids(), sig)
        finally:
            # v2 delivers SIGKILL to frozen tasks; thawing again restores the state we found.
            if froze:
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
        remove_tree(self.directory, self._top)
        prune_parents(self.directory, self._top, keep=self._claimed)

    # ----- stats ---------------------------------------------------------------------------------

    def stats(self) -> Stats:
        f = self._file
        cpu = parse_flat(read_opt(f("cpu.stat")))
        s = Stats(version=2)
        s.cpu = CpuStats(usage_total=cpu.get("usage_usec", 0) * 1000, usage_user=cpu.get("user_usec", 0) * 1000,
                         usage_kernel=cpu.get("system_usec", 0) * 1000, nr_periods=cpu.get("nr_periods", 0),
                         nr_throttled=cpu.get("nr_throttled", 0),
                         throttled_time=cpu.get("throttled_usec", 0) * 1000)
        s.memory_events = self.oom_events()
        stat = parse_flat(read_opt(f("memory.stat")))
        s.memory = MemoryStats(
            usage=MemoryEntry(read_int(f("memory.current")), read_int(f("memory.peak")),
                              read_int(f("memory.max")), s.memory_events.max),
            swap=MemoryEntry(read_int(f("memory.swap.current")), read_int(f("memory.swap.peak")),
                             read_int(f("memory.swap.max"))),
            cache=stat.get("file", 0), rss=stat.get("anon", 0), stat=stat)
        s.pids = PidsStats(read_int(f("pids.current")), read_int(f("pids.max"), max_value=0))
        s.io = IoStats(devices=parse_io_stat(read_opt(f("io.stat"))))
        s.hugetlb = self._hugetlb()
        s.cpu_pressure = parse_pressure(read_opt(f("cpu.pressure")))
        s.memory_pressure = parse_pressure(read_opt(f("memory.pressure")))
        s.io_pressure = parse_pressure(read_opt(f("io.pressure")))
        return s

    def _hugetlb(self) -> list[HugetlbStats]:
        d = self.directory
        out = []
        for cur in sorted(glob.glob(os.path.join(glob.escape(d), "hugetlb.*.current"))):
            size = os.path.basename(cur)[len("hugetlb."):-len(".current")]
            if "." in size:  # hugetlb.2MB.rsvd.current and friends
                continue
            events = parse_flat(read_opt(os.path.join(d, f"hugetlb.{size}.events")))
            out.append(HugetlbStats(size, read_int(cur), 0, read_int(os.path.join(d, f"hugetlb.{size}.max")),
                                    events.get("max", 0)))
        return out

    # ----- OOM -----------------------------------------------------------------------------------

    def oom_events(self) -> MemoryEvents:
        ev = parse_flat(read_opt(self._file("memory.events")))
        return MemoryEvents(low=ev.get("low", 0), high=ev.get("high", 0), max=ev.get("max", 0),
                            oom=ev.get("oom", 0), oom_kill=ev.get("oom_kill", 0))

    def oom_watch(self) -> OomWatch:
        """Readable when memory.events changes; ``consume()`` tells how many OOMs that was."""
        path = self._file("memory.events")
        if not os.path.exists(path):
            raise FailedPrecondition(f"cgroup {self.path}: the memory controller is not enabled")
        return OomWatch(path)


def parse_io_stat(text: str | None) -> list[IoDeviceStat]:
    """``8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`` lines of io.stat."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts:
            continue
        dev, pairs = parts[0], parts[1:]
        major, sep, minor = dev.partition(":")
        if not sep:
            continue
        try:
            entry = IoDeviceStat(int(major), int(minor))
            for pair in pairs:
                key, _, value = pair.partition("=")
                if key in ("rbytes", "wbytes", "rios", "wios", "dbytes", "dios"):
                    setattr(entry, key, int(value))
        except ValueError:
            continue
        out.append(entry)
    return out

