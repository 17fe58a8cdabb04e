"""Containers service against a real dockyardd."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2

from dock.client import Client
from dock.containers import RUNC_V2, SPEC_TYPE_URL, oci_spec_any
from dockyard_api.containerd.events import container_pb2 as events_pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2 as pb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as pb_grpc
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import AnyValue, Container
from tests.daemon import DaemonProcess, subscribed

SPEC = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": "rootfs"}}


def make(cid: str, **kw: object) -> Container:
    base: dict[str, object] = {"id": cid, "runtime_name": RUNC_V2, "spec": oci_spec_any(SPEC),
                               "snapshotter": "overlayfs", "snapshot_key": cid,
                               "image": "docker.io/library/busybox:latest"}
    base.update(kw)
    return Container(**base)  # type: ignore[arg-type]


async def test_create_get_roundtrip(client: Client) -> None:
    opts = AnyValue("containerd.runc.v1.Options", b"")
    ext = {"x": AnyValue("example/Type", b"\x01\x02")}
    created = await client.containers.create(make("web", labels={"a": "1"}, runtime_options=opts, extensions=ext))
    assert created.created_at is not None and created.created_at == created.updated_at
    got = await client.containers.get("web")
    assert got.spec is not None and got.spec.type_url == SPEC_TYPE_URL
    assert json.loads(got.spec.value) == SPEC
    assert got.labels == {"a": "1"} and got.runtime_options == opts and got.extensions == ext
    assert got.snapshotter == "overlayfs" and got.snapshot_key == "web"
    assert got.image == "docker.io/library/busybox:latest"


async def test_duplicate_and_missing(client: Client) -> None:
    await client.containers.create(make("dup"))
    with pytest.raises(AlreadyExists, match='container "dup"'):
        await client.containers.create(make("dup"))
    with pytest.raises(NotFound, match='container "nope" in namespace "default"'):
        await client.containers.get("nope")
    with pytest.raises(NotFound):
        await client.containers.delete("nope")


@pytest.mark.parametrize(("change", "message"), [
    ({"id": "bad id"}, "container.ID"),
    ({"runtime_name": ""}, "Runtime.Name must be set"),
    ({"spec": None}, "Spec must be set"),
    ({"snapshotter": ""}, "Snapshotter must be set"),
    ({"labels": {"k": "v" * 5000}}, "label"),
    ({"extensions": {"": AnyValue("t", b"")}}, "Extension keys"),
])
async def test_invalid_containers(client: Client, change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await client.containers.create(make("c1", **change))


async def test_list_filters_and_stream(client: Client) -> None:
    await client.containers.create(make("a1", labels={"app": "web"}))
    await client.containers.create(make("a2", labels={"app": "db"}, image="docker.io/library/redis:7"))
    assert [c.id for c in await client.containers.list()] == ["a1", "a2"]
    assert [c.id for c in await client.containers.list(["labels.app==db"])] == ["a2"]
    assert [c.id for c in await client.containers.list(["image~=busybox"])] == ["a1"]
    assert [c.id for c in await client.containers.list(["id==a1", "id==a2"])] == ["a1", "a2"]
    assert [c.id for c in await client.containers.list([f"runtime.name=={RUNC_V2}"])] == ["a1", "a2"]
    with pytest.raises(InvalidArgument):
        await client.containers.list(["id=="])


async def test_update_masks(client: Client) -> None:
    await client.containers.create(make("u1", labels={"a": "1", "b": "2"}))
    c = make("u1", labels={"a": "10"})
    updated = await client.containers.update(c, ["labels.a", "labels.b"])
    assert updated.labels == {"a": "10"}
    assert updated.updated_at is not None and updated.created_at is not None
    assert updated.updated_at > updated.created_at
    updated = await client.containers.update(make("u1", image="other:1", snapshot_key="k2"), ["image", "snapshotkey"])
    assert (updated.image, updated.snapshot_key, updated.labels) == ("other:1", "k2", {"a": "10"})
    # no mask: labels, spec, extensions, image and snapshot key are replaced
    updated = await client.containers.update(make("u1", labels={"z": "9"}))
    assert updated.labels == {"z": "9"} and updated.image == "docker.io/library/busybox:latest"
    with pytest.raises(InvalidArgument, match="immutable"):
        await client.containers.update(make("u1", runtime_name="io.other.v1"))
    with pytest.raises(InvalidArgument, match="immutable"):
        await client.containers.update(make("u1", snapshotter="native"))
    with pytest.raises(InvalidArgument, match='cannot update "runtime"'):
        await client.containers.update(make("u1"), ["runtime"])
    with pytest.raises(NotFound):
        await client.containers.update(make("ghost"), ["labels"])


async def test_namespaces_isolate_and_block_delete(daemon: DaemonProcess) -> None:
    async with daemon.client("ns-one") as one, daemon.client("ns-two") as two:
        await one.containers.create(make("same"))
        await two.containers.create(make("same", labels={"two": "yes"}))
        assert (await one.containers.get("same")).labels == {}
        assert (await two.containers.get("same")).labels == {"two": "yes"}
        with pytest.raises(FailedPrecondition, match="containers"):
            await one.delete_namespace("ns-one")
        await one.containers.delete("same")
        await one.delete_namespace("ns-one")
        assert [c.id for c in await two.containers.list()] == ["same"]


async def test_events_and_ctr_style_request(daemon: DaemonProcess) -> None:
    md = [("containerd-namespace", "evns")]
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        sub = await subscribed(ch, "topic~=containers")
        stub = pb_grpc.ContainersStub(ch)
        # what ctr sends: zero (Go) timestamps, runc options as an empty Options Any
        msg = pb.Container(id="ctr1", image="img", snapshotter="overlayfs", snapshot_key="ctr1",
                           spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(SPEC).encode()))
        msg.runtime.name = RUNC_V2
        msg.runtime.options.type_url = "containerd.runc.v1.Options"
        msg.created_at.seconds = -62135596800
        resp = await stub.Create(pb.CreateContainerRequest(container=msg), metadata=md)
        assert resp.container.created_at.seconds > 1_700_000_000
        await stub.Delete(pb.DeleteContainerRequest(id="ctr1"), metadata=md)
        envs = []
        async for env in sub:
            envs.append(env)
            if len(envs) == 2:
                break
        sub.cancel()
    assert [e.topic for e in envs] == ["/containers/create", "/containers/delete"]
    created = events_pb.ContainerCreate.FromString(envs[0].event.value)
    assert created.id == "ctr1" and created.runtime.name == RUNC_V2
