"""dockyard.gc.v1.GC: run the garbage collector on demand (our extension)."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2

from dockyard_api.dockyard.gc.v1 import gc_pb2 as pb
from dockyard_api.dockyard.gc.v1 import gc_pb2_grpc as pb_grpc
from supervisor.metadata.gc import Collector
from supervisor.services.status import rpc


class GCService(pb_grpc.GCServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    @rpc
    async def Collect(self, request: pb.CollectRequest, context: grpc.aio.ServicerContext) -> pb.CollectResponse:
        stats = await self.collector.collect()
        duration = duration_pb2.Duration()
        duration.FromTimedelta(stats.duration)
        return pb.CollectResponse(
            content_removed=stats.content_removed,
            snapshots_removed=stats.snapshots_removed,
            ingests_removed=stats.ingests_removed,
            leases_removed=stats.leases_removed,
            duration=duration,
        )
