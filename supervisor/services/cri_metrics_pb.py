"""CRI pod metrics (supervisor.cri.metrics) → MetricDescriptor and PodSandboxMetrics messages."""

from __future__ import annotations

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from supervisor.cri.metrics import DESCRIPTORS, Metric, MetricKind, PodMetrics

_KIND = {MetricKind.COUNTER: pb.COUNTER, MetricKind.GAUGE: pb.GAUGE}


def descriptors_pb() -> list[pb.MetricDescriptor]:
    return [pb.MetricDescriptor(name=d.name, help=d.help, label_keys=d.label_keys) for d in DESCRIPTORS]


def _metric_pb(m: Metric) -> pb.Metric:
    return pb.Metric(name=m.name, timestamp=m.timestamp_ns, metric_type=_KIND[m.kind], label_values=m.label_values,
                     value=pb.UInt64Value(value=m.value))


def pod_metrics_pb(p: PodMetrics) -> pb.PodSandboxMetrics:
    return pb.PodSandboxMetrics(
        pod_sandbox_id=p.pod_id, metrics=[_metric_pb(m) for m in p.metrics],
        container_metrics=[pb.ContainerMetrics(container_id=c.container_id, metrics=[_metric_pb(m) for m in c.metrics])
                           for c in p.containers])
