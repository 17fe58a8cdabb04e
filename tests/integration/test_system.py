"""Version, introspection, health, reflection and our System.Info against a real dockyardd."""

from __future__ import annotations

import stat
import uuid

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dock.client import Client
from dockyard_api.containerd.services.introspection.v1 import introspection_pb2_grpc
from dockyard_common.errors import InvalidArgument
from dockyard_common.version import VERSION
from tests.daemon import DaemonProcess, start_daemon


async def test_version_and_uuid(client: Client, daemon: DaemonProcess) -> None:
    v = await client.version()
    assert v.version == VERSION
    assert str(uuid.UUID(v.uuid)) == v.uuid
    assert (daemon.root / "uuid").read_text().strip() == v.uuid


async def test_uuid_is_stable_across_restarts(daemon: DaemonProcess) -> None:
    async with daemon.client() as c:
        first = (await c.version()).uuid
    assert daemon.stop() == 0
    d2 = start_daemon(base=daemon.base)
    try:
        async with d2.client() as c:
            assert (await c.version()).uuid == first
    finally:
        assert d2.stop() == 0


async def test_plugins_list_real_components(client: Client) -> None:
    plugins = await client.plugins()
    ids = {(p.type, p.id) for p in plugins}
    for service in ("version", "namespaces", "introspection", "events"):
        assert ("io.containerd.grpc.v1", service) in ids
    assert ("io.containerd.metadata.v1", "sqlite") in ids
    assert all(p.status == "ok" for p in plugins if p.type == "io.containerd.grpc.v1")


async def test_plugins_filters(client: Client) -> None:
    grpc_only = await client.plugins(["type==io.containerd.grpc.v1"])
    assert grpc_only and all(p.type == "io.containerd.grpc.v1" for p in grpc_only)
    one = await client.plugins(["type==io.containerd.grpc.v1,id==version"])
    assert [(p.type, p.id) for p in one] == [("io.containerd.grpc.v1", "version")]
    either = await client.plugins(["id==version", "id==namespaces"])
    assert sorted(p.id for p in either) == ["namespaces", "version"]
    with pytest.raises(InvalidArgument):
        await client.plugins(["id=="])


async def test_system_info(client: Client, daemon: DaemonProcess) -> None:
    info = await client.info()
    assert info.root == str(daemon.root) and info.state == str(daemon.state)
    assert info.address == daemon.address
    assert info.pid == daemon.proc.pid
    assert info.cgroup_driver in ("v1", "v2")
    from tests import ksm

    assert info.ksm == ("unavailable" if not ksm.available() else "on" if ksm.read("run") == 1 else "off")


async def test_health_and_reflection(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        resp = await health.Check(
            health_pb2.HealthCheckRequest(service="containerd.services.namespaces.v1.Namespaces"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = refl.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
        names = {s.name for s in answer.list_services_response.service}
        assert "containerd.services.version.v1.Version" in names
        assert "dockyard.system.v1.System" in names


@pytest.mark.parametrize("method", ["/containerd.services.version.v1.Version/Nope", "/no.such.v1.Service/Call"])
async def test_unknown_methods_are_unimplemented(daemon: DaemonProcess, method: str) -> None:
    """Every method is served through one table (supervisor/services/method_table.py): a miss
    must still be UNIMPLEMENTED, which clients rely on to fall back (ctr: ListStream -> List)."""
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(b"", metadata=[("containerd-namespace", "default")])
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_introspection_server_over_raw_grpc(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        resp = await introspection_pb2_grpc.IntrospectionStub(ch).Server(empty_pb2.Empty())
        assert uuid.UUID(resp.uuid)


def test_socket_mode_is_0660(daemon: DaemonProcess) -> None:
    mode = stat.S_IMODE(__import__("os").stat(daemon.address).st_mode)
    assert mode == 0o660
