"""containerd.services.diff.v1.Diff."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from dockyard_api.containerd.services.diff.v1 import diff_pb2 as pb
from dockyard_api.containerd.services.diff.v1 import diff_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import descriptor_pb2, mount_pb2
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from dockyard_common.types import Mount
from supervisor.differ import Differ
from supervisor.services.context import lease_of, namespace_of
from supervisor.services.status import rpc


def mounts_in(ms: Sequence[mount_pb2.Mount], what: str = "mount") -> list[Mount]:
    """A caller's mounts. Each string goes to the kernel as a C string, and into os calls that
    raise ValueError ("embedded null byte", INTERNAL) on a NUL: refused here, by name."""
    out = []
    for i, m in enumerate(ms):
        if any("\0" in s for s in (m.type, m.source, m.target, *m.options)):
            raise InvalidArgument(f"{what}s[{i}]: a mount's type, source, target and options must not contain NUL")
        out.append(Mount(type=m.type, source=m.source, target=m.target, options=list(m.options)))
    return out


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
            mounts_in(request.mounts))
        return pb.ApplyResponse(applied=descriptor_out(applied))

    @rpc
    async def Diff(self, request: pb.DiffRequest, context: grpc.aio.ServicerContext) -> pb.DiffResponse:
        desc = await self.differ.diff(
            namespace_of(context), mounts_in(request.left, "left"), mounts_in(request.right, "right"),
            media_type=request.media_type, ref=request.ref, labels=dict(request.labels),
            lease=lease_of(context))
        return pb.DiffResponse(diff=descriptor_out(desc))
