"""Live container stats in the SDK: `client.stats.stream(...)`, over dockyard.stats.v1.Stats.

    async for s in client.stats.stream(all=True, interval=1.0):
        print(s.id, s.memory.usage if s.memory else "-", "end" if s.end else "")

One call streams one, several or all containers of the client's namespace: those named by id,
those a containerd filter matches (`labels."app"==web`), or all. Containers whose task starts
later join; one whose task exits sends a final sample with `end` set. Each sample carries the
stream's `dropped` count (samples the daemon discarded because this reader fell behind).

The stream survives a daemon restart: when the daemon goes away (UNAVAILABLE) the iterator waits
for it to come back (up to `reconnect_timeout` seconds) and subscribes again; `dropped` keeps
counting across, and a sample's `reconnected` flag marks the first one after each reconnection.
Any other error (an unknown id, a bad filter) is raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from dockyard_api.dockyard.shim.v1 import stats_pb2 as shim_pb
from dockyard_api.dockyard.stats.v1 import stats_pb2 as pb
from dockyard_api.dockyard.stats.v1 import stats_pb2_grpc as pb_grpc
from dockyard_common.errors import DeadlineExceeded, DockyardError, Unavailable

if TYPE_CHECKING:
    from dock.client import Client

UNLIMITED = 2**64 - 1
RETRY_FIRST = 0.1  # seconds before the first attempt to resubscribe, doubling up to RETRY_MAX
RETRY_MAX = 2.0


@dataclass
class CPUStats:
    usage_total_ns: int
    usage_user_ns: int
    usage_system_ns: int
    throttling_periods: int
    throttled_periods: int
    throttled_time_ns: int


@dataclass
class MemoryStats:
    usage: int
    limit: int  # UNLIMITED when there is none
    cache: int
    rss: int
    max_usage: int
    failcnt: int
    oom_kills: int
    inactive_file: int
    swap_usage: int

    @property
    def used(self) -> int:
        """What `docker stats` shows as MEM USAGE: usage without the reclaimable inactive file cache."""
        return max(0, self.usage - self.inactive_file)


@dataclass
class PidsStats:
    current: int
    limit: int  # 0 when unlimited


@dataclass
class BlockIOStats:
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass
class PressureLine:
    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass
class Pressure:
    some: PressureLine
    full: PressureLine | None


@dataclass
class InterfaceStats:
    """One network interface of the container (loopback left out), counted since it was made."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass
class StatsSample:
    id: str
    namespace: str
    timestamp: datetime
    timestamp_ns: int
    seq: int
    cgroup_version: int
    cpu: CPUStats | None
    memory: MemoryStats | None
    pids: PidsStats | None
    blkio: BlockIOStats | None
    cpu_pressure: Pressure | None
    memory_pressure: Pressure | None
    io_pressure: Pressure | None
    end: bool
    dropped: int  # samples this stream lost so far because we read too slowly
    received_ns: int = 0  # time.time_ns() when this client got it
    reconnected: bool = False  # the first sample after the stream was re-established
    # The container's interfaces when it has a network of its own (`dock run`'s default bridge,
    # a named network, another container's); None otherwise (only lo, or the host's network).
    networks: list[InterfaceStats] | None = None

    @property
    def network_io(self) -> tuple[int, int] | None:
        """(rx bytes, tx bytes) summed over the interfaces; None without a network of its own."""
        if self.networks is None:
            return None
        return sum(i.rx_bytes for i in self.networks), sum(i.tx_bytes for i in self.networks)


def _line(p: shim_pb.PressureLine) -> PressureLine:
    return PressureLine(p.avg10, p.avg60, p.avg300, p.total_us)


def _pressure(msg: shim_pb.Sample, name: str) -> Pressure | None:
    if not msg.HasField(name):
        return None
    p: shim_pb.Pressure = getattr(msg, name)
    return Pressure(_line(p.some), _line(p.full) if p.HasField("full") else None)


def decode_network(msg: pb.NetworkStats) -> list[InterfaceStats]:
    return [InterfaceStats(i.name, i.rx_bytes, i.rx_packets, i.rx_errors, i.rx_dropped, i.tx_bytes, i.tx_packets,
                           i.tx_errors, i.tx_dropped) for i in msg.interfaces]


def decode_sample(msg: shim_pb.Sample, dropped: int = 0, network: pb.NetworkStats | None = None) -> StatsSample:
    c, m, p, b = msg.cpu, msg.memory, msg.pids, msg.blkio
    ns = msg.timestamp.ToNanoseconds()
    return StatsSample(
        id=msg.id, namespace=msg.namespace, timestamp=datetime.fromtimestamp(ns / 1e9, UTC), timestamp_ns=ns,
        seq=msg.seq, cgroup_version=msg.cgroup_version,
        cpu=CPUStats(c.usage_total_ns, c.usage_user_ns, c.usage_system_ns, c.throttling_periods,
                     c.throttled_periods, c.throttled_time_ns) if msg.HasField("cpu") else None,
        memory=MemoryStats(m.usage, m.limit, m.cache, m.rss, m.max_usage, m.failcnt, m.oom_kills, m.inactive_file,
                           m.swap_usage) if msg.HasField("memory") else None,
        pids=PidsStats(p.current, p.limit) if msg.HasField("pids") else None,
        blkio=BlockIOStats(b.read_bytes, b.write_bytes, b.read_ops, b.write_ops) if msg.HasField("blkio") else None,
        cpu_pressure=_pressure(msg, "cpu_pressure"), memory_pressure=_pressure(msg, "memory_pressure"),
        io_pressure=_pressure(msg, "io_pressure"), end=msg.end, dropped=dropped, received_ns=time.time_ns(),
        networks=decode_network(network) if network is not None else None)


def cpu_percent(prev: StatsSample | None, cur: StatsSample) -> float | None:
    """CPU use between two samples of one container, in percent of one CPU (as `docker stats`
    shows it: 200% is two CPUs busy). None without two samples that carry CPU stats."""
    if prev is None or prev.cpu is None or cur.cpu is None:
        return None
    wall = cur.timestamp_ns - prev.timestamp_ns
    if wall <= 0:
        return None
    used = cur.cpu.usage_total_ns - prev.cpu.usage_total_ns
    return max(0.0, used / wall * 100)


class StatsAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.StatsStub(client.channel)

    async def stream(self, *ids: str, filters: Sequence[str] = (), all: bool = False, interval: float = 1.0,
                     reconnect: bool = True, reconnect_timeout: float = 60.0) -> AsyncGenerator[StatsSample, None]:
        """Samples of the selected containers until the caller stops iterating.

        With no ids and no filters, `all` is implied. `interval` is in seconds (at least 0.1).
        """
        req = pb.StreamRequest(ids=list(ids), filters=list(filters), all=all or not (ids or filters),
                               interval_ms=max(1, round(interval * 1000)))
        dropped_before = 0  # what earlier connections of this stream dropped
        reconnected = False
        pause = RETRY_FIRST
        while True:
            call = self.stub.Stream(req, metadata=self.client.metadata(), wait_for_ready=reconnected)
            last_dropped = 0
            try:
                async for msg in call:
                    last_dropped, pause = msg.dropped, RETRY_FIRST
                    networks = {(n.id, n.seq): n for n in msg.networks}
                    for one in msg.samples:
                        sample = decode_sample(one, dropped_before + msg.dropped, networks.get((one.id, one.seq)))
                        sample.reconnected, reconnected = reconnected, False
                        yield sample
                return  # the daemon ended the stream without an error: nothing more will come
            except grpc.aio.AioRpcError as exc:
                err = self._error(exc)
                if not reconnect or not isinstance(err, Unavailable):
                    raise err from None
            finally:
                call.cancel()
            dropped_before += last_dropped
            reconnected = True
            # A daemon that is stopping may still accept a connection: do not spin on it.
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)
            await self._wait_for_daemon(reconnect_timeout)

    def _error(self, exc: grpc.aio.AioRpcError) -> DockyardError:
        try:
            return self.client._error(exc)
        except DockyardError as err:  # _error raises when it found a sharper reason (no socket)
            return err

    async def _wait_for_daemon(self, timeout: float) -> None:
        """Until the channel connects again (gRPC redials with its own backoff)."""
        try:
            async with asyncio.timeout(timeout):
                await self.client.channel.channel_ready()
        except TimeoutError:
            raise DeadlineExceeded(
                f"stats stream: dockyardd at {self.client.address} did not come back within {timeout:.0f}s") from None
