"""containerd.services.snapshots.v1.Snapshots over the namespaced SnapshotStore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from dockyard_api.containerd.events import snapshot_pb2 as events_pb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import mount_pb2
from dockyard_common.types import EPOCH, Info, Kind, Mount
from supervisor.events import Exchange
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.services.context import lease_of, namespace_of
from supervisor.services.events import publish, request_time, timestamp
from supervisor.services.status import rpc, rpc_stream

LIST_BATCH = 100  # infos per List message, as containerd sends them


def mounts_to_pb(mounts: list[Mount]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options) for m in mounts]


def info_to_pb(info: Info) -> pb.Info:
    return pb.Info(name=info.name, parent=info.parent, kind=int(info.kind),  # type: ignore[arg-type]
                   created_at=timestamp(info.created_at), updated_at=timestamp(info.updated_at),
                   labels=info.labels)


def kind_from_pb(value: int) -> Kind:
    return Kind(value) if value in Kind._value2member_map_ else Kind.UNKNOWN


def info_from_pb(msg: pb.Info) -> Info:
    when = EPOCH.tzinfo
    return Info(name=msg.name, parent=msg.parent, kind=kind_from_pb(msg.kind),
                created_at=request_time(msg.created_at, "snapshot info", when),
                updated_at=request_time(msg.updated_at, "snapshot info", when),
                labels=dict(msg.labels))


class SnapshotsService(pb_grpc.SnapshotsServicer):
    def __init__(self, store: SnapshotStore, events: Exchange) -> None:
        self.store = store
        self.events = events

    @rpc
    async def Prepare(self, request: pb.PrepareSnapshotRequest, context: grpc.aio.ServicerContext
                      ) -> pb.PrepareSnapshotResponse:
        ns = namespace_of(context)
        mounts = await self.store.prepare(ns, request.snapshotter, request.key, request.parent,
                                          dict(request.labels), lease_of(context))
        publish(self.events, ns, "/snapshot/prepare",
                events_pb.SnapshotPrepare(key=request.key, parent=request.parent))
        return pb.PrepareSnapshotResponse(mounts=mounts_to_pb(mounts))

    @rpc
    async def View(self, request: pb.ViewSnapshotRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ViewSnapshotResponse:
        # containerd publishes no event for a view.
        mounts = await self.store.view(namespace_of(context), request.snapshotter, request.key, request.parent,
                                       dict(request.labels), lease_of(context))
        return pb.ViewSnapshotResponse(mounts=mounts_to_pb(mounts))

    @rpc
    async def Mounts(self, request: pb.MountsRequest, context: grpc.aio.ServicerContext) -> pb.MountsResponse:
        mounts = await self.store.mounts(namespace_of(context), request.snapshotter, request.key)
        return pb.MountsResponse(mounts=mounts_to_pb(mounts))

    @rpc
    async def Commit(self, request: pb.CommitSnapshotRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        ns = namespace_of(context)
        await self.store.commit(ns, request.snapshotter, request.name, request.key, dict(request.labels),
                                lease_of(context))
        publish(self.events, ns, "/snapshot/commit", events_pb.SnapshotCommit(key=request.key, name=request.name))
        return empty_pb2.Empty()

    @rpc
    async def Remove(self, request: pb.RemoveSnapshotRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        ns = namespace_of(context)
        await self.store.remove(ns, request.snapshotter, request.key)
        publish(self.events, ns, "/snapshot/remove", events_pb.SnapshotRemove(key=request.key))
        return empty_pb2.Empty()

    @rpc
    async def Stat(self, request: pb.StatSnapshotRequest, context: grpc.aio.ServicerContext
                   ) -> pb.StatSnapshotResponse:
        info = await self.store.stat(namespace_of(context), request.snapshotter, request.key)
        return pb.StatSnapshotResponse(info=info_to_pb(info))

    @rpc
    async def Update(self, request: pb.UpdateSnapshotRequest, context: grpc.aio.ServicerContext
                     ) -> pb.UpdateSnapshotResponse:
        info = await self.store.update(namespace_of(context), request.snapshotter, info_from_pb(request.info),
                                       list(request.update_mask.paths))
        return pb.UpdateSnapshotResponse(info=info_to_pb(info))

    @rpc_stream
    async def List(self, request: pb.ListSnapshotsRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        infos = await self.store.list(namespace_of(context), request.snapshotter, list(request.filters))
        for start in range(0, len(infos), LIST_BATCH):
            yield pb.ListSnapshotsResponse(info=[info_to_pb(i) for i in infos[start:start + LIST_BATCH]])

    @rpc
    async def Usage(self, request: pb.UsageRequest, context: grpc.aio.ServicerContext) -> pb.UsageResponse:
        usage = await self.store.usage(namespace_of(context), request.snapshotter, request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    @rpc
    async def Cleanup(self, request: pb.CleanupRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        namespace_of(context)  # namespaced like every snapshot call, though it acts on the whole backend
        await self.store.cleanup(request.snapshotter)
        return empty_pb2.Empty()
