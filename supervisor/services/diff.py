"""containerd.services.diff.v1.Diff."""

from __future__ import annotations

import grpc

from dockyard_api.containerd.services.diff.v1 import diff_pb2 as pb
from dockyard_api.containerd.services.diff.v1 import diff_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import descriptor_pb2, mount_pb2
from dockyard_common.imagespec import Descriptor
from dockyard_common.types import Mount
from supervisor.differ import Differ
from supervisor.services.context import lease_of, namespace_of
from supervisor.services.status import rpc


def mounts_in(ms: list[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(type=m.type, source=m.source, target=m.target, options=list(m.options)) for m in ms]


def descriptor_out(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=d.annotations)


class DiffService(pb_grpc.DiffServicer):
    def __init__(self, differ: Differ) -> None:
        self.differ = differ

    @rpc
    async def Apply(self, request: pb.ApplyRequest, context: grpc.aio.ServicerContext) -> pb.ApplyResponse:
        d = request.diff
        applied = await self.differ.apply(
            namespace_of(context), Descriptor(d.media_type, d.digest, d.size, dict(d.annotations)),
            mounts_in(list(request.mounts)))
        return pb.ApplyResponse(applied=descriptor_out(applied))

    @rpc
    async def Diff(self, request: pb.DiffRequest, context: grpc.aio.ServicerContext) -> pb.DiffResponse:
        desc = await self.differ.diff(
            namespace_of(context), mounts_in(list(request.left)), mounts_in(list(request.right)),
            media_type=request.media_type, ref=request.ref, labels=dict(request.labels),
            lease=lease_of(context))
        return pb.DiffResponse(diff=descriptor_out(desc))
