"""CRI pod stats (supervisor.cri.podstats.PodUsage) → PodSandboxStats messages."""

from __future__ import annotations

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from supervisor.cri.podstats import PodUsage
from supervisor.network.counters import Counters
from supervisor.services.cri_containers_pb import stats_pb
from supervisor.services.cri_sandbox_pb import metadata_pb


def _u64(value: int | None) -> pb.UInt64Value | None:
    return pb.UInt64Value(value=value) if value is not None else None


def _interface_pb(name: str, c: Counters) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(name=name, rx_bytes=_u64(c.rx_bytes), rx_errors=_u64(c.rx_errors),
                                    tx_bytes=_u64(c.tx_bytes), tx_errors=_u64(c.tx_errors))


def pod_stats_pb(u: PodUsage) -> pb.PodSandboxStats:
    s, ts = u.sandbox, u.timestamp_ns
    attributes = pb.PodSandboxAttributes(id=s.id, metadata=metadata_pb(s.config.metadata), labels=s.config.labels,
                                         annotations=s.config.annotations)
    linux = pb.LinuxPodSandboxStats(containers=[stats_pb(c) for c in u.containers])
    if u.cpu_usage_ns is not None:
        linux.cpu.CopyFrom(pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(u.cpu_usage_ns)))
    if u.memory_working_set is not None:
        linux.memory.CopyFrom(pb.MemoryUsage(timestamp=ts, working_set_bytes=_u64(u.memory_working_set),
                                             usage_bytes=_u64(u.memory_usage), rss_bytes=_u64(u.memory_rss)))
    if u.process_count is not None:
        linux.process.CopyFrom(pb.ProcessUsage(timestamp=ts, process_count=_u64(u.process_count)))
    if u.interfaces is not None:
        default = u.default_interface
        network = pb.NetworkUsage(timestamp=ts, interfaces=[
            _interface_pb(name, c) for name, c in sorted(u.interfaces.items()) if name != default])
        if default:
            network.default_interface.CopyFrom(_interface_pb(default, u.interfaces[default]))
        linux.network.CopyFrom(network)
    return pb.PodSandboxStats(attributes=attributes, linux=linux)
