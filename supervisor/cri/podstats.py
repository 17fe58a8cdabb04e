"""CRI pod stats (PodSandboxStats, ListPodSandboxStats): what a ready pod uses, with its
containers' stats inside.

CPU, memory and the process count are the sums over the pod's tasks (the pause process's and
each running container's), as each shim reads its task's cgroup: that is what the pod's cgroup
holds (kubelet's cgroup parent, when it gives one, has exactly those children), and it needs no
cgroup reader in the daemon besides the shims' (v1 and v2 alike) nor a pod cgroup when kubelet
gave no parent. The network is the sandbox's namespace's interface counters, read through the
pause process (`ContainerNetworks.counters`, as `dock stats`); eth0, the CNI's interface, is the
default one. A host-network pod reports no network: the host's counters are not the pod's.

Shims are asked concurrently, each within a deadline (supervisor/cri/shimcalls.py): a container
whose shim does not answer in time is left out of its pod's stats and sums, a pause whose shim
does not leaves the pod's CPU and memory unknown in a listing (PodSandboxStats of that pod is
DeadlineExceeded).

    stats = PodStats(containers)
    usage = await stats.stats(pod_id)          # PodUsage; FailedPrecondition when not ready
    usages = await stats.list("", {"app": "web"})
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockyard_api.dockyard.shim.v1 import stats_pb2 as stats_pb
from dockyard_common.errors import DockyardError, FailedPrecondition, NotFound
from supervisor.cri.container_stats import task_sample
from supervisor.cri.container_types import ContainerState, ContainerUsage
from supervisor.cri.containers import CriContainers
from supervisor.cri.sandbox_types import NamespaceMode, Sandbox, SandboxState
from supervisor.network.counters import Counters
from supervisor.runtime.fanout import each_within

log = logging.getLogger("dockyard.cri")

DEFAULT_INTERFACE = "eth0"  # the interface CNI makes in the pod (containerd's default too)


@dataclass
class PodUsage:
    sandbox: Sandbox
    timestamp_ns: int
    cpu_usage_ns: int | None = None  # None: no task could be read
    memory_working_set: int | None = None
    memory_usage: int | None = None
    memory_rss: int | None = None
    process_count: int | None = None
    interfaces: dict[str, Counters] | None = None  # None: no network of its own to read
    containers: list[ContainerUsage] = field(default_factory=list)

    @property
    def default_interface(self) -> str:
        names = sorted(self.interfaces or {})
        return DEFAULT_INTERFACE if DEFAULT_INTERFACE in names else (names[0] if names else "")


class PodStats:
    def __init__(self, containers: CriContainers) -> None:
        self.c = containers
        self.pods = containers.pods

    async def stats(self, pod_id: str) -> PodUsage:
        """The pod's usage; NotFound for an unknown pod, FailedPrecondition for one not ready,
        DeadlineExceeded when its pause's shim does not answer in time."""
        pod = await self.pods.status(pod_id)
        if pod.state != SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready: it has no processes to measure")
        containers, (sample,) = await asyncio.gather(self.c.list_stats(pod_id=pod.id), self._pause_samples([pod]))
        if isinstance(sample, DockyardError):
            raise sample
        return self._usage(pod, containers, sample)

    async def list(self, pod_id: str = "", selector: Mapping[str, str] | None = None) -> builtins.list[PodUsage]:
        """The usage of every ready pod matching the filters (an id or prefix, labels)."""
        pods = await self.pods.list(pod_id, SandboxState.READY, selector)
        if not pods:
            return []
        # One listing of the containers for all pods (each lists every record of the namespace);
        # only the chosen pods' running ones are measured.
        wanted = {p.id for p in pods}
        running = [c for c in await self.c.list(state=ContainerState.RUNNING) if c.pod_id in wanted]
        containers, samples = await asyncio.gather(self.c.usages(running), self._pause_samples(pods))
        out = []
        for pod, sample in zip(pods, samples, strict=True):
            if isinstance(sample, DockyardError):
                log.debug("stats of pod sandbox %s: its pause left out: %s", pod.id, sample)
                sample = None
            try:
                out.append(self._usage(pod, containers, sample))
            except NotFound:  # stopped or removed meanwhile: not listed, as it would not be now
                continue
        return out

    async def _pause_samples(self, pods: builtins.list[Sandbox]
                             ) -> builtins.list[stats_pb.Sample | DockyardError | None]:
        deadline = self.c.shim_deadline
        return await each_within(pods, lambda p: task_sample(self.c.d, self.c.namespace, p.id, deadline), deadline,
                                 what=lambda p: f"pod sandbox {p.id}")

    def _usage(self, pod: Sandbox, all_containers: builtins.list[ContainerUsage],
               sample: stats_pb.Sample | None) -> PodUsage:
        d, ns = self.c.d, self.c.namespace
        containers = [u for u in all_containers if u.container.pod_id == pod.id]
        usage = PodUsage(pod, time.time_ns(), containers=containers)
        if sample is not None:  # the pause process's
            mem = sample.memory
            usage.cpu_usage_ns = sample.cpu.usage_total_ns
            usage.memory_working_set = max(0, mem.usage - mem.inactive_file)
            usage.memory_usage, usage.memory_rss = mem.usage, mem.rss
            usage.process_count = sample.pids.current
        for c in containers:
            usage.cpu_usage_ns = _plus(usage.cpu_usage_ns, c.cpu_usage_ns)
            usage.memory_working_set = _plus(usage.memory_working_set, c.memory_working_set)
            usage.memory_usage = _plus(usage.memory_usage, c.memory_usage)
            usage.memory_rss = _plus(usage.memory_rss, c.memory_rss)
            usage.process_count = _plus(usage.process_count, c.process_count)
        if pod.config.namespaces.network != NamespaceMode.NODE and pod.pid:
            usage.interfaces = d.networks.counters(ns, pod.id, pod.pid)
        return usage


def _plus(total: int | None, part: int | None) -> int | None:
    """A sum of what could be read (None while nothing could)."""
    return total if part is None else (total or 0) + part
