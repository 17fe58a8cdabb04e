"""dockyard.shim.v1.Stats: sample a container's cgroup at an interval and push it to the daemon.

ttrpc 1.1 has no streams, so the shim pushes: the daemon calls `Watch(id, interval_ms)` on our
socket, and from then on a sampler reads the container's cgroup every interval and calls
`dockyard.shim.v1.StatsSink/Push(Sample)` on the daemon's ttrpc endpoint (TTRPC_ADDRESS, where
events go). There is one sampler per container, however many clients watch: the daemon fans the
samples out and sets the interval to the smallest any of its subscribers asked for. `Unwatch`
stops it; so does the init's exit, after one final sample flagged `end`.

Cheap, because a hundred shims do this every second: one wakeup per sample (a timer callback on
wall-clock multiples of the interval, so the daemon gets a host's samples together), the cgroup
files held open and re-read with pread (`CgroupReader`), and the push written without waiting
for its answer (`_Sink`; answers are collected at the next push).

Never blocking, never piling up: a push that finds the previous one still unsent is skipped (the
daemon sees the gap in `seq`). When pushes fail `MAX_FAILURES` times in a row (the daemon is
gone), every sampler stops: nobody is listening, and a daemon that comes back asks again.

The cgroup files are read synchronously: they are small kernel files (no disk I/O), and the
shim has no threads to hand them to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from google.protobuf import empty_pb2

from dockyard_api.dockyard.shim.v1 import stats_pb2 as pb
from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common.cgroups import CGROUP_ROOT, PARENT, v1_mounts
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound, Unavailable
from dockyard_common.ttrpc import RequestContext, parse_address, wire
from dockyard_common.ttrpc.errors import error_from_status
from shim.cgroups import CgroupManager
from shim.cgroups.base import UNLIMITED
from shim.container import Container

log = logging.getLogger("dockyard.shim.stats")

SINK_SERVICE = "dockyard.shim.v1.StatsSink"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
MIN_INTERVAL_MS = 50
MAX_INTERVAL_MS = 3_600_000
MAX_FAILURES = 3  # pushes failing in a row before the shim concludes nobody listens
MAX_OUTSTANDING = 4  # pushes without an answer before the connection counts as broken
# v1 reports "no limit" as a huge page-counter value; anything above this is unlimited.
_V1_UNLIMITED_ABOVE = 1 << 62
EMPTY = empty_pb2.Empty()


class CgroupReader:
    """The counters a sample needs, read from files held open (pread at offset 0 regenerates a
    cgroup file): about 0.1 ms a sample where the full `CgroupManager.stats()` (27 opens) costs
    1.1 ms, which matters when a hundred shims sample every second.

    Reads what `CgroupManager.stats()` would report for the same fields, on v1 and v2. A file
    the host lacks (a controller not mounted, no PSI) is left out; once the cgroup is removed,
    reads fail with OSError (ENODEV). `close()` releases the descriptors.
    """

    def __init__(self, cgroup: CgroupManager) -> None:
        self.version = cgroup.version
        rel = cgroup.path.lstrip("/")
        if self.version == 2:
            top = os.path.join(CGROUP_ROOT, PARENT, rel)
            self._dirs = dict.fromkeys(("cpu", "cpuacct", "memory", "pids", "blkio", "io"), top)
        else:
            self._dirs = {c: os.path.join(m, PARENT, rel) for c, m in v1_mounts().items()}
        self._fds: dict[str, int | None] = {}
        self._limits: dict[str, int] = {}  # limits change only on Update: read once, kept
        blkio = self._dirs.get("blkio", "")
        # As the v1 driver: the legacy CFQ files when present, else the throttle layer's.
        self._blkio_prefix = ("blkio." if os.path.exists(os.path.join(blkio, "blkio.io_serviced_recursive"))
                              else "blkio.throttle.")

    def _read(self, controller: str, name: str) -> str | None:
        key = f"{controller}/{name}"
        fd = self._fds.get(key, -1)
        if fd == -1:
            d = self._dirs.get(controller)
            try:
                fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_CLOEXEC) if d else None
            except FileNotFoundError:
                fd = None
            self._fds[key] = fd
        if fd is None:
            return None
        return os.pread(fd, 65536, 0).decode("ascii", "replace")

    def _int(self, controller: str, name: str, unlimited: int = UNLIMITED) -> int:
        text = self._read(controller, name)
        if text is None:
            return 0
        text = text.strip()
        if text == "max":
            return unlimited
        try:
            return int(text)
        except ValueError:
            return 0

    def _limit(self, controller: str, name: str, unlimited: int = UNLIMITED) -> int:
        """A limit file's value, read once until `limits_changed()`: two preads a sample fewer."""
        key = f"{controller}/{name}"
        value = self._limits.get(key)
        if value is None:
            value = self._limits[key] = self._int(controller, name, unlimited)
        return value

    def limits_changed(self) -> None:
        """The container was updated: read its limits again at the next sample."""
        self._limits.clear()

    def _flat(self, controller: str, name: str, keys: tuple[str, ...]) -> dict[str, int]:
        """`keys` of a flat-keyed file ("key value" lines) as ints, the others left alone: v1's
        memory.stat has ~40 lines and a sample wants 6, so split in C and convert only those."""
        text = self._read(controller, name)
        if not text:
            return {}
        words = text.split()
        if len(words) % 2:  # not only "key value" lines: pair them line by line
            fields = dict(line.partition(" ")[::2] for line in text.splitlines())
        else:
            fields = dict(zip(words[::2], words[1::2], strict=True))
        out: dict[str, int] = {}
        for key in keys:
            value = fields.get(key)
            if value is not None and value.isdigit():
                out[key] = int(value)
        return out

    def fill(self, sample: pb.Sample) -> None:
        sample.cgroup_version = self.version
        for group in (sample.cpu, sample.memory, sample.pids, sample.blkio):
            group.SetInParent()  # present even when every counter is still 0
        if self.version == 2:
            self._fill_v2(sample)
        else:
            self._fill_v1(sample)

    def _fill_v1(self, s: pb.Sample) -> None:
        cpu, mem = s.cpu, s.memory
        cpu.usage_total_ns = self._int("cpuacct", "cpuacct.usage")
        user = self._read("cpuacct", "cpuacct.usage_user")
        if user is not None:
            cpu.usage_user_ns = int(user.strip() or 0)
            cpu.usage_system_ns = self._int("cpuacct", "cpuacct.usage_sys")
        else:  # older kernels: clock ticks only
            ticks = self._flat("cpuacct", "cpuacct.stat", ("user", "system"))
            cpu.usage_user_ns = ticks.get("user", 0) * _NS_PER_TICK
            cpu.usage_system_ns = ticks.get("system", 0) * _NS_PER_TICK
        st = self._flat("cpu", "cpu.stat", ("nr_periods", "nr_throttled", "throttled_time"))
        cpu.throttling_periods, cpu.throttled_periods, cpu.throttled_time_ns = (
            st.get("nr_periods", 0), st.get("nr_throttled", 0), st.get("throttled_time", 0))
        mem.usage = self._int("memory", "memory.usage_in_bytes")
        mem.max_usage = self._int("memory", "memory.max_usage_in_bytes")
        mem.failcnt = self._int("memory", "memory.failcnt")
        stat = self._flat("memory", "memory.stat", _V1_MEMORY_STAT)
        # memory.stat carries the limit (the smallest up the tree, which is the one that bites)
        # and the swap in use: two files fewer to read.
        limit = stat.get("hierarchical_memory_limit", UNLIMITED)
        mem.limit = UNLIMITED if limit > _V1_UNLIMITED_ABOVE else limit
        mem.swap_usage = stat.get("total_swap", stat.get("swap", 0))
        mem.cache, mem.rss = stat.get("cache", 0), stat.get("rss", 0)
        mem.inactive_file = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        mem.oom_kills = self._flat("memory", "memory.oom_control", ("oom_kill",)).get("oom_kill", 0)
        s.pids.current, s.pids.limit = self._int("pids", "pids.current"), self._limit("pids", "pids.max", 0)
        b = s.blkio
        for name, kind in (("io_service_bytes_recursive", "bytes"), ("io_serviced_recursive", "ops")):
            for line in (self._read("blkio", self._blkio_prefix + name) or "").splitlines():
                parts = line.split()
                if len(parts) != 3 or not parts[2].isdigit():
                    continue  # the "Total" line, or noise
                if parts[1] == "Read":
                    setattr(b, f"read_{kind}", getattr(b, f"read_{kind}") + int(parts[2]))
                elif parts[1] == "Write":
                    setattr(b, f"write_{kind}", getattr(b, f"write_{kind}") + int(parts[2]))

    def _fill_v2(self, s: pb.Sample) -> None:
        cpu, mem = s.cpu, s.memory
        st = self._flat("cpu", "cpu.stat", _V2_CPU_STAT)
        cpu.usage_total_ns, cpu.usage_user_ns, cpu.usage_system_ns = (
            st.get("usage_usec", 0) * 1000, st.get("user_usec", 0) * 1000, st.get("system_usec", 0) * 1000)
        cpu.throttling_periods, cpu.throttled_periods, cpu.throttled_time_ns = (
            st.get("nr_periods", 0), st.get("nr_throttled", 0), st.get("throttled_usec", 0) * 1000)
        mem.usage, mem.limit = self._int("memory", "memory.current"), self._limit("memory", "memory.max")
        mem.max_usage = self._int("memory", "memory.peak")
        events = self._flat("memory", "memory.events", ("max", "oom_kill"))
        mem.failcnt, mem.oom_kills = events.get("max", 0), events.get("oom_kill", 0)
        stat = self._flat("memory", "memory.stat", ("file", "anon", "inactive_file"))
        mem.cache, mem.rss, mem.inactive_file = stat.get("file", 0), stat.get("anon", 0), stat.get("inactive_file", 0)
        mem.swap_usage = self._int("memory", "memory.swap.current")
        s.pids.current, s.pids.limit = self._int("pids", "pids.current"), self._limit("pids", "pids.max", 0)
        b = s.blkio
        for line in (self._read("io", "io.stat") or "").splitlines():
            for pair in line.split()[1:]:
                key, _, value = pair.partition("=")
                if key in _IO_KEYS and value.isdigit():
                    setattr(b, _IO_KEYS[key], getattr(b, _IO_KEYS[key]) + int(value))
        for name, into in (("cpu.pressure", s.cpu_pressure), ("memory.pressure", s.memory_pressure),
                           ("io.pressure", s.io_pressure)):
            _pressure(self._read("cpu", name), into)

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                os.close(fd)


_V1_MEMORY_STAT = ("hierarchical_memory_limit", "total_swap", "swap", "cache", "rss", "total_inactive_file",
                   "inactive_file")
_V2_CPU_STAT = ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec")
_IO_KEYS = {"rbytes": "read_bytes", "wbytes": "write_bytes", "rios": "read_ops", "wios": "write_ops"}
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _pressure(text: str | None, into: pb.Pressure) -> None:
    """``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` (and ``full ...``) lines."""
    for line in (text or "").splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
        target = into.some if kind == "some" else into.full
        try:
            target.avg10, target.avg60, target.avg300 = (float(kv.get("avg10", 0)), float(kv.get("avg60", 0)),
                                                         float(kv.get("avg300", 0)))
            target.total_us = int(kv.get("total", 0))
        except ValueError:
            continue


_PAYLOAD_TAG = bytes([3 << 3 | 2])  # ttrpc Request.payload: field 3, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Sink:
    """Pushes to the daemon's StatsSink over a plain non-blocking unix socket: never awaits.

    ttrpc answers every request, and waiting for each answer would wake the shim a second time
    per sample (on a VM a wakeup costs as much as reading the cgroup). So `push` writes the
    request frame and returns; the answers are collected at the next push. An error answer, a
    broken connection, or `MAX_OUTSTANDING` answers missing is a failure: the connection is
    dropped and made again at the next push. After `MAX_FAILURES` in a row, `on_lost` runs.
    A push that finds earlier bytes still unsent (the daemon is not reading) is skipped.
    """

    def __init__(self, address: str, namespace: str, on_lost: Callable[[], None]) -> None:
        self.path = parse_address(address) if address else ""
        self.on_lost = on_lost
        self.failures = 0
        self.skipped = 0
        # The Request around each sample is these bytes, the payload field between them: no
        # Request message built and serialised per sample (fields may come in any order).
        self._head = ttrpc_pb2.Request(service=SINK_SERVICE, method="Push").SerializeToString()
        self._tail = ttrpc_pb2.Request(metadata=[ttrpc_pb2.KeyValue(key=NAMESPACE_KEY, value=namespace)]
                                       ).SerializeToString()
        self._sock: socket.socket | None = None
        self._out = b""  # bytes of a frame the socket did not take yet
        self._in = bytearray()
        self._next_id = 1
        self._outstanding = 0

    def push(self, sample: pb.Sample) -> bool:
        """Send one sample now (False: skipped or failed; never raises, never blocks)."""
        try:
            self._collect()
            if self._sock is None:
                self._connect()
            if self._outstanding >= MAX_OUTSTANDING:
                raise Unavailable(f"{self._outstanding} stats pushes unanswered")
            if not self._flush():
                self.skipped += 1  # the daemon is behind: this sample goes, the next may pass
                return False
            self._out = self._frame(sample)
            self._flush()
            return True
        except (OSError, DockyardError, ValueError) as exc:
            self._fail(exc)
            return False

    async def push_final(self, sample: pb.Sample, timeout: float = 2.0) -> None:
        """Send a sample and wait for its answer: closing the connection before the daemon read it
        could cancel its handling (a ttrpc server cancels a gone client's requests)."""
        if not self.push(sample):
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError, OSError, DockyardError, ValueError):
            async with asyncio.timeout(timeout):
                while self._sock is not None and (self._outstanding or self._out):
                    self._flush()
                    data = await loop.sock_recv(self._sock, 65536)
                    if not data:
                        raise Unavailable("stats sink closed the connection")
                    self._in += data
                    self._collect(read=False)

    def _connect(self) -> None:
        if not self.path:
            raise NotFound("no TTRPC_ADDRESS to push stats to")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)  # a unix socket connects at once, or fails at once
        except OSError:
            sock.close()
            raise
        self._sock, self._next_id, self._outstanding = sock, 1, 0

    def _frame(self, sample: pb.Sample) -> bytes:
        payload = sample.SerializeToString()
        req = b"".join((self._head, _PAYLOAD_TAG, _varint(len(payload)), payload, self._tail))
        stream_id = self._next_id
        self._next_id += 2
        if self._next_id > wire.MAX_STREAM_ID:
            self._next_id = 1  # (a reconnect would do too; ids only need to be unique in flight)
        self._outstanding += 1
        return wire.encode_frame(stream_id, wire.TYPE_REQUEST, req)

    def _flush(self) -> bool:
        """Write what is pending; True when nothing is left."""
        if self._out and self._sock is not None:
            try:
                sent = self._sock.send(self._out)
            except BlockingIOError:
                sent = 0
            self._out = self._out[sent:]
        return not self._out

    def _collect(self, read: bool = True) -> None:
        """Take the answers that arrived: an OK resets the failure count, an error is one."""
        if self._sock is None:
            return
        while read:  # one recv is the rule: answers are small (a syscall is worth saving here)
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            if not data:
                raise Unavailable("stats sink closed the connection")
            self._in += data
            read = len(data) == 65536
        while len(self._in) >= wire.HEADER_LENGTH:
            header = wire.decode_header(bytes(self._in[:wire.HEADER_LENGTH]))
            end = wire.HEADER_LENGTH + header.length
            if len(self._in) < end:
                break
            resp = ttrpc_pb2.Response.FromString(bytes(self._in[wire.HEADER_LENGTH:end]))
            del self._in[:end]
            self._outstanding = max(0, self._outstanding - 1)
            if resp.status.code != 0:
                raise error_from_status(resp.status.code, resp.status.message)
            self.failures = 0

    def _fail(self, exc: Exception) -> None:
        self.failures += 1
        log.debug("stats push failed (%d in a row): %s", self.failures, exc)
        self.close()
        if self.failures >= MAX_FAILURES:
            self.on_lost()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._out, self._in, self._outstanding = None, b"", bytearray(), 0


class _Sampler:
    """One container's timer: a plain callback on wall-clock multiples of the interval (so a
    host's containers are sampled together and the daemon handles them in one go), the first at
    once. A parked task waits for the init's exit to send the final sample."""

    def __init__(self, service: StatsService, container: Container, interval_ms: int) -> None:
        self.service = service
        self.container = container
        self.interval = interval_ms / 1000
        self.seq = 0
        self.reader: CgroupReader | None = None
        self._last = 0.0  # wall time of the last sample
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.Handle | None = self._loop.call_soon(self._tick)
        self.exit_waiter = self._loop.create_task(self._final(), name=f"stats {container.id}")

    def set_interval(self, interval_ms: int) -> None:
        self.interval = interval_ms / 1000
        if self._timer is not None:
            self._timer.cancel()
            self._schedule()

    def _schedule(self) -> None:
        now = time.time()
        due = (now // self.interval + 1) * self.interval
        if due - self._last < self.interval / 2:  # just sampled (the first one, at once): skip a beat
            due += self.interval
        self._timer = self._loop.call_later(due - now, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.container.init.exited:
            return  # the final sample is on its way (see _final)
        try:
            self.service.sink.push(self.read())
        except (DockyardError, OSError) as exc:
            log.warning("container %s: reading stats: %s", self.container.id, exc)
        self._schedule()

    def read(self, end: bool = False) -> pb.Sample:
        c = self.container
        self.seq += 1
        self._last = time.time()
        sample = pb.Sample(id=c.id, namespace=c.namespace, seq=self.seq, end=end)
        sample.timestamp.FromNanoseconds(int(self._last * 1e9))
        if c.cgroup is not None:
            try:
                if self.reader is None:
                    self.reader = CgroupReader(c.cgroup)
                self.reader.fill(sample)
            except (DockyardError, OSError) as exc:
                # Only an end marker may come without stats (the cgroup is going away with it).
                if not end:
                    raise
                log.debug("container %s: final stats unreadable: %s", c.id, exc)
                sample = pb.Sample(id=c.id, namespace=c.namespace, seq=self.seq, end=end,
                                   timestamp=sample.timestamp)
        return sample

    async def _final(self) -> None:
        try:
            await self.container.init.wait()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            await self.service.sink.push_final(self.read(end=True))
        finally:
            self._release()
            self.service._ended(self)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.exit_waiter.cancel()
        self._release()

    def _release(self) -> None:
        if self.reader is not None:
            self.reader.close()  # the descriptors must not outlive the sampler
            self.reader = None


class StatsService:
    """dockyard.shim.v1.Stats over the shim's containers (the Task service's dict, shared)."""

    def __init__(self, namespace: str, containers: Mapping[str, Container], address: str) -> None:
        self.containers = containers
        self.sink = _Sink(address, namespace, self._lost)
        self.samplers: dict[str, _Sampler] = {}

    async def Watch(self, req: pb.WatchRequest, ctx: RequestContext) -> empty_pb2.Empty:
        c = self.containers.get(req.id)
        if c is None:
            raise NotFound("container not created")
        interval = req.interval_ms or 1000
        if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
            raise InvalidArgument(f"interval_ms {interval} is outside {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
        self.sink.failures = 0
        current = self.samplers.get(req.id)
        if current is not None and current.container is c and not current.exit_waiter.done():
            if current.interval != interval / 1000:
                current.set_interval(interval)
            return EMPTY
        if current is not None:
            current.stop()
        self.samplers[req.id] = _Sampler(self, c, interval)
        return EMPTY

    def limits_changed(self, cid: str) -> None:
        """The Task service updated `cid`'s resources: its sampler re-reads the limits."""
        sampler = self.samplers.get(cid)
        if sampler is not None and sampler.reader is not None:
            sampler.reader.limits_changed()

    async def Unwatch(self, req: pb.UnwatchRequest, ctx: RequestContext) -> empty_pb2.Empty:
        sampler = self.samplers.pop(req.id, None)
        if sampler is not None:
            sampler.stop()
        self._maybe_disconnect()
        return EMPTY

    def _ended(self, sampler: _Sampler) -> None:
        if self.samplers.get(sampler.container.id) is sampler:
            del self.samplers[sampler.container.id]
        self._maybe_disconnect()

    def _maybe_disconnect(self) -> None:
        if not self.samplers:
            self.sink.close()  # nothing to push: no connection held open for nothing

    def _lost(self) -> None:
        log.warning("stats: the daemon does not take samples (%d failures): stopping %d sampler(s)",
                    self.sink.failures, len(self.samplers))
        samplers, self.samplers = self.samplers, {}
        for s in samplers.values():
            s.stop()

    async def close(self) -> None:
        """Shim exit: stop every sampler and the connection."""
        samplers, self.samplers = self.samplers, {}
        for s in samplers.values():
            s.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await s.exit_waiter
        self.sink.close()
