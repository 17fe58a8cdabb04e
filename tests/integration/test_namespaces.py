"""Namespaces service against a real dockyardd."""

from __future__ import annotations

import grpc
import pytest

from dock.client import Client
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from tests.daemon import DaemonProcess


async def test_fresh_daemon_lists_no_namespaces(client: Client) -> None:
    assert await client.list_namespaces() == []


async def test_create_get_list_delete(client: Client) -> None:
    created = await client.create_namespace("team-a", {"owner": "infra", "tier": "1"})
    assert created.name == "team-a" and created.labels == {"owner": "infra", "tier": "1"}
    assert (await client.get_namespace("team-a")).labels == {"owner": "infra", "tier": "1"}
    await client.create_namespace("team-b")
    assert [n.name for n in await client.list_namespaces()] == ["team-a", "team-b"]
    await client.delete_namespace("team-a")
    assert [n.name for n in await client.list_namespaces()] == ["team-b"]
    with pytest.raises(NotFound, match='namespace "team-a"'):
        await client.get_namespace("team-a")


async def test_create_twice_is_already_exists(client: Client) -> None:
    await client.create_namespace("dup")
    with pytest.raises(AlreadyExists, match='namespace "dup": already exists'):
        await client.create_namespace("dup")


async def test_delete_missing_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.delete_namespace("never")


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "a..b", "UPPER space", "x" * 77, "a/b", "ü"])
async def test_invalid_names_are_invalid_argument(client: Client, name: str) -> None:
    with pytest.raises(InvalidArgument):
        await client.create_namespace(name)


async def test_valid_name_edge_cases(client: Client) -> None:
    for name in ["a", "A1", "a.b-c_d", "x" * 76]:
        await client.create_namespace(name)
    assert len(await client.list_namespaces()) == 4


async def test_update_label_paths(client: Client) -> None:
    await client.create_namespace("lab", {"a": "1", "b": "2"})
    ns = await client.update_namespace("lab", {"a": "10", "containerd.io/defaults/snapshotter": "native"},
                                       ["labels.a", "labels.containerd.io/defaults/snapshotter"])
    assert ns.labels == {"a": "10", "b": "2", "containerd.io/defaults/snapshotter": "native"}
    # a path whose key is absent from the request removes that label
    ns = await client.update_namespace("lab", {}, ["labels.b"])
    assert ns.labels == {"a": "10", "containerd.io/defaults/snapshotter": "native"}
    # no mask replaces all labels
    ns = await client.update_namespace("lab", {"only": "this"})
    assert ns.labels == {"only": "this"}
    assert (await client.get_namespace("lab")).labels == {"only": "this"}


async def test_update_bad_field_mask(client: Client) -> None:
    await client.create_namespace("mask")
    with pytest.raises(InvalidArgument, match='cannot update "name"'):
        await client.update_namespace("mask", {}, ["name"])


async def test_update_missing_namespace(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.update_namespace("ghost", {"a": "b"}, ["labels.a"])


async def test_list_filter(client: Client) -> None:
    await client.create_namespace("f1", {"team": "red"})
    await client.create_namespace("f2", {"team": "blue"})
    assert [n.name for n in await client.list_namespaces("labels.team==red")] == ["f1"]
    assert [n.name for n in await client.list_namespaces("name~=^f")] == ["f1", "f2"]
    with pytest.raises(InvalidArgument):
        await client.list_namespaces("name==")


async def test_label_too_large(client: Client) -> None:
    with pytest.raises(InvalidArgument):
        await client.create_namespace("big", {"k": "v" * 5000})


async def test_namespaces_persist_across_restart(daemon: DaemonProcess) -> None:
    async with daemon.client() as c:
        await c.create_namespace("keep", {"x": "y"})
    assert daemon.stop() == 0
    from tests.daemon import start_daemon

    d2 = start_daemon(base=daemon.base)
    try:
        async with d2.client() as c:
            assert (await c.get_namespace("keep")).labels == {"x": "y"}
    finally:
        assert d2.stop() == 0


async def test_raw_grpc_status_codes(daemon: DaemonProcess) -> None:
    """The codes ctr relies on, seen by a plain grpc client."""
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stub = namespace_pb2_grpc.NamespacesStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Get(namespace_pb2.GetNamespaceRequest(name="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == 'namespace "nope": not found'
        ns = namespace_pb2.Namespace(name="x1")
        await stub.Create(namespace_pb2.CreateNamespaceRequest(namespace=ns))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Create(namespace_pb2.CreateNamespaceRequest(namespace=ns))
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS



async def test_implicit_creation_shows_after_a_cached_read(daemon: DaemonProcess) -> None:
    """Namespaces are served from memory; a namespace another store creates implicitly (the
    first lease in it) must still show at once, and a label change too."""
    async with daemon.client() as c:
        assert [n.name for n in await c.list_namespaces()] == []
        async with daemon.client(namespace="implicit") as other:
            await other.leases.create("first")
        assert [n.name for n in await c.list_namespaces()] == ["implicit"]
        await c.update_namespace("implicit", {"a": "b"})
        assert (await c.get_namespace("implicit")).labels == {"a": "b"}
        got = await c.get_namespace("implicit")
        got.labels["mutated"] = "by caller"  # callers get copies, not the cache itself
        assert (await c.get_namespace("implicit")).labels == {"a": "b"}
