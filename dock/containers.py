"""Containers in the SDK: `client.containers`.

    spec = default_spec(...)  # an OCI runtime spec as a dict
    c = await client.containers.create(Container(id="web", runtime_name=RUNC_V2,
                                                 spec=oci_spec_any(spec), snapshotter="overlayfs",
                                                 snapshot_key="web", image="docker.io/library/busybox:latest"))
"""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, field_mask_pb2, timestamp_pb2

from dockyard_api.containerd.services.containers.v1 import containers_pb2 as pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as pb_grpc
from dockyard_common.errors import Unimplemented
from dockyard_common.ocispec import SPEC_TYPE_URL
from dockyard_common.types import AnyValue, Container

if TYPE_CHECKING:
    from dock.client import Client

RUNC_V2 = "io.containerd.runc.v2"


def oci_spec_any(spec: dict[str, Any]) -> AnyValue:
    """An OCI spec the way containerd stores it: JSON inside an Any."""
    return AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode())


def _any_out(a: AnyValue) -> any_pb2.Any:
    return any_pb2.Any(type_url=a.type_url, value=a.value)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_pb(m: pb.Container) -> Container:
    """The record the daemon sent, its timestamps included."""
    return Container(
        id=m.id, runtime_name=m.runtime.name,
        spec=AnyValue(m.spec.type_url, m.spec.value) if m.HasField("spec") else None,
        labels=dict(m.labels), image=m.image,
        runtime_options=(AnyValue(m.runtime.options.type_url, m.runtime.options.value)
                         if m.runtime.HasField("options") else None),
        snapshotter=m.snapshotter, snapshot_key=m.snapshot_key,
        extensions={k: AnyValue(v.type_url, v.value) for k, v in m.extensions.items()},
        created_at=m.created_at.ToDatetime() if m.HasField("created_at") else None,
        updated_at=m.updated_at.ToDatetime() if m.HasField("updated_at") else None,
    )


def to_pb(c: Container) -> pb.Container:
    """The record to send (the daemon keeps its own timestamps, whatever is sent)."""
    out = pb.Container(id=c.id, labels=c.labels, image=c.image, snapshotter=c.snapshotter,
                       snapshot_key=c.snapshot_key,
                       extensions={k: _any_out(v) for k, v in c.extensions.items()})
    out.runtime.name = c.runtime_name
    if c.runtime_options is not None:
        out.runtime.options.CopyFrom(_any_out(c.runtime_options))
    if c.spec is not None:
        out.spec.CopyFrom(_any_out(c.spec))
    if c.created_at:
        out.created_at.CopyFrom(_timestamp(c.created_at))
    if c.updated_at:
        out.updated_at.CopyFrom(_timestamp(c.updated_at))
    return out


class ContainersAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.ContainersStub(client.channel)

    async def get(self, cid: str) -> Container:
        resp = await self.client.call(self.stub.Get, pb.GetContainerRequest(id=cid))
        return from_pb(resp.container)

    async def list(self, filters: list[str] | None = None) -> list[Container]:
        req = pb.ListContainersRequest(filters=filters or [])
        try:
            return [from_pb(m.container)
                    async for m in self.client.stream(self.stub.ListStream, req)]
        except Unimplemented:  # an older server: fall back to the unary List, as ctr does
            resp = await self.client.call(self.stub.List, req)
            return [from_pb(m) for m in resp.containers]

    async def create(self, c: Container) -> Container:
        resp = await self.client.call(self.stub.Create, pb.CreateContainerRequest(container=to_pb(c)))
        return from_pb(resp.container)

    async def update(self, c: Container, paths: builtins.list[str] | None = None) -> Container:
        req = pb.UpdateContainerRequest(container=to_pb(c), update_mask=field_mask_pb2.FieldMask(paths=paths or []))
        resp = await self.client.call(self.stub.Update, req)
        return from_pb(resp.container)

    async def delete(self, cid: str) -> None:
        await self.client.call(self.stub.Delete, pb.DeleteContainerRequest(id=cid))
