"""Layers in the SDK: `client.diff` applies layer blobs to snapshots and computes new ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from dockyard_api.containerd.services.diff.v1 import diff_pb2 as pb
from dockyard_api.containerd.services.diff.v1 import diff_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import descriptor_pb2, mount_pb2
from dockyard_common.imagespec import Descriptor
from dockyard_common.types import Mount

if TYPE_CHECKING:
    from dock.client import Client


def _mounts(ms: Sequence[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options) for m in ms]


def _desc(d: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


class DiffAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.DiffStub(client.channel)

    async def apply(self, layer: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Unpack the layer blob onto `mounts`; returns the uncompressed (diff ID) descriptor."""
        req = pb.ApplyRequest(diff=descriptor_pb2.Descriptor(media_type=layer.media_type, digest=layer.digest,
                                                            size=layer.size), mounts=_mounts(mounts))
        return _desc((await self.client.call(self.stub.Apply, req)).applied)

    async def diff(self, lower: Sequence[Mount], upper: Sequence[Mount], media_type: str = "", ref: str = "",
                   labels: Mapping[str, str] | None = None) -> Descriptor:
        """Write the changes from `lower` to `upper` as a layer blob; returns its descriptor."""
        req = pb.DiffRequest(left=_mounts(lower), right=_mounts(upper), media_type=media_type, ref=ref,
                             labels=dict(labels or {}))
        return _desc((await self.client.call(self.stub.Diff, req)).diff)
