"""Stats into containerd's cgroup Metrics messages (``io.containerd.cgroups.v1/v2.Metrics``).

The shim packs the result into a ``google.protobuf.Any`` whose type URL is the message's full
name (``METRICS_V1.DESCRIPTOR.full_name``), as containerd's typeurl does.
"""

from __future__ import annotations

from google.protobuf.message import Message

from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1pb
from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as v2pb

from .base import UNLIMITED, MemoryEntry, Stats

# memory.stat (v1) key -> v1 MemoryStat field, where the names differ.
_V1_RENAMES = {"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault", "pgmajfault": "pg_maj_fault",
               "hierarchical_memsw_limit": "hierarchical_swap_limit"}
_V1_MEMORY_FIELDS = {f.name for f in v1pb.MemoryStat.DESCRIPTOR.fields if f.type != f.TYPE_MESSAGE}
_V2_MEMORY_FIELDS = {f.name for f in v2pb.MemoryStat.DESCRIPTOR.fields} - {
    "usage", "usage_limit", "swap_usage", "swap_limit"}


def _u64(v: int) -> int:
    return min(max(v, 0), UNLIMITED)


def _v1_field(key: str) -> str | None:
    """The v1 MemoryStat field for a memory.stat key (``total_pgpgin`` -> ``total_pg_pg_in``)."""
    prefix, base = ("total_", key[6:]) if key.startswith("total_") else ("", key)
    name = prefix + _V1_RENAMES.get(base, base)
    return name if name in _V1_MEMORY_FIELDS else None


def _v1_entry(e: MemoryEntry) -> v1pb.MemoryEntry:
    return v1pb.MemoryEntry(limit=_u64(e.limit), usage=_u64(e.usage), max=_u64(e.max_usage), failcnt=_u64(e.failcnt))


def to_v1_metrics(stats: Stats) -> v1pb.Metrics:
    m = v1pb.Metrics()
    m.pids.current, m.pids.limit = _u64(stats.pids.current), _u64(stats.pids.limit)
    c = stats.cpu
    m.cpu.usage.total, m.cpu.usage.user, m.cpu.usage.kernel = c.usage_total, c.usage_user, c.usage_kernel
    m.cpu.usage.per_cpu.extend(c.per_cpu)
    m.cpu.throttling.periods = c.nr_periods
    m.cpu.throttling.throttled_periods = c.nr_throttled
    m.cpu.throttling.throttled_time = c.throttled_time
    mem = stats.memory
    for key, value in mem.stat.items():
        name = _v1_field(key)
        if name is not None:
            setattr(m.memory, name, _u64(value))
    m.memory.usage.CopyFrom(_v1_entry(mem.usage))
    m.memory.swap.CopyFrom(_v1_entry(mem.swap))
    m.memory.kernel.CopyFrom(_v1_entry(mem.kernel))
    m.memory.kernel_tcp.CopyFrom(_v1_entry(mem.kernel_tcp))
    ev = stats.memory_events
    m.memory_oom_control.oom_kill_disable = int(ev.oom_kill_disable)
    m.memory_oom_control.under_oom = int(ev.under_oom)
    m.memory_oom_control.oom_kill = ev.oom_kill
    for dst, src in ((m.blkio.io_service_bytes_recursive, stats.io.service_bytes),
                     (m.blkio.io_serviced_recursive, stats.io.serviced)):
        dst.extend(v1pb.BlkIOEntry(op=e.op, major=e.major, minor=e.minor, value=_u64(e.value)) for e in src)
    m.hugetlb.extend(v1pb.HugetlbStat(usage=_u64(h.usage), max=_u64(h.max_usage), failcnt=_u64(h.failcnt),
                                      pagesize=h.page_size) for h in stats.hugetlb)
    return m


def to_v2_metrics(stats: Stats) -> v2pb.Metrics:
    m = v2pb.Metrics()
    m.pids.current, m.pids.limit = _u64(stats.pids.current), _u64(stats.pids.limit)
    c = stats.cpu
    m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec = (c.usage_total // 1000, c.usage_user // 1000,
                                                             c.usage_kernel // 1000)
    m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec = c.nr_periods, c.nr_throttled, c.throttled_time // 1000
    stat = stats.memory.stat
    for name in _V2_MEMORY_FIELDS:
        if name in stat:
            setattr(m.memory, name, _u64(stat[name]))
        elif name.startswith("workingset_") and f"{name}_anon" in stat:
            # Kernels since 5.9 split workingset counters into _anon and _file.
            setattr(m.memory, name, _u64(stat[f"{name}_anon"] + stat.get(f"{name}_file", 0)))
    mem = stats.memory
    m.memory.usage, m.memory.usage_limit = _u64(mem.usage.usage), _u64(mem.usage.limit)
    m.memory.swap_usage, m.memory.swap_limit = _u64(mem.swap.usage), _u64(mem.swap.limit)
    ev = stats.memory_events
    m.memory_events.low, m.memory_events.high, m.memory_events.max = ev.low, ev.high, ev.max
    m.memory_events.oom, m.memory_events.oom_kill = ev.oom, ev.oom_kill
    m.io.usage.extend(v2pb.IOEntry(major=d.major, minor=d.minor, rbytes=d.rbytes, wbytes=d.wbytes, rios=d.rios,
                                   wios=d.wios) for d in stats.io.devices)
    m.hugetlb.extend(v2pb.HugeTlbStat(current=_u64(h.usage), max=_u64(h.limit), pagesize=h.page_size)
                     for h in stats.hugetlb)
    return m


def to_metrics(stats: Stats) -> Message:
    """The message containerd expects from this host: v1 Metrics for v1 stats, v2 for v2."""
    return to_v1_metrics(stats) if stats.version == 1 else to_v2_metrics(stats)


METRICS_V1 = v1pb.Metrics
METRICS_V2 = v2pb.Metrics
