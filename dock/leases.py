"""Leases and garbage collection in the SDK: `client.leases`.

    lease = await client.leases.create(expires=timedelta(hours=1), labels={"purpose": "pull"})
    await client.leases.add_resource(lease.id, "sha256:…", "content")
    await client.leases.delete(lease.id, sync=True)   # what it held is collected before this returns
    stats = await client.leases.collect_garbage()
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dockyard_api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from dockyard_api.dockyard.gc.v1 import gc_pb2, gc_pb2_grpc

if TYPE_CHECKING:
    from dock.client import Client

EXPIRE_LABEL = "containerd.io/gc.expire"


@dataclass
class LeaseInfo:
    id: str
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaseResource:
    id: str
    type: str  # "content", "ingests" or "snapshots/<snapshotter>"


@dataclass
class GCStats:
    content_removed: int
    snapshots_removed: int
    ingests_removed: int
    leases_removed: int
    duration: float  # seconds


def _lease(msg: leases_pb2.Lease) -> LeaseInfo:
    return LeaseInfo(msg.id, msg.created_at.ToDatetime(tzinfo=UTC), dict(msg.labels))


def expiry_label(expires: timedelta) -> str:
    """The gc.expire value for a lease ending `expires` from now (RFC 3339, UTC, as ctr writes it)."""
    return (datetime.now(UTC) + expires).strftime("%Y-%m-%dT%H:%M:%SZ")


class LeasesAPI:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = leases_pb2_grpc.LeasesStub(client.channel)
        self._gc = gc_pb2_grpc.GCStub(client.channel)

    async def create(self, id: str = "", labels: dict[str, str] | None = None,
                     expires: timedelta | None = None) -> LeaseInfo:
        """Create a lease (the daemon picks an id when `id` is empty); `expires` sets gc.expire."""
        given = dict(labels or {})
        if expires is not None:
            given[EXPIRE_LABEL] = expiry_label(expires)
        resp = await self._client.call(self._stub.Create, leases_pb2.CreateRequest(id=id, labels=given))
        return _lease(resp.lease)

    async def delete(self, id: str, sync: bool = False) -> None:
        """Delete a lease; with `sync` the daemon collects garbage before answering."""
        await self._client.call(self._stub.Delete, leases_pb2.DeleteRequest(id=id, sync=sync))

    async def list(self, *filters: str) -> list[LeaseInfo]:
        """Leases matching any of the containerd filters (e.g. `labels.purpose==pull`, `id==x`)."""
        resp = await self._client.call(self._stub.List, leases_pb2.ListRequest(filters=list(filters)))
        return [_lease(m) for m in resp.leases]

    async def add_resource(self, id: str, resource_id: str, type: str) -> None:
        req = leases_pb2.AddResourceRequest(id=id, resource=leases_pb2.Resource(id=resource_id, type=type))
        await self._client.call(self._stub.AddResource, req)

    async def delete_resource(self, id: str, resource_id: str, type: str) -> None:
        req = leases_pb2.DeleteResourceRequest(id=id, resource=leases_pb2.Resource(id=resource_id, type=type))
        await self._client.call(self._stub.DeleteResource, req)

    async def resources(self, id: str) -> builtins.list[LeaseResource]:
        resp = await self._client.call(self._stub.ListResources, leases_pb2.ListResourcesRequest(id=id))
        return [LeaseResource(r.id, r.type) for r in resp.resources]

    async def collect_garbage(self) -> GCStats:
        """Run the daemon's garbage collector now (dockyard.gc.v1 extension)."""
        r = await self._client.call(self._gc.Collect, gc_pb2.CollectRequest())
        return GCStats(r.content_removed, r.snapshots_removed, r.ingests_removed, r.leases_removed,
                       r.duration.ToTimedelta().total_seconds())
