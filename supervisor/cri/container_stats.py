"""ContainerStats and ListContainerStats: what running containers use now (their task's cgroup
as the shim reads it, their writable layer).

Shims are asked concurrently, each within SHIM_DEADLINE (supervisor/cri/shimcalls.py, as the
metrics do): a container whose shim does not answer in time, or that stopped meanwhile, is left
out of a listing (containerd leaves out a task whose metrics fail); ContainerStats of it is
DeadlineExceeded (Unavailable for a shim that is gone).

    usage = await ctrs.stats(cid)                  # ContainerUsage
    usages = await ctrs.list_stats(pod_id=pod)     # the running ones that answered
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dockyard_api.dockyard.shim.v1 import stats_pb2 as stats_pb
from dockyard_common.errors import DockyardError, NotFound
from supervisor.cri.container_records import Found
from supervisor.cri.container_status import ContainerViews
from supervisor.cri.container_types import ContainerState, ContainerUsage, CriContainer
from supervisor.cri.sandbox import SandboxDeps
from supervisor.runtime.fanout import SHIM_DEADLINE, each_within
from supervisor.runtime.stats import UNLIMITED, metrics_into_sample

log = logging.getLogger("dockyard.cri")


class ContainerMeasures(ContainerViews):
    shim_deadline = SHIM_DEADLINE

    async def stats(self, cid: str) -> ContainerUsage:
        """ContainerStats: NotFound, or DeadlineExceeded when its shim does not answer in time."""
        found = await self._find(cid)

        async def ask(f: Found) -> tuple[CriContainer, stats_pb.Sample | None]:
            view = self._view(f, await self._task_state(f.record.id))
            return view, await task_sample(self.d, self.namespace, f.record.id, self.shim_deadline)

        (answer,) = await each_within([found], ask, self.shim_deadline, what=lambda f: f"container {f.record.id}")
        if isinstance(answer, DockyardError):
            raise answer
        return await self._usage(*answer)

    async def list_stats(self, cid: str = "", pod_id: str = "", selector: Mapping[str, str] | None = None
                         ) -> builtins.list[ContainerUsage]:
        """The usage of every container that runs (a task's cgroup to read), filtered as `list`."""
        return await self.usages([c for c in await self.list(cid, None, pod_id, selector)
                                  if c.state == ContainerState.RUNNING])

    async def usages(self, containers: Sequence[CriContainer]) -> builtins.list[ContainerUsage]:
        """The usage of each container, their shims asked concurrently; one whose shim failed or
        did not answer in time is left out."""
        samples = await each_within(containers, self._sample, self.shim_deadline, what=lambda c: f"container {c.id}")
        answered = []
        for c, sample in zip(containers, samples, strict=True):
            if isinstance(sample, DockyardError):
                log.debug("stats of container %s left out: %s", c.id, sample)
            else:
                answered.append(self._usage(c, sample))
        return list(await asyncio.gather(*answered))

    async def usage(self, c: CriContainer) -> ContainerUsage:
        """What the container uses now (its task's cgroup, its writable layer); DeadlineExceeded
        when its shim does not answer in time."""
        return await self._usage(c, await self._sample(c))

    async def _sample(self, c: CriContainer) -> stats_pb.Sample | None:
        return await task_sample(self.d, self.namespace, c.id, self.shim_deadline)

    async def _usage(self, c: CriContainer, sample: stats_pb.Sample | None) -> ContainerUsage:
        now = time.time_ns()
        fields: dict[str, Any] = {}
        if sample is not None:
            mem = sample.memory
            working_set = max(0, mem.usage - mem.inactive_file)
            fields.update(cpu_usage_ns=sample.cpu.usage_total_ns, memory_working_set=working_set,
                          memory_usage=mem.usage, memory_rss=mem.rss, process_count=sample.pids.current)
            if 0 < mem.limit < UNLIMITED:
                fields["memory_available"] = max(0, mem.limit - working_set)
        with contextlib.suppress(NotFound):
            usage = await self.d.snapshots.usage(self.namespace, self.snapshotter, c.id)
            fields.update(writable_bytes=usage.size, writable_inodes=usage.inodes)
        return ContainerUsage(c, now, fs_mountpoint=str(self.d.images.snapshotter_root), **fields)


async def task_sample(deps: SandboxDeps, namespace: str, cid: str,
                      timeout: float = SHIM_DEADLINE) -> stats_pb.Sample | None:
    """The cgroup metrics of task `cid` as its shim reports them within `timeout` seconds
    (DeadlineExceeded after); None without a task (or metrics)."""
    try:
        metrics = await deps.tasks.get(namespace, cid).stats(timeout)
    except NotFound:
        return None
    if metrics is None:
        return None
    sample = stats_pb.Sample()
    metrics_into_sample(metrics.type_url, metrics.value, sample)
    return sample
