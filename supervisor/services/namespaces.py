"""containerd.services.namespaces.v1.Namespaces."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from dockyard_api.containerd.events import namespace_pb2 as events_pb
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2 as pb
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc
from supervisor import filters
from supervisor.events import Exchange
from supervisor.metadata.namespaces import Namespace, NamespaceStore
from supervisor.services.events import publish
from supervisor.services.status import rpc


def _to_pb(ns: Namespace) -> pb.Namespace:
    return pb.Namespace(name=ns.name, labels=ns.labels)


class NamespacesService(pb_grpc.NamespacesServicer):
    def __init__(self, store: NamespaceStore, events: Exchange) -> None:
        self.store = store
        self.events = events

    @rpc
    async def Get(self, request: pb.GetNamespaceRequest, context: grpc.aio.ServicerContext
                  ) -> pb.GetNamespaceResponse:
        return pb.GetNamespaceResponse(namespace=_to_pb(await self.store.get(request.name)))

    @rpc
    async def List(self, request: pb.ListNamespacesRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ListNamespacesResponse:
        match = filters.parse_all([request.filter])
        found = [
            _to_pb(ns)
            for ns in await self.store.list()
            if match.match(filters.adaptor_from({"name": ns.name, "labels": ns.labels}))
        ]
        return pb.ListNamespacesResponse(namespaces=found)

    @rpc
    async def Create(self, request: pb.CreateNamespaceRequest, context: grpc.aio.ServicerContext
                     ) -> pb.CreateNamespaceResponse:
        ns = await self.store.create(Namespace(request.namespace.name, dict(request.namespace.labels)))
        publish(
            self.events, ns.name, "/namespaces/create", events_pb.NamespaceCreate(name=ns.name, labels=ns.labels)
        )
        return pb.CreateNamespaceResponse(namespace=_to_pb(ns))

    @rpc
    async def Update(self, request: pb.UpdateNamespaceRequest, context: grpc.aio.ServicerContext
                     ) -> pb.UpdateNamespaceResponse:
        ns = await self.store.update(
            Namespace(request.namespace.name, dict(request.namespace.labels)),
            list(request.update_mask.paths),
        )
        publish(
            self.events, ns.name, "/namespaces/update", events_pb.NamespaceUpdate(name=ns.name, labels=ns.labels)
        )
        return pb.UpdateNamespaceResponse(namespace=_to_pb(ns))

    @rpc
    async def Delete(self, request: pb.DeleteNamespaceRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        await self.store.delete(request.name)
        publish(
            self.events, request.name, "/namespaces/delete", events_pb.NamespaceDelete(name=request.name)
        )
        return empty_pb2.Empty()
