"""CRI pod metrics (ListMetricDescriptors, ListPodSandboxMetrics): cadvisor's `container_*`
series, as kubelet's CRI stats provider republishes them on /metrics/cadvisor.

Words: a *descriptor* names a series, says what it measures and its label keys; a *metric* is one
value of a series with one value per label key, in the descriptor's order. Every series has the
keys pod, namespace, container, id, image (containerd 2.x's, in its order) and some one more
(interface, device, pagesize...). The descriptors are fixed (kubelet reads them once), and every
metric given names one of them with exactly its keys: kubelet drops a metric that does not.

Per running container: its cgroup as its shim reads it (cpu, memory, processes, block I/O,
hugetlb; cgroup v1 or v2), its processes' /proc entries (threads, open files, sockets, the
init's open-files limit), its writable layer and the snapshotter's filesystem, and the limits of
its stored spec. Per pod (label container "", id the pod's): the network counters of the pod's
namespace, read through the sandbox process (as PodSandboxStats; none for a host-network pod).
Values are unsigned integers, so seconds are whole seconds, as containerd's; a limit that is not
set is 0. Metrics are live, so their timestamp is 0 as the CRI asks.

Shims are asked concurrently (at most CONCURRENCY at a time), each within SHIM_DEADLINE
(supervisor/cri/shimcalls.py, as the CRI stats): a stuck or vanished shim leaves its container out
of the answer instead of stalling the call.

    collector = PodMetricsCollector(containers)
    for pod in await collector.list():            # ready pods only
        pod.pod_id, pod.metrics, pod.containers   # ContainerMetrics(container_id, metrics)
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1pb
from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as v2pb
from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.jsonutil import json_value
from dockyard_common.types import AnyValue
from supervisor.cri.container_types import ContainerState, CriContainer
from supervisor.cri.containers import CriContainers
from supervisor.cri.sandbox_types import NamespaceMode, Sandbox, SandboxState
from supervisor.runtime.fanout import CONCURRENCY, SHIM_DEADLINE, each_within

log = logging.getLogger("dockyard.cri.metrics")

_UNLIMITED_ABOVE = 1 << 62  # cgroup "no limit" values (v1's page-rounded LONG_MAX, v2's "max")

BASE_KEYS = ("pod", "namespace", "container", "id", "image")


class MetricKind(IntEnum):
    COUNTER = 0  # the CRI's MetricType values
    GAUGE = 1


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    kind: MetricKind
    extra_keys: tuple[str, ...] = ()

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_KEYS + self.extra_keys


@dataclass(frozen=True)
class Metric:
    name: str
    kind: MetricKind
    label_values: tuple[str, ...]
    value: int
    timestamp_ns: int = 0  # 0: gathered live


@dataclass
class ContainerMetrics:
    container_id: str
    metrics: list[Metric] = field(default_factory=list)


@dataclass
class PodMetrics:
    pod_id: str
    metrics: list[Metric] = field(default_factory=list)
    containers: list[ContainerMetrics] = field(default_factory=list)


C, G = MetricKind.COUNTER, MetricKind.GAUGE
_NET, _DEV = ("interface",), ("device",)
DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor("container_last_seen", "Last time a container was seen by the exporter", G),
    Descriptor("container_start_time_seconds", "Start time of the container since unix epoch in seconds", G),
    Descriptor("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", C),
    Descriptor("container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", C),
    Descriptor("container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", C),
    Descriptor("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", C),
    Descriptor("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", C),
    Descriptor("container_cpu_cfs_throttled_seconds_total",
               "Total time duration the container has been throttled.", C),
    Descriptor("container_memory_usage_bytes",
               "Current memory usage in bytes, including all memory regardless of when it was accessed", G),
    Descriptor("container_memory_max_usage_bytes",
               "Maximum memory usage recorded in bytes (0 where the cgroup keeps no peak)", G),
    Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", G),
    Descriptor("container_memory_rss", "Size of RSS in bytes.", G),
    Descriptor("container_memory_cache", "Number of bytes of page cache memory.", G),
    Descriptor("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", G),
    Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", G),
    Descriptor("container_memory_swap", "Container swap usage in bytes.", G),
    Descriptor("container_memory_failcnt", "Number of memory usage hits limits", C),
    Descriptor("container_memory_failures_total", "Cumulative count of memory allocation failures.", C,
               ("failure_type", "scope")),
    Descriptor("container_oom_events_total", "Count of out of memory events observed for the container", C),
    Descriptor("container_network_receive_bytes_total", "Cumulative count of bytes received", C, _NET),
    Descriptor("container_network_receive_packets_total", "Cumulative count of packets received", C, _NET),
    Descriptor("container_network_receive_packets_dropped_total",
               "Cumulative count of packets dropped while receiving", C, _NET),
    Descriptor("container_network_receive_errors_total",
               "Cumulative count of errors encountered while receiving", C, _NET),
    Descriptor("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", C, _NET),
    Descriptor("container_network_transmit_packets_total", "Cumulative count of packets transmitted", C, _NET),
    Descriptor("container_network_transmit_packets_dropped_total",
               "Cumulative count of packets dropped while transmitting", C, _NET),
    Descriptor("container_network_transmit_errors_total",
               "Cumulative count of errors encountered while transmitting", C, _NET),
    Descriptor("container_fs_usage_bytes",
               "Number of bytes that are consumed by the container on this filesystem.", G, _DEV),
    Descriptor("container_fs_limit_bytes",
               "Number of bytes that can be consumed by the container on this filesystem.", G, _DEV),
    Descriptor("container_fs_inodes_total", "Number of Inodes", G, _DEV),
    Descriptor("container_fs_inodes_free", "Number of available Inodes", G, _DEV),
    Descriptor("container_fs_reads_bytes_total", "Cumulative count of bytes read", C, _DEV),
    Descriptor("container_fs_writes_bytes_total", "Cumulative count of bytes written", C, _DEV),
    Descriptor("container_fs_reads_total", "Cumulative count of reads completed", C, _DEV),
    Descriptor("container_fs_writes_total", "Cumulative count of writes completed", C, _DEV),
    Descriptor("container_blkio_device_usage_total", "Blkio device bytes usage", C,
               ("device", "major", "minor", "operation")),
    Descriptor("container_processes", "Number of processes running inside the container.", G),
    Descriptor("container_threads", "Number of threads running inside the container", G),
    Descriptor("container_threads_max",
               "Maximum number of threads allowed inside the container, infinity if value is zero", G),
    Descriptor("container_file_descriptors", "Number of open file descriptors for the container.", G),
    Descriptor("container_sockets", "Number of open sockets for the container.", G),
    Descriptor("container_ulimits_soft", "Soft ulimit values for the container root process (0: unlimited)", G,
               ("ulimit",)),
    Descriptor("container_spec_cpu_period", "CPU period of the container (0: not set)", G),
    Descriptor("container_spec_cpu_quota", "CPU quota of the container (0: not set)", G),
    Descriptor("container_spec_cpu_shares", "CPU share of the container (0: not set)", G),
    Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container (0: none)", G),
    Descriptor("container_spec_memory_reservation_limit_bytes",
               "Memory reservation limit for the container (0: none)", G),
    Descriptor("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container (0: none)", G),
    Descriptor("container_hugetlb_usage_bytes", "Hugepage usage in bytes", G, ("pagesize",)),
    Descriptor("container_hugetlb_max_usage_bytes", "Hugepage maximum usage in bytes", G, ("pagesize",)),
)
BY_NAME = {d.name: d for d in DESCRIPTORS}


class _Series:
    """The metrics of one container (or pod), each checked against its descriptor."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.out: list[Metric] = []

    def add(self, name: str, value: int, *extra: str) -> None:
        d = BY_NAME[name]
        assert len(extra) == len(d.extra_keys), f"{name} takes {d.extra_keys}, given {extra}"
        self.out.append(Metric(name, d.kind, self.labels + extra, max(0, int(value))))


@dataclass
class CgroupReading:
    """What a shim's cgroup metrics (v1 or v2) say, in cadvisor's terms."""

    cpu_ns: int = 0
    user_ns: int = 0
    system_ns: int = 0
    periods: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    usage: int = 0
    max_usage: int = 0
    working_set: int = 0
    rss: int = 0
    cache: int = 0
    kernel: int = 0
    mapped_file: int = 0
    swap: int = 0
    swap_limit: int = 0
    failcnt: int = 0
    faults: dict[tuple[str, str], int] = field(default_factory=dict)  # (failure_type, scope) -> count
    oom_kills: int = 0
    pids: int = 0
    pids_limit: int = 0
    io: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)  # (major, minor) -> counters
    hugetlb: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # pagesize -> (usage, max)


def _limit(value: int) -> int:
    return 0 if value >= _UNLIMITED_ABOVE else value


def cgroup_of(metrics: AnyValue) -> CgroupReading | None:
    """The shim's Metrics Any (io.containerd.cgroups.v1/v2.Metrics); None for another type."""
    name = metrics.type_url.removeprefix("type.googleapis.com/")
    g = CgroupReading()
    if name == v1pb.Metrics.DESCRIPTOR.full_name:
        m1 = v1pb.Metrics.FromString(metrics.value)
        u, t, mem = m1.cpu.usage, m1.cpu.throttling, m1.memory
        g.cpu_ns, g.user_ns, g.system_ns = u.total, u.user, u.kernel
        g.periods, g.throttled_periods, g.throttled_ns = t.periods, t.throttled_periods, t.throttled_time
        g.usage, g.max_usage, g.failcnt = mem.usage.usage, mem.usage.max, mem.usage.failcnt
        g.working_set = max(0, mem.usage.usage - mem.total_inactive_file)
        g.rss, g.cache, g.mapped_file, g.kernel = mem.total_rss, mem.total_cache, mem.total_mapped_file, \
            mem.kernel.usage
        g.swap = max(0, mem.swap.usage - mem.usage.usage)  # v1's swap entry is memory+swap
        g.swap_limit = _limit(mem.swap.limit)
        g.faults = {("pgfault", "container"): mem.pg_fault, ("pgfault", "hierarchy"): mem.total_pg_fault,
                    ("pgmajfault", "container"): mem.pg_maj_fault,
                    ("pgmajfault", "hierarchy"): mem.total_pg_maj_fault}
        g.oom_kills = m1.memory_oom_control.oom_kill
        g.pids, g.pids_limit = m1.pids.current, _limit(m1.pids.limit)
        for entries, kind in ((m1.blkio.io_service_bytes_recursive, "bytes"), (m1.blkio.io_serviced_recursive, "ios")):
            for e in entries:
                op = e.op.lower()
                if op in ("read", "write"):
                    dev = g.io.setdefault((e.major, e.minor), {})
                    dev[f"{op}_{kind}"] = dev.get(f"{op}_{kind}", 0) + e.value
        g.hugetlb = {h.pagesize: (h.usage, h.max) for h in m1.hugetlb}
    elif name == v2pb.Metrics.DESCRIPTOR.full_name:
        m2 = v2pb.Metrics.FromString(metrics.value)
        c, mm = m2.cpu, m2.memory
        g.cpu_ns, g.user_ns, g.system_ns = c.usage_usec * 1000, c.user_usec * 1000, c.system_usec * 1000
        g.periods, g.throttled_periods, g.throttled_ns = c.nr_periods, c.nr_throttled, c.throttled_usec * 1000
        g.usage, g.failcnt = mm.usage, m2.memory_events.max  # v2 keeps no peak in these metrics
        g.working_set = max(0, mm.usage - mm.inactive_file)
        g.rss, g.cache, g.mapped_file = mm.anon, mm.file, mm.file_mapped
        g.kernel = mm.kernel_stack + mm.slab + mm.sock
        g.swap, g.swap_limit = mm.swap_usage, _limit(mm.swap_limit)
        # v2's memory.stat counts the whole subtree: the container's scope is its hierarchy's.
        g.faults = {(kind, scope): value for kind, value in (("pgfault", mm.pgfault), ("pgmajfault", mm.pgmajfault))
                    for scope in ("container", "hierarchy")}
        g.oom_kills = m2.memory_events.oom_kill
        g.pids, g.pids_limit = m2.pids.current, _limit(m2.pids.limit)
        for d in m2.io.usage:
            g.io[(d.major, d.minor)] = {"read_bytes": d.rbytes, "write_bytes": d.wbytes, "read_ios": d.rios,
                                        "write_ios": d.wios}
        g.hugetlb = {h.pagesize: (h.current, None) for h in m2.hugetlb}
    else:
        return None
    return g


@dataclass(frozen=True)
class ProcessCounts:
    processes: int
    threads: int
    fds: int
    sockets: int
    nofile_soft: int | None  # the init's RLIMIT_NOFILE soft limit (0: unlimited)


def read_procs(pids: Iterable[int], init_pid: int) -> ProcessCounts:
    """Counts over the processes' /proc entries; a process gone meanwhile counts for nothing."""
    processes = threads = fds = sockets = 0
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
            thread_count = len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        processes += 1
        threads += thread_count
        fds += len(names)
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    sockets += 1
    return ProcessCounts(processes, threads, fds, sockets, _nofile_soft(init_pid))


def _nofile_soft(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files"):].split()[0]
                    return 0 if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class Filesystem:
    device: str  # the snapshotter's root: the mountpoint ContainerStats names for the writable layer
    size: int
    inodes: int
    inodes_free: int


def _statvfs(root: str) -> Filesystem | None:
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    return Filesystem(root, st.f_blocks * st.f_frsize, st.f_files, st.f_ffree)


_ShimAnswer = tuple[AnyValue | None, list[int]]  # the cgroup metrics, the pids


class PodMetricsCollector:
    def __init__(self, containers: CriContainers, deadline: float = SHIM_DEADLINE,
                 concurrency: int = CONCURRENCY) -> None:
        self.c = containers
        self.d = containers.d
        self.namespace = containers.namespace
        self.deadline = deadline
        self.concurrency = concurrency

    async def list(self) -> builtins.list[PodMetrics]:
        """The metrics of every ready pod and its running containers."""
        pods = await self.c.pods.list("", SandboxState.READY, None)
        if not pods:
            return []
        ready = {p.id for p in pods}
        running = [c for c in await self.c.list(state=ContainerState.RUNNING) if c.pod_id in ready]
        answers = await each_within(running, self._ask_shim, self.deadline, self.concurrency,
                                    what=lambda c: f"container {c.id}")
        answered: dict[str, _ShimAnswer] = {}
        for c, answer in zip(running, answers, strict=True):
            if isinstance(answer, DockyardError):
                # Stopped or removed meanwhile, or a shim that does not answer: left out this time.
                log.debug("metrics of container %s left out: %s", c.id, answer)
            else:
                answered[c.id] = answer
        fs = await asyncio.to_thread(_statvfs, str(self.d.images.snapshotter_root))
        return list(await asyncio.gather(*(
            self._pod(p, [(c, answered[c.id]) for c in running if c.pod_id == p.id and c.id in answered], fs)
            for p in pods)))

    async def _pod(self, pod: Sandbox, containers: builtins.list[tuple[CriContainer, _ShimAnswer]],
                   fs: Filesystem | None) -> PodMetrics:
        meta = pod.config.metadata
        base = (meta.name, meta.namespace)
        out = PodMetrics(pod.id)
        out.containers = list(await asyncio.gather(*(self._container(base, c, answer, fs)
                                                     for c, answer in containers)))
        if pod.config.namespaces.network != NamespaceMode.NODE and pod.pid:
            series = _Series((*base, "", pod.id, ""))
            counters = await asyncio.to_thread(self.d.networks.counters, self.namespace, pod.id, pod.pid)
            for name, n in sorted((counters or {}).items()):
                for metric, value in (("receive_bytes", n.rx_bytes), ("receive_packets", n.rx_packets),
                                      ("receive_packets_dropped", n.rx_dropped), ("receive_errors", n.rx_errors),
                                      ("transmit_bytes", n.tx_bytes), ("transmit_packets", n.tx_packets),
                                      ("transmit_packets_dropped", n.tx_dropped),
                                      ("transmit_errors", n.tx_errors)):
                    series.add(f"container_network_{metric}_total", value, name)
            out.metrics = series.out
        return out

    async def _container(self, base: tuple[str, str], c: CriContainer, answer: _ShimAnswer,
                         fs: Filesystem | None) -> ContainerMetrics:
        raw, pids = answer
        cgroup = cgroup_of(raw) if raw is not None else None
        procs = await asyncio.to_thread(read_procs, pids, c.pid)
        spec = await self._spec(c.id)
        writable: int | None = None
        with contextlib.suppress(NotFound):
            writable = (await self.d.snapshots.usage(self.namespace, self.c.snapshotter, c.id)).size
        return ContainerMetrics(c.id, metrics_of_container((*base, c.config.metadata.name, c.id, c.config.image), c,
                                                         cgroup, procs, spec, fs, writable))

    async def _ask_shim(self, c: CriContainer) -> _ShimAnswer:
        task = self.d.tasks.get(self.namespace, c.id)
        raw = await task.stats(self.deadline)
        return raw, [p.pid for p in await task.pids()]

    async def _spec(self, cid: str) -> dict[str, Any]:
        """The stored spec's linux.resources ({} when unreadable)."""
        try:
            record = await self.d.containers.get(self.namespace, cid)
            spec = json_value(record.spec.value, "its spec") if record.spec else {}
        except (NotFound, ValueError):
            return {}
        resources = ((spec.get("linux") or {}).get("resources") or {}) if isinstance(spec, dict) else {}
        return resources if isinstance(resources, dict) else {}


def metrics_of_container(labels: tuple[str, ...], c: CriContainer, g: CgroupReading | None, procs: ProcessCounts,
                         resources: dict[str, Any], fs: Filesystem | None, writable: int | None) -> list[Metric]:
    """A running container's series, labelled `labels` (BASE_KEYS' values) plus each one's own."""
    s = _Series(labels)
    s.add("container_last_seen", int(time.time()))
    s.add("container_start_time_seconds", c.started_at_ns // 1_000_000_000)
    if g is not None:
        for name, ns in (("usage", g.cpu_ns), ("user", g.user_ns), ("system", g.system_ns)):
            s.add(f"container_cpu_{name}_seconds_total", ns // 1_000_000_000)
        s.add("container_cpu_cfs_periods_total", g.periods)
        s.add("container_cpu_cfs_throttled_periods_total", g.throttled_periods)
        s.add("container_cpu_cfs_throttled_seconds_total", g.throttled_ns // 1_000_000_000)
        for name, value in (("usage_bytes", g.usage), ("max_usage_bytes", g.max_usage),
                            ("working_set_bytes", g.working_set), ("rss", g.rss), ("cache", g.cache),
                            ("kernel_usage", g.kernel), ("mapped_file", g.mapped_file), ("swap", g.swap),
                            ("failcnt", g.failcnt)):
            s.add(f"container_memory_{name}", value)
        for (kind, scope), count in g.faults.items():
            s.add("container_memory_failures_total", count, kind, scope)
        s.add("container_oom_events_total", g.oom_kills)
        s.add("container_threads_max", g.pids_limit)
        s.add("container_spec_memory_swap_limit_bytes", g.swap_limit)
        for (major, minor), io in sorted(g.io.items()):
            device = f"{major}:{minor}"
            s.add("container_fs_reads_bytes_total", io.get("read_bytes", 0), device)
            s.add("container_fs_writes_bytes_total", io.get("write_bytes", 0), device)
            s.add("container_fs_reads_total", io.get("read_ios", 0), device)
            s.add("container_fs_writes_total", io.get("write_ios", 0), device)
            for op in ("read", "write"):
                s.add("container_blkio_device_usage_total", io.get(f"{op}_bytes", 0), device, str(major), str(minor),
                      op.capitalize())
        for pagesize, (usage, peak) in sorted(g.hugetlb.items()):
            s.add("container_hugetlb_usage_bytes", usage, pagesize)
            if peak is not None:
                s.add("container_hugetlb_max_usage_bytes", peak, pagesize)
    s.add("container_processes", procs.processes)
    s.add("container_threads", procs.threads)
    s.add("container_file_descriptors", procs.fds)
    s.add("container_sockets", procs.sockets)
    if procs.nofile_soft is not None:
        s.add("container_ulimits_soft", procs.nofile_soft, "max_open_files")
    cpu, memory = resources.get("cpu") or {}, resources.get("memory") or {}
    s.add("container_spec_cpu_period", _int(cpu.get("period")))
    s.add("container_spec_cpu_quota", _int(cpu.get("quota")))
    s.add("container_spec_cpu_shares", _int(cpu.get("shares")))
    s.add("container_spec_memory_limit_bytes", _int(memory.get("limit")))
    s.add("container_spec_memory_reservation_limit_bytes", _int(memory.get("reservation")))
    if fs is not None:
        if writable is not None:
            s.add("container_fs_usage_bytes", writable, fs.device)
        s.add("container_fs_limit_bytes", fs.size, fs.device)
        s.add("container_fs_inodes_total", fs.inodes, fs.device)
        s.add("container_fs_inodes_free", fs.inodes_free, fs.device)
    return s.out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0
