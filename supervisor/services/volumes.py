"""dockyard.volumes.v1.Volumes: named volumes of the call's namespace (our extension).

Conversion only: the VolumeStore decides and raises error kinds; `rpc` maps them.
"""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from dockyard_api.dockyard.volumes.v1 import volumes_pb2 as pb
from dockyard_api.dockyard.volumes.v1 import volumes_pb2_grpc as pb_grpc
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc
from supervisor.volumes.store import LabelFilter, Volume, VolumeStore


def volume_to_pb(vol: Volume, size: int | None = None) -> pb.Volume:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(vol.created_at * 1e9))
    return pb.Volume(name=vol.name, mountpoint=str(vol.mountpoint), labels=vol.labels, created_at=ts, size=size)


class VolumesService(pb_grpc.VolumesServicer):
    def __init__(self, store: VolumeStore) -> None:
        self.store = store

    @rpc
    async def Create(self, request: pb.CreateVolumeRequest,
                     context: grpc.aio.ServicerContext) -> pb.CreateVolumeResponse:
        vol, created = await self.store.create(namespace_of(context), request.name, dict(request.labels))
        return pb.CreateVolumeResponse(volume=volume_to_pb(vol), created=created)

    @rpc
    async def Get(self, request: pb.GetVolumeRequest, context: grpc.aio.ServicerContext) -> pb.GetVolumeResponse:
        ns = namespace_of(context)
        vol = await self.store.get(ns, request.name)
        users = (await self.store.users(ns)).get(vol.name, [])
        return pb.GetVolumeResponse(volume=volume_to_pb(vol), containers=users)

    @rpc
    async def List(self, request: pb.ListVolumesRequest, context: grpc.aio.ServicerContext) -> pb.ListVolumesResponse:
        found = await self.store.list(namespace_of(context), list(request.filters))
        sizes: dict[str, int] = await self.store.sizes(found) if request.with_size else {}
        return pb.ListVolumesResponse(volumes=[volume_to_pb(v, sizes.get(v.name)) for v in found])

    @rpc
    async def Delete(self, request: pb.DeleteVolumeRequest,
                     context: grpc.aio.ServicerContext) -> pb.DeleteVolumeResponse:
        await self.store.delete(namespace_of(context), request.name)
        return pb.DeleteVolumeResponse()

    @rpc
    async def Prune(self, request: pb.PruneVolumesRequest,
                    context: grpc.aio.ServicerContext) -> pb.PruneVolumesResponse:
        carrying = [LabelFilter.parse(t, "label") for t in request.labels]  # errors before anything goes
        not_carrying = [LabelFilter.parse(t, "label!") for t in request.labels_not]
        pruned = await self.store.prune(namespace_of(context), list(request.filters), named=request.all,
                                        carrying=carrying, not_carrying=not_carrying)
        return pb.PruneVolumesResponse(removed=pruned.removed, space_reclaimed=pruned.space_reclaimed)

    @rpc
    async def Seed(self, request: pb.SeedVolumeRequest, context: grpc.aio.ServicerContext) -> pb.SeedVolumeResponse:
        done = await self.store.seed(namespace_of(context), request.name, request.snapshotter,
                                     request.snapshot_key, request.path)
        return pb.SeedVolumeResponse(seeded=done.seeded, entries=done.entries, bytes=done.bytes)
