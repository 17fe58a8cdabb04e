"""The runtime's side of stats streams: shims' samplers on, off, and their samples in.

`ShimSamplerControl` is the hub's `SamplerControl`: `dockyard.shim.v1.Stats/Watch` and `Unwatch`
on a task's shim connection. A shim that does not speak our extension (containerd's own
`containerd-shim-runc-v2`, answering UNIMPLEMENTED) is polled instead: the daemon calls the
Task API's one-shot `Stats` at the interval and turns containerd's cgroup Metrics into samples,
so streams cover every runtime (at the daemon's cost, not the shim's).

`StatsSink` serves `dockyard.shim.v1.StatsSink/Push` on the daemon's ttrpc endpoint (next to the
shims' event forwarding) and hands each sample to the hub, still serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from google.protobuf import empty_pb2

from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1pb
from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as v2pb
from dockyard_api.dockyard.shim.v1 import stats_pb2 as pb
from dockyard_common.errors import DockyardError, NotFound, Unimplemented
from dockyard_common.ttrpc import RequestContext, inline
from supervisor.filters import Adaptor
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.containers import adaptor as container_adaptor
from supervisor.network.counters import Counters
from supervisor.network.wiring import ContainerNetworks
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.task import Task
from supervisor.runtime.types import Status
from supervisor.stats import Describe, NetworkCounters, Sample, StatsHub

log = logging.getLogger("dockyard.stats")

CALL_TIMEOUT = 5.0
UNLIMITED = 2**64 - 1
EMPTY = empty_pb2.Empty()
_V1_UNLIMITED_ABOVE = 1 << 62


def to_sample(s: pb.Sample) -> Sample:
    return Sample(s.namespace, s.id, s.timestamp.ToNanoseconds(), s.seq, s.end, s.SerializeToString())


class StatsSink:
    """dockyard.shim.v1.StatsSink: Push only."""

    def __init__(self, hub: StatsHub) -> None:
        self.hub = hub

    @inline  # a hundred a second: answered in the connection's read loop, no task each
    def Push(self, request: pb.Sample, ctx: RequestContext) -> empty_pb2.Empty:
        self.hub.push(to_sample(request))
        return EMPTY


class ShimSamplerControl:
    def __init__(self, manager: TaskManager, hub: StatsHub) -> None:
        self.manager = manager
        self.hub = hub
        self._pollers: dict[tuple[str, str], _Poller] = {}

    async def watch(self, namespace: str, cid: str, interval_ms: int) -> None:
        task = self.manager.get(namespace, cid)
        poller = self._pollers.get((namespace, cid))
        if poller is not None and poller.task is task:
            poller.interval = interval_ms / 1000
            return
        try:
            await task.watch_stats(interval_ms, timeout=CALL_TIMEOUT)
        except Unimplemented:
            log.info("task %s/%s: its shim has no stats stream; polling Task.Stats instead", namespace, cid)
            self._stop_poller(namespace, cid)
            poller = _Poller(task, interval_ms, self.hub)
            self._pollers[(namespace, cid)] = poller
            poller.job.add_done_callback(lambda _j: self._forget(namespace, cid, poller))

    def _forget(self, namespace: str, cid: str, poller: _Poller) -> None:
        if self._pollers.get((namespace, cid)) is poller:
            del self._pollers[(namespace, cid)]

    async def unwatch(self, namespace: str, cid: str) -> None:
        if self._stop_poller(namespace, cid):
            return
        try:
            task = self.manager.get(namespace, cid)
        except NotFound:
            return  # its shim went with it
        await task.unwatch_stats(timeout=CALL_TIMEOUT)

    def _stop_poller(self, namespace: str, cid: str) -> bool:
        poller = self._pollers.pop((namespace, cid), None)
        if poller is None:
            return False
        poller.job.cancel()
        return True

    def close(self) -> None:
        for poller in self._pollers.values():
            poller.job.cancel()
        self._pollers.clear()


class _Poller:
    """Samples for a shim without our extension, from the Task API's one-shot Stats."""

    def __init__(self, task: Task, interval_ms: int, hub: StatsHub) -> None:
        self.task = task
        self.interval = interval_ms / 1000
        self.hub = hub
        self.seq = 0
        self.job = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            await self._poll()
        except DockyardError as exc:  # the shim went away: the task manager ends the source
            log.debug("stats poller of %s/%s: %s", self.task.namespace, self.task.id, exc)

    async def _poll(self) -> None:
        task = self.task
        while True:
            state = await task.state(timeout=CALL_TIMEOUT)
            end = state.status == Status.STOPPED
            sample = pb.Sample(id=task.id, namespace=task.namespace, seq=self.seq + 1, end=end)
            sample.timestamp.FromNanoseconds(time.time_ns())
            with contextlib.suppress(DockyardError):
                metrics = await task.stats(timeout=CALL_TIMEOUT)
                if metrics is not None:
                    metrics_into_sample(metrics.type_url, metrics.value, sample)
            self.seq += 1
            self.hub.push(to_sample(sample))
            if end:
                return
            # On wall-clock multiples of the interval, as our shims sample.
            now = time.time()
            delay = (now // self.interval + 1) * self.interval - now
            await asyncio.sleep(delay if delay >= self.interval / 2 else delay + self.interval)


def metrics_into_sample(type_url: str, value: bytes, sample: pb.Sample) -> None:
    """containerd's cgroup Metrics (io.containerd.cgroups.v1/v2.Metrics) into a Sample's fields."""
    name = type_url.removeprefix("type.googleapis.com/")
    if name == v1pb.Metrics.DESCRIPTOR.full_name:
        m1 = v1pb.Metrics.FromString(value)
        sample.cgroup_version = 1
        u, t = m1.cpu.usage, m1.cpu.throttling
        sample.cpu.usage_total_ns, sample.cpu.usage_user_ns, sample.cpu.usage_system_ns = u.total, u.user, u.kernel
        sample.cpu.throttling_periods, sample.cpu.throttled_periods, sample.cpu.throttled_time_ns = (
            t.periods, t.throttled_periods, t.throttled_time)
        mem = m1.memory
        limit = mem.usage.limit if mem.usage.limit <= _V1_UNLIMITED_ABOVE else UNLIMITED
        sample.memory.usage, sample.memory.limit, sample.memory.max_usage, sample.memory.failcnt = (
            mem.usage.usage, limit, mem.usage.max, mem.usage.failcnt)
        sample.memory.cache, sample.memory.rss = mem.cache, mem.rss
        sample.memory.inactive_file = mem.total_inactive_file
        sample.memory.swap_usage = max(0, mem.swap.usage - mem.usage.usage)
        sample.memory.oom_kills = m1.memory_oom_control.oom_kill
        sample.pids.current, sample.pids.limit = m1.pids.current, m1.pids.limit
        for e in m1.blkio.io_service_bytes_recursive:
            if e.op.lower() == "read":
                sample.blkio.read_bytes += e.value
            elif e.op.lower() == "write":
                sample.blkio.write_bytes += e.value
        for e in m1.blkio.io_serviced_recursive:
            if e.op.lower() == "read":
                sample.blkio.read_ops += e.value
            elif e.op.lower() == "write":
                sample.blkio.write_ops += e.value
    elif name == v2pb.Metrics.DESCRIPTOR.full_name:
        m2 = v2pb.Metrics.FromString(value)
        sample.cgroup_version = 2
        c = m2.cpu
        sample.cpu.usage_total_ns, sample.cpu.usage_user_ns, sample.cpu.usage_system_ns = (
            c.usage_usec * 1000, c.user_usec * 1000, c.system_usec * 1000)
        sample.cpu.throttling_periods, sample.cpu.throttled_periods, sample.cpu.throttled_time_ns = (
            c.nr_periods, c.nr_throttled, c.throttled_usec * 1000)
        mm = m2.memory
        sample.memory.usage, sample.memory.limit = mm.usage, mm.usage_limit
        sample.memory.cache, sample.memory.rss, sample.memory.inactive_file = mm.file, mm.anon, mm.inactive_file
        sample.memory.swap_usage = mm.swap_usage
        sample.memory.failcnt, sample.memory.oom_kills = m2.memory_events.max, m2.memory_events.oom_kill
        sample.pids.current, sample.pids.limit = m2.pids.current, m2.pids.limit
        for d in m2.io.usage:
            sample.blkio.read_bytes += d.rbytes
            sample.blkio.write_bytes += d.wbytes
            sample.blkio.read_ops += d.rios
            sample.blkio.write_ops += d.wios


def describe_from(store: ContainerStore) -> Describe:
    """The hub's view of a container for stream filters: id, image, runtime.name, labels."""

    async def describe(namespace: str, cid: str) -> Adaptor:
        return container_adaptor(await store.get(namespace, cid))

    return describe


def network_counters_from(manager: TaskManager, networks: ContainerNetworks) -> NetworkCounters:
    """The hub's reader of a container's network counters: through its task's init pid."""

    def counters(namespace: str, cid: str) -> Mapping[str, Counters] | None:
        try:
            pid = manager.get(namespace, cid).pid
        except NotFound:
            return None
        return networks.counters(namespace, cid, pid)

    return counters
