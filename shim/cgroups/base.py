"""The contract every cgroup driver honours, and the data it speaks.

Words:
- *parent*: every cgroup Dockyard makes lives under one directory named ``dockyard`` at the top of
  each hierarchy (``/sys/fs/cgroup/<controller>/dockyard`` on v1, ``/sys/fs/cgroup/dockyard`` on
  v2). Nothing outside it is ever created, written or removed.
- *cgroups path*: the OCI ``linux.cgroupsPath`` (``"/default/mycontainer"``), always resolved
  relative to the parent; ``..`` or an empty path is refused with InvalidArgument.
- *Resources*: the OCI ``linux.resources`` object as a dataclass; ``None`` fields mean "leave as
  it is", so the same value serves create and update.
- *Stats*: what the kernel reports, in one shape for both versions (see ``metrics.py`` for the
  containerd Metrics messages).

Lifecycle: ``create(path, resources)`` (or ``load(path)`` after a shim restart) binds a manager to
one cgroup; then ``add_process``, ``apply``, ``freeze``/``thaw``, ``pids``, ``stats``,
``oom_events``/``oom_watch``, ``kill_all``; ``delete`` ends it. Misuse: a method other than
create/load on an unbound manager raises FailedPrecondition; ``load`` of a missing cgroup raises
NotFound; ``delete`` of a populated cgroup raises FailedPrecondition unless ``force``.

Everything here is synchronous and small on purpose: it runs inside the shim (no threads, no
grpc). Example::

    mgr = new_manager()
    mgr.create("/default/web", Resources.from_oci(spec["linux"]["resources"]))
    mgr.add_process(init_pid)            # before the init can fork
    watch = mgr.oom_watch(); loop.add_reader(watch.fileno(), on_oom)
    ...
    mgr.delete(force=True)
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard_common.cgroups import check_inside
from dockyard_common.devices import check_device_number
from dockyard_common.errors import DockyardError, FailedPrecondition, Internal, InvalidArgument, NotFound, Unavailable
from dockyard_common.flocks import held_exclusively

# What containerd reports for an unlimited v2 value ("max"): the largest uint64.
UNLIMITED = 2**64 - 1


# ----- resources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRule:
    """One OCI device cgroup rule; ``major``/``minor`` None mean any (``*``)."""

    allow: bool
    type: str = "a"
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"

    def v1_line(self) -> str:
        if self.type == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


@dataclass(frozen=True)
class ThrottleDevice:
    major: int
    minor: int
    rate: int


@dataclass(frozen=True)
class HugepageLimit:
    page_size: str  # as the kernel names it in file names: "2MB", "1GB", "64KB"
    limit: int


@dataclass
class Resources:
    """OCI ``linux.resources``; None (or empty) means "not set, leave unchanged"."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None  # microseconds per period; -1 = unlimited
    cpu_period: int | None = None  # microseconds
    cpus: str | None = None
    mems: str | None = None
    memory_limit: int | None = None  # bytes; -1 = unlimited
    memory_reservation: int | None = None
    memory_swap: int | None = None  # OCI meaning: memory + swap; -1 = unlimited
    memory_swappiness: int | None = None
    disable_oom_killer: bool | None = None
    pids_limit: int | None = None  # >0 limit, <0 unlimited, 0/None unchanged
    blkio_weight: int | None = None  # 10..1000
    throttle_read_bps: tuple[ThrottleDevice, ...] = ()
    throttle_write_bps: tuple[ThrottleDevice, ...] = ()
    throttle_read_iops: tuple[ThrottleDevice, ...] = ()
    throttle_write_iops: tuple[ThrottleDevice, ...] = ()
    devices: tuple[DeviceRule, ...] = ()
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: dict[str, str] = field(default_factory=dict)  # v2 only: file name -> value

    @classmethod
    def from_oci(cls, res: Mapping[str, Any] | None) -> Resources:
        """Parse the ``linux.resources`` object of a config.json; bad shapes raise InvalidArgument.

        Ignored on purpose: ``memory.kernel``/``kernelTCP`` (deprecated, the kernel no longer
        limits them), realtime CPU, ``blockIO.leafWeight``/``weightDevice``, network and rdma.
        """
        if res is None:
            return cls()
        if not isinstance(res, Mapping):
            raise InvalidArgument("linux.resources must be an object")
        cpu = _obj(res, "cpu")
        mem = _obj(res, "memory")
        pids = _obj(res, "pids")
        bio = _obj(res, "blockIO")
        r = cls(
            cpu_shares=_int(cpu, "shares", "cpu"),
            cpu_quota=_int(cpu, "quota", "cpu"),
            cpu_period=_int(cpu, "period", "cpu"),
            cpus=_str(cpu, "cpus", "cpu"),
            mems=_str(cpu, "mems", "cpu"),
            memory_limit=_int(mem, "limit", "memory"),
            memory_reservation=_int(mem, "reservation", "memory"),
            memory_swap=_int(mem, "swap", "memory"),
            memory_swappiness=_int(mem, "swappiness", "memory"),
            disable_oom_killer=_bool(mem, "disableOOMKiller", "memory"),
            pids_limit=_int(pids, "limit", "pids"),
            blkio_weight=_int(bio, "weight", "blockIO"),
            throttle_read_bps=_throttles(bio, "throttleReadBpsDevice"),
            throttle_write_bps=_throttles(bio, "throttleWriteBpsDevice"),
            throttle_read_iops=_throttles(bio, "throttleReadIOPSDevice"),
            throttle_write_iops=_throttles(bio, "throttleWriteIOPSDevice"),
            devices=tuple(_device(d) for d in _list(res, "devices")),
            hugepage_limits=tuple(_hugepage(h) for h in _list(res, "hugepageLimits")),
            unified=_unified(res.get("unified")),
        )
        r.validate()
        return r

    def validate(self) -> None:
        """Refuse values the kernel would refuse, with a message naming the field."""
        if self.cpu_shares is not None and self.cpu_shares < 2 and self.cpu_shares != 0:
            raise InvalidArgument(f"cpu.shares {self.cpu_shares} is below the minimum of 2")
        if self.cpu_period is not None and self.cpu_period != 0 and not 1000 <= self.cpu_period <= 1_000_000:
            raise InvalidArgument(f"cpu.period {self.cpu_period} is outside 1000..1000000 microseconds")
        if self.cpu_quota is not None and 0 <= self.cpu_quota < 1000 and self.cpu_quota != 0:
            raise InvalidArgument(f"cpu.quota {self.cpu_quota} is below the minimum of 1000 microseconds")
        for name, value in (("cpus", self.cpus), ("mems", self.mems)):
            if value is not None and not re.fullmatch(r"[0-9,\-]*", value):
                raise InvalidArgument(f"cpu.{name} {value!r} is not a cpu list")
        lim, swap = self.memory_limit, self.memory_swap
        if lim is not None and lim > 0 and swap is not None and swap > 0 and swap < lim:
            raise InvalidArgument(f"memory.swap {swap} (memory+swap) must not be below memory.limit {lim}")
        if self.memory_swappiness is not None and not 0 <= self.memory_swappiness <= 100:
            raise InvalidArgument(f"memory.swappiness {self.memory_swappiness} is outside 0..100")
        if self.blkio_weight is not None and self.blkio_weight != 0 and not 10 <= self.blkio_weight <= 1000:
            raise InvalidArgument(f"blockIO.weight {self.blkio_weight} is outside 10..1000")
        for key in self.unified:
            if "/" in key or key.startswith(".") or not re.fullmatch(r"[a-z_]+\.[a-zA-Z0-9_.]+", key):
                raise InvalidArgument(f"unified key {key!r} is not a cgroup file name")
            if key.startswith("cgroup."):
                raise InvalidArgument(f"unified key {key!r}: cgroup core files are not resources")


def _obj(res: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = res.get(key)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise InvalidArgument(f"linux.resources.{key} must be an object")
    return v


def _list(res: Mapping[str, Any], key: str) -> list[Any]:
    v = res.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise InvalidArgument(f"linux.resources.{key} must be an array")
    return v


def _int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(f"linux.resources.{where}.{key} must be an integer, not {v!r}")
    return v


def _str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    v = obj.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise InvalidArgument(f"linux.resources.{where}.{key} must be a string, not {v!r}")
    return v


def _bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise InvalidArgument(f"linux.resources.{where}.{key} must be a boolean, not {v!r}")
    return v


def _throttles(bio: Mapping[str, Any], key: str) -> tuple[ThrottleDevice, ...]:
    out = []
    for d in _list(bio, key):
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"linux.resources.blockIO.{key} entries must be objects")
        major, minor, rate = (_int(d, k, f"blockIO.{key}") for k in ("major", "minor", "rate"))
        if major is None or minor is None or rate is None or min(major, minor, rate) < 0:
            raise InvalidArgument(f"linux.resources.blockIO.{key} entries need major, minor and rate >= 0")
        check_device_number(major, minor, f"linux.resources.blockIO.{key}", InvalidArgument)
        out.append(ThrottleDevice(major, minor, rate))
    return tuple(out)


def _device(d: Any) -> DeviceRule:
    if not isinstance(d, Mapping):
        raise InvalidArgument("linux.resources.devices entries must be objects")
    allow = _bool(d, "allow", "devices")
    if allow is None:
        raise InvalidArgument("linux.resources.devices entries need allow")
    typ = d.get("type") or "a"
    if typ not in ("a", "b", "c"):
        raise InvalidArgument(f"device type {typ!r} is not one of a, b, c")
    access = d.get("access") or "rwm"
    if not isinstance(access, str) or not set(access) <= set("rwm"):
        raise InvalidArgument(f"device access {access!r} must be made of r, w, m")
    major, minor = _int(d, "major", "devices"), _int(d, "minor", "devices")
    # runc treats -1 as "any", like a missing number.
    major = None if major in (None, -1) else major
    minor = None if minor in (None, -1) else minor
    check_device_number(major, minor, "linux.resources.devices", InvalidArgument)
    return DeviceRule(allow, typ, major, minor, access)


def _hugepage(h: Any) -> HugepageLimit:
    if not isinstance(h, Mapping):
        raise InvalidArgument("linux.resources.hugepageLimits entries must be objects")
    size, limit = h.get("pageSize"), _int(h, "limit", "hugepageLimits")
    if not isinstance(size, str) or not re.fullmatch(r"[0-9]+[KMG]B", size) or limit is None:
        raise InvalidArgument(f"hugepage limit {dict(h)!r} needs pageSize like \"2MB\" and an integer limit")
    return HugepageLimit(size, limit)


def _unified(u: Any) -> dict[str, str]:
    if u is None:
        return {}
    if not isinstance(u, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in u.items()):
        raise InvalidArgument("linux.resources.unified must map strings to strings")
    return dict(u)


# ----- stats -------------------------------------------------------------------------------------


@dataclass
class CpuStats:
    """Nanoseconds throughout (v2's microseconds are converted on read)."""

    usage_total: int = 0
    usage_user: int = 0
    usage_kernel: int = 0
    per_cpu: list[int] = field(default_factory=list)  # v1 only
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_time: int = 0


@dataclass
class MemoryEntry:
    usage: int = 0
    max_usage: int = 0
    limit: int = 0
    failcnt: int = 0


@dataclass
class MemoryStats:
    """``swap`` is memory+swap (``memsw``) on v1, as containerd reports it, and swap alone on v2.

    v2 has no failcnt: ``usage.failcnt`` is memory.events ``max`` there. ``cache``/``rss`` are
    ``cache``/``rss`` on v1 and ``file``/``anon`` on v2; ``stat`` is memory.stat verbatim.
    """

    usage: MemoryEntry = field(default_factory=MemoryEntry)
    swap: MemoryEntry = field(default_factory=MemoryEntry)
    kernel: MemoryEntry = field(default_factory=MemoryEntry)  # v1 only
    kernel_tcp: MemoryEntry = field(default_factory=MemoryEntry)  # v1 only
    cache: int = 0
    rss: int = 0
    stat: dict[str, int] = field(default_factory=dict)


@dataclass
class MemoryEvents:
    """OOM information. v1 has no separate ``oom`` counter: it reports ``oom_kill`` there too."""

    low: int = 0
    high: int = 0
    max: int = 0
    oom: int = 0
    oom_kill: int = 0
    under_oom: bool = False  # v1 only
    oom_kill_disable: bool = False  # v1 only


@dataclass
class PidsStats:
    current: int = 0
    limit: int = 0  # 0 = unlimited, as containerd reports it


@dataclass
class BlkioEntry:
    """One line of a v1 blkio file: ``8:0 Read 4096``."""

    major: int
    minor: int
    op: str
    value: int


@dataclass
class IoDeviceStat:
    """One line of v2 io.stat (v1 totals are folded into this shape too)."""

    major: int
    minor: int
    rbytes: int = 0
    wbytes: int = 0
    rios: int = 0
    wios: int = 0
    dbytes: int = 0
    dios: int = 0


@dataclass
class IoStats:
    service_bytes: list[BlkioEntry] = field(default_factory=list)  # v1
    serviced: list[BlkioEntry] = field(default_factory=list)  # v1
    devices: list[IoDeviceStat] = field(default_factory=list)  # v2 io.stat; v1 folded


@dataclass
class HugetlbStats:
    page_size: str
    usage: int = 0
    max_usage: int = 0
    limit: int = 0
    failcnt: int = 0


@dataclass
class PressureLine:
    avg10: float = 0.0
    avg60: float = 0.0
    avg300: float = 0.0
    total: int = 0  # microseconds


@dataclass
class Pressure:
    some: PressureLine = field(default_factory=PressureLine)
    full: PressureLine | None = None  # cpu.pressure has no "full" on older kernels


@dataclass
class Stats:
    version: int  # 1 or 2: which Metrics message fits (metrics.to_metrics picks it)
    cpu: CpuStats = field(default_factory=CpuStats)
    memory: MemoryStats = field(default_factory=MemoryStats)
    memory_events: MemoryEvents = field(default_factory=MemoryEvents)
    pids: PidsStats = field(default_factory=PidsStats)
    io: IoStats = field(default_factory=IoStats)
    hugetlb: list[HugetlbStats] = field(default_factory=list)
    cpu_pressure: Pressure | None = None
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None


# ----- the contract ------------------------------------------------------------------------------


class EventWatch(Protocol):
    """An fd the shim's event loop can ``add_reader``; ``consume()`` re-arms it after it fired.

    ``consume()`` returns how many OOM events happened since the last call (0 for a spurious
    wake, e.g. v1 signals the eventfd once more when the cgroup is removed). On v1 the wake
    comes when the OOM starts, so ``oom_events().oom_kill`` may not have moved yet.
    """

    def fileno(self) -> int: ...
    def consume(self) -> int: ...
    def close(self) -> None: ...


class CgroupManager(Protocol):
    """One container's cgroup. See the module docstring for words, lifecycle and errors."""

    version: int

    @property
    def path(self) -> str:
        """The bound cgroups path, normalised (``/default/web``)."""
        ...

    def create(self, path: str, resources: Resources | None = None) -> None:
        """Make the cgroup (existing directories are joined, as runc does) and apply resources.

        InvalidArgument: escaping path or bad resources; FailedPrecondition: a resource needs a
        controller the host does not offer. A cgroup made here is removed again on failure.
        """
        ...

    def load(self, path: str) -> None:
        """Bind to an existing cgroup (shim restart); NotFound when it does not exist."""
        ...

    def exists(self) -> bool: ...

    def add_process(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup; NotFound when it is gone."""
        ...

    def apply(self, resources: Resources) -> None:
        """Update: write the fields that are set; unset ones keep their value."""
        ...

    def freeze(self) -> None:
        """Freeze every task and wait until the kernel says frozen (Unavailable on timeout)."""
        ...

    def thaw(self) -> None: ...

    def frozen(self) -> bool: ...

    def pids(self) -> list[int]:
        """Sorted process ids (tgids) in the cgroup and its descendants."""
        ...

    def stats(self) -> Stats: ...

    def oom_events(self) -> MemoryEvents: ...

    def oom_watch(self) -> EventWatch:
        """An fd that becomes readable on an OOM in this cgroup (v1 eventfd, v2 memory.events)."""
        ...

    def kill_all(self, sig: int) -> None:
        """Signal every process by pid, frozen meanwhile so none can fork past the list."""
        ...

    def delete(self, force: bool = False) -> None:
        """Remove the cgroup directories, leaf first. Populated: FailedPrecondition, unless force,
        which SIGKILLs the members by pid and waits for them to leave. Missing: no error."""
        ...


# ----- shared helpers ----------------------------------------------------------------------------


def read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def read_opt(path: str) -> str | None:
    try:
        return read_text(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.EOPNOTSUPP, errno.EINVAL):  # e.g. a controller disabled meanwhile
            return None
        raise


def read_int(path: str, default: int = 0, max_value: int = UNLIMITED) -> int:
    """An integer file; ``max`` reads as ``max_value``; missing as ``default``."""
    text = read_opt(path)
    if text is None:
        return default
    text = text.strip()
    if text == "max":
        return max_value
    try:
        return int(text)
    except ValueError:
        return default


def parse_flat(text: str | None) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events) into a dict of ints."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_pressure(text: str | None) -> Pressure | None:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` (+ ``full ...``) into Pressure."""
    if not text:
        return None
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
        try:
            lines[kind] = PressureLine(float(kv.get("avg10", 0)), float(kv.get("avg60", 0)),
                                       float(kv.get("avg300", 0)), int(kv.get("total", 0)))
        except ValueError:
            continue
    if "some" not in lines:
        return None
    return Pressure(lines["some"], lines.get("full"))


def read_procs(directory: str) -> set[int]:
    """Pids in ``cgroup.procs`` of ``directory`` and every cgroup below it."""
    pids: set[int] = set()
    for here, _dirs, _files in os.walk(directory):
        text = read_opt(os.path.join(here, "cgroup.procs"))
        pids.update(int(t) for t in (text or "").split() if t.isdigit())
    return pids


def write_file(path: str, value: str | int, parent: str) -> None:
    """Write one value to a cgroup file under ``parent``, mapping errno to domain errors.

    No O_CREAT: a missing file means the controller is missing, which is FailedPrecondition.
    """
    check_inside(path, parent)
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FailedPrecondition(f"cgroup file {path} does not exist (controller not available)") from None
    try:
        os.write(fd, data)
    except OSError as e:
        msg = f"writing {data.decode()!r} to {path}: {e.strerror}"
        if e.errno == errno.EINVAL or e.errno == errno.ERANGE:
            raise InvalidArgument(msg) from None
        if e.errno == errno.ESRCH:
            raise NotFound(msg) from None
        if e.errno in (errno.EBUSY, errno.EOPNOTSUPP, errno.ENOSPC, errno.EPERM, errno.EACCES):
            raise FailedPrecondition(msg) from None
        raise Internal(msg) from None
    finally:
        os.close(fd)


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    """Poll ``pred`` with a short, growing sleep; True once it holds, False at the deadline.

    Blocking is acceptable here: the kernel settles freezer states and exits within milliseconds,
    and the shim has no threads to hand the wait to.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


# How long `claim_leaf` lets other creates' probes (`claimed`, a shared lock held for two
# syscalls) finish before it gives up on a leaf; a claim (the exclusive lock) refuses at once.
PROBE_WAIT = 1.0


def claimed(directory: str) -> bool:
    """Whether another create holds the claim (`claim_leaf`) on the cgroup `directory`: its
    exclusive flock refuses our shared one. Ours goes with the fd at once, so a probe never
    holds a level (`claim_leaf` waits out the probes of others). False when it does not exist."""
    return held_exclusively(directory, os.O_DIRECTORY)


def check_unclaimed(top: str, rel: str) -> None:
    """Refuse (FailedPrecondition) a cgroups path another container may own, before anything is
    made: a level above it that is another container's cgroup, by its processes or, while that
    container's init is still joining, by its claim (`claim_leaf`) (the leaf would nest in a
    container's cgroup), or the leaf itself existing with processes or cgroups below it. Joining
    it would let this container's failure or delete kill and remove the other's (runc refuses a
    non-empty cgroup too). An existing empty leaf is joined, as runc does. Two creates racing for
    one path both pass this: `claim_leaf` settles who gets it.

    Each level's claim is looked at before its processes: a create lets go of its claim only
    after its first process joined, so a level is seen either claimed or holding processes. A
    create above one being made below it (that made its levels first) sees the other's cgroup
    under its leaf; so of two nested creates at most one gets through.
    """
    parts = rel.split("/")
    for i in range(1, len(parts)):
        level = os.path.join(top, *parts[:i])
        if claimed(level):
            raise FailedPrecondition(f"cgroup /{rel}: in use: another container is being created in "
                                     f"/{'/'.join(parts[:i])}")
        if (read_opt(os.path.join(level, "cgroup.procs")) or "").split():
            raise FailedPrecondition(f"cgroup /{rel}: in use: /{'/'.join(parts[:i])} holds processes")
    leaf = os.path.join(top, rel)
    if not os.path.isdir(leaf):
        return
    if read_procs(leaf):
        raise FailedPrecondition(f"cgroup /{rel}: in use: it holds processes")
    with os.scandir(leaf) as entries:
        if any(e.is_dir(follow_symlinks=False) for e in entries):
            raise FailedPrecondition(f"cgroup /{rel}: in use: it holds other cgroups")


def claim_leaf(top: str, rel: str) -> int:
    """Take the made leaf `top/rel` for one container: an exclusive flock(2) on the directory,
    then `check_unclaimed` again under it. The caller keeps the returned fd until its first
    process is in the cgroup (which then shows it in use), then `release_claim`s it.

    Why a lock: between another create's check and its first process joining, the leaf looks
    free. The lock is the kernel's, so it holds across shims and daemons on one host, and dies
    with its holder. A create finding it taken is FailedPrecondition at once (never waits);
    only the shared locks of other creates' probes (`claimed`, looking at the levels above
    their own leaf) are waited out. The locked directory must still be the one at the path: a
    leaf removed (and perhaps made again, for another) meanwhile is not ours.
    """
    leaf = os.path.join(top, rel)
    gone = FailedPrecondition(f"cgroup /{rel}: in use: another container's create removed it meanwhile")
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:  # the create that held it failed and removed it meanwhile
        raise gone from None
    try:
        def locked() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            try:  # held shared: only probes, gone in a moment; held exclusive: a claim
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FailedPrecondition(f"cgroup /{rel}: in use: another container is being created in it") from None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False

        if not wait_until(locked, PROBE_WAIT):
            raise FailedPrecondition(f"cgroup /{rel}: in use: other containers' creates kept looking at it")
        here = _inode(leaf)
        if here is None or here != os.fstat(fd).st_ino:
            raise gone
        check_unclaimed(top, rel)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_unclaimed(directory: str) -> None:
    """rmdir a level a failed create made, unless another create claimed it meanwhile (a nested
    path's leaf: theirs now). The rmdir is made under a shared lock, so no claim is taken on a
    directory about to go (`claim_leaf` would find it removed). Errors are ignored: a level in
    use stays, as does one already gone."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.rmdir(directory)
    except OSError:
        pass
    finally:
        os.close(fd)


def release_claim(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the only fd of the open file drops its flock


# Walks of make_dirs that may start again because a level vanished under them. Each restart
# means another delete removed an empty level meanwhile; two in a row are already rare.
MKDIR_ATTEMPTS = 20


def make_dirs(root: str, parts: Iterable[str], made: list[str],
              prepare: Callable[[str, str, bool], None] | None = None) -> str:
    """mkdir ``root/parts[0]/parts[1]/...`` one level at a time; returns the last directory.

    Levels made here are appended to ``made`` (for the caller's rollback). ``prepare(parent,
    directory, last)`` runs for every level once it exists (v1 copies cpusets, v2 enables
    controllers). A delete elsewhere removes a namespace's directory once it is empty
    (``prune_parents``): when a level vanishes between our mkdir and the next one (ENOENT, or
    ``prepare`` failing on a directory no longer there), the walk starts again from ``root``.
    """
    levels = list(parts)
    for _ in range(MKDIR_ATTEMPTS):
        cur = root
        passed: list[tuple[str, int]] = []  # the levels this walk found or made, by inode
        try:
            for i, part in enumerate(levels):
                nxt = os.path.join(cur, part)
                try:
                    os.mkdir(nxt, 0o755)
                    made.append(nxt)
                except FileExistsError:
                    pass
                ino = _inode(nxt)
                passed.append((nxt, -1 if ino is None else ino))
                if ino is None:
                    raise FileNotFoundError(errno.ENOENT, "removed meanwhile", nxt)
                if prepare is not None:
                    prepare(cur, nxt, i == len(levels) - 1)
                cur = nxt
            return cur
        except (FileNotFoundError, DockyardError):
            # By inode: a level may have gone and been made again (by another create) meanwhile.
            if all(_inode(d) == ino for d, ino in passed):
                raise  # nothing vanished: a real failure (a missing hierarchy, a refused value)
    raise Unavailable(f"cgroup {os.path.join(root, *levels)}: its parent kept being removed while creating it")


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def remove_tree(directory: str, parent: str, timeout: float = 2.0) -> None:
    """rmdir a cgroup and every cgroup below it, deepest first (cgroupfs removes no files).

    EBUSY right after the last task left is transient (the kernel finishes offlining), so retry.
    """
    check_inside(directory, parent)
    try:
        os.rmdir(directory)  # the usual leaf: no walk through its ~30 control files
        return
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:
        pass  # busy or has children: the walk below retries, and classifies errors
    for here, _dirs, _files in os.walk(directory, topdown=False):
        check_inside(here, parent)
        last: OSError | None = None

        def gone(path: str = here) -> bool:
            nonlocal last
            try:
                os.rmdir(path)
                return True
            except FileNotFoundError:
                return True
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise Internal(f"removing cgroup {path}: {e.strerror}") from None
                last = e
                return False

        if not wait_until(gone, timeout):
            raise FailedPrecondition(f"removing cgroup {here}: {last.strerror if last else 'busy'}")
