"""containerd.services.containers.v1.Containers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import any_pb2, empty_pb2

from dockyard_api.containerd.events import container_pb2 as events_pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2 as pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as pb_grpc
from supervisor.events import Exchange
from supervisor.metadata.containers import AnyValue, Container, ContainerStore
from supervisor.services.context import namespace_of
from supervisor.services.events import publish, timestamp
from supervisor.services.list_memo import ListMemo
from supervisor.services.status import rpc, rpc_stream


def _any_in(a: any_pb2.Any) -> AnyValue:
    return AnyValue(a.type_url, a.value)


def _any_out(a: AnyValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=a.type_url, value=a.value)


def from_pb(m: pb.Container) -> Container:
    return Container(
        id=m.id, runtime_name=m.runtime.name,
        spec=_any_in(m.spec) if m.HasField("spec") else None,
        labels=dict(m.labels), image=m.image,
        runtime_options=_any_in(m.runtime.options) if m.runtime.HasField("options") else None,
        snapshotter=m.snapshotter, snapshot_key=m.snapshot_key,
        extensions={k: _any_in(v) for k, v in m.extensions.items()},
    )


def to_pb(c: Container) -> pb.Container:
    out = pb.Container(id=c.id, labels=c.labels, image=c.image, snapshotter=c.snapshotter,
                       snapshot_key=c.snapshot_key,
                       extensions={k: _any_out(v) for k, v in c.extensions.items()})
    out.runtime.name = c.runtime_name
    if c.runtime_options is not None:
        out.runtime.options.CopyFrom(_any_out(c.runtime_options))
    if c.spec is not None:
        out.spec.CopyFrom(_any_out(c.spec))
    if c.created_at:
        out.created_at.CopyFrom(timestamp(c.created_at))
    if c.updated_at:
        out.updated_at.CopyFrom(timestamp(c.updated_at))
    return out


class ContainersService(pb_grpc.ContainersServicer):
    def __init__(self, store: ContainerStore, events: Exchange,
                 on_delete: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.events = events
        self.on_delete = on_delete  # the runtime lets go of what it keeps for the container (its network)
        self._listed: ListMemo[Container, pb.ListContainersResponse] = ListMemo(
            lambda found: pb.ListContainersResponse(containers=[to_pb(c) for c in found]))
        # ListStream (what ctr calls) sends one message per container: kept the same way
        self._streamed: ListMemo[Container, list[pb.ListContainerMessage]] = ListMemo(
            lambda found: [pb.ListContainerMessage(container=to_pb(c)) for c in found])

    @rpc
    async def Get(self, request: pb.GetContainerRequest, context: grpc.aio.ServicerContext
                  ) -> pb.GetContainerResponse:
        c = await self.store.get(namespace_of(context), request.id)
        return pb.GetContainerResponse(container=to_pb(c))

    @rpc
    async def List(self, request: pb.ListContainersRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ListContainersResponse:
        ns, filters = namespace_of(context), list(request.filters)
        return self._listed.get((ns, *filters), await self.store.list(ns, filters))

    @rpc_stream
    async def ListStream(self, request: pb.ListContainersRequest, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[pb.ListContainerMessage]:
        ns, filters = namespace_of(context), list(request.filters)
        for message in self._streamed.get((ns, *filters), await self.store.list(ns, filters)):
            yield message

    @rpc
    async def Create(self, request: pb.CreateContainerRequest, context: grpc.aio.ServicerContext
                     ) -> pb.CreateContainerResponse:
        ns = namespace_of(context)
        c = await self.store.create(ns, from_pb(request.container))
        publish(self.events, ns, "/containers/create", events_pb.ContainerCreate(
            id=c.id, image=c.image,
            runtime=events_pb.ContainerCreate.Runtime(
                name=c.runtime_name,
                options=_any_out(c.runtime_options) if c.runtime_options else None)))
        return pb.CreateContainerResponse(container=to_pb(c))

    @rpc
    async def Update(self, request: pb.UpdateContainerRequest, context: grpc.aio.ServicerContext
                     ) -> pb.UpdateContainerResponse:
        ns = namespace_of(context)
        c = await self.store.update(ns, from_pb(request.container), list(request.update_mask.paths))
        publish(self.events, ns, "/containers/update", events_pb.ContainerUpdate(
            id=c.id, image=c.image, labels=c.labels, snapshot_key=c.snapshot_key))
        return pb.UpdateContainerResponse(container=to_pb(c))

    @rpc
    async def Delete(self, request: pb.DeleteContainerRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        ns = namespace_of(context)
        await self.store.delete(ns, request.id)
        if self.on_delete is not None:
            await self.on_delete(ns, request.id)
        publish(self.events, ns, "/containers/delete", events_pb.ContainerDelete(id=request.id))
        return empty_pb2.Empty()
