"""containerd.services.leases.v1.Leases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from dockyard_api.containerd.services.leases.v1 import leases_pb2 as pb
from dockyard_api.containerd.services.leases.v1 import leases_pb2_grpc as pb_grpc
from supervisor import filters
from supervisor.metadata.leases import Lease, LeaseStore, Resource
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc


def _to_pb(lease: Lease) -> pb.Lease:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(lease.created_at)
    return pb.Lease(id=lease.id, created_at=created, labels=lease.labels)


def _resource(request: pb.AddResourceRequest | pb.DeleteResourceRequest) -> Resource:
    return Resource(id=request.resource.id, type=request.resource.type)


class LeasesService(pb_grpc.LeasesServicer):
    """`collect` runs a garbage collection now (Delete with sync); `schedule` asks for one soon."""

    def __init__(self, store: LeaseStore, collect: Callable[[], Awaitable[Any]],
                 schedule: Callable[[], None]) -> None:
        self.store = store
        self.collect = collect
        self.schedule = schedule

    @rpc
    async def Create(self, request: pb.CreateRequest, context: grpc.aio.ServicerContext) -> pb.CreateResponse:
        lease = await self.store.create(namespace_of(context), request.id, dict(request.labels))
        return pb.CreateResponse(lease=_to_pb(lease))

    @rpc
    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self.store.delete(namespace_of(context), request.id)
        if request.sync:  # the caller wants what the lease held gone before we answer
            await self.collect()
        else:
            self.schedule()
        return empty_pb2.Empty()

    @rpc
    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        ns = namespace_of(context)
        match = filters.parse_all(request.filters)
        found = [
            _to_pb(lease)
            for lease in await self.store.list(ns)
            if match.match(filters.adaptor_from({"id": lease.id, "labels": lease.labels}))
        ]
        return pb.ListResponse(leases=found)

    @rpc
    async def AddResource(self, request: pb.AddResourceRequest, context: grpc.aio.ServicerContext
                          ) -> empty_pb2.Empty:
        await self.store.add_resource(namespace_of(context), request.id, _resource(request))
        return empty_pb2.Empty()

    @rpc
    async def DeleteResource(self, request: pb.DeleteResourceRequest, context: grpc.aio.ServicerContext
                             ) -> empty_pb2.Empty:
        await self.store.delete_resource(namespace_of(context), request.id, _resource(request))
        self.schedule()
        return empty_pb2.Empty()

    @rpc
    async def ListResources(self, request: pb.ListResourcesRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ListResourcesResponse:
        found = await self.store.list_resources(namespace_of(context), request.id)
        return pb.ListResourcesResponse(resources=[pb.Resource(id=r.id, type=r.type) for r in found])
