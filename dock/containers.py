"""Containers in the SDK: `client.containers`.

    spec = default_spec(...)  # an OCI runtime spec as a dict
    c = await client.containers.create(Container(id="web", runtime_name=RUNC_V2,
                                                 spec=oci_spec_any(spec), snapshotter="overlayfs",
                                                 snapshot_key="web", image="docker.io/library/busybox:latest"))
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

from google.protobuf import field_mask_pb2

from dockyard_api.containerd.services.containers.v1 import containers_pb2 as pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as pb_grpc
from dockyard_common.errors import Unimplemented
from supervisor.metadata.containers import AnyValue, Container
from supervisor.services.containers import from_pb, to_pb

if TYPE_CHECKING:
    from dock.client import Client

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
RUNC_V2 = "io.containerd.runc.v2"


def oci_spec_any(spec: dict[str, Any]) -> AnyValue:
    """An OCI spec the way containerd stores it: JSON inside an Any."""
    return AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode())


def with_timestamps(msg: pb.Container, c: Container) -> Container:
    c.created_at = msg.created_at.ToDatetime() if msg.HasField("created_at") else None
    c.updated_at = msg.updated_at.ToDatetime() if msg.HasField("updated_at") else None
    return c


class ContainersAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.ContainersStub(client.channel)

    async def get(self, cid: str) -> Container:
        resp = await self.client.call(self.stub.Get, pb.GetContainerRequest(id=cid))
        return with_timestamps(resp.container, from_pb(resp.container))

    async def list(self, filters: list[str] | None = None) -> list[Container]:
        req = pb.ListContainersRequest(filters=filters or [])
        try:
            return [with_timestamps(m.container, from_pb(m.container))
                    async for m in self.client.stream(self.stub.ListStream, req)]
        except Unimplemented:  # an older server: fall back to the unary List, as ctr does
            resp = await self.client.call(self.stub.List, req)
            return [with_timestamps(m, from_pb(m)) for m in resp.containers]

    async def create(self, c: Container) -> Container:
        resp = await self.client.call(self.stub.Create, pb.CreateContainerRequest(container=to_pb(c)))
        return with_timestamps(resp.container, from_pb(resp.container))

    async def update(self, c: Container, paths: builtins.list[str] | None = None) -> Container:
        req = pb.UpdateContainerRequest(container=to_pb(c), update_mask=field_mask_pb2.FieldMask(paths=paths or []))
        resp = await self.client.call(self.stub.Update, req)
        return with_timestamps(resp.container, from_pb(resp.container))

    async def delete(self, cid: str) -> None:
        await self.client.call(self.stub.Delete, pb.DeleteContainerRequest(id=cid))
