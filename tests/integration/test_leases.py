"""containerd.services.leases.v1.Leases against a real dockyardd: every RPC, bad input, filters,
expiry; and the `dock leases` / `dock gc` commands."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from dock.client import Client
from dockyard_api.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, NotImplementedYet
from tests.daemon import DaemonProcess
from tests.integration.test_cli import dock
from tests.waiting import wait_until_async

DIGEST = "sha256:" + "ab" * 32
EXPIRE = "containerd.io/gc.expire"


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_create_with_id_and_labels(client: Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    lease = await client.leases.create("L", {"foo": "bar"}, expires=timedelta(hours=24))
    assert lease.id == "L" and lease.labels["foo"] == "bar"
    assert before <= lease.created_at <= datetime.now(UTC) + timedelta(seconds=1)
    expiry = datetime.strptime(lease.labels[EXPIRE], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiry - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    with pytest.raises(AlreadyExists, match='lease "L": already exists'):
        await client.leases.create("L")


async def test_create_generates_ids_like_containerd(client: Client) -> None:
    a = await client.leases.create()
    b = await client.leases.create()
    assert re.fullmatch(r"\d{19}-[A-Za-z0-9_-]{4}", a.id), a.id
    assert a.id != b.id
    assert {x.id for x in await client.leases.list()} == {a.id, b.id}


async def test_ids_may_be_paths_but_not_control_characters(client: Client) -> None:
    # ctr images mount uses the mount directory as the lease id
    assert (await client.leases.create("/tmp/mnt/some dir")).id == "/tmp/mnt/some dir"
    with pytest.raises(InvalidArgument, match="control characters"):
        await client.leases.create("bad\nid")
    with pytest.raises(InvalidArgument, match="maximum length"):
        await client.leases.create("x" * 5000)


async def test_bad_labels_are_refused(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="RFC 3339"):
        await client.leases.create("l", {EXPIRE: "tomorrow"})
    with pytest.raises(InvalidArgument, match="label key must not be empty"):
        await client.leases.create("l", {"": "x"})
    with pytest.raises(InvalidArgument, match="maximum size"):
        await client.leases.create("l", {"k": "v" * 5000})
    assert await client.leases.list() == []
    # offsets and fractions are RFC 3339 too
    await client.leases.create("ok", {EXPIRE: "2099-01-02T03:04:05.123456789+02:00"})


async def test_delete(client: Client) -> None:
    await client.leases.create("gone")
    await client.leases.delete("gone")
    assert await client.leases.list() == []
    with pytest.raises(NotFound, match='lease "gone": not found'):
        await client.leases.delete("gone")
    with pytest.raises(NotFound):
        await client.leases.delete("never", sync=True)


async def test_list_filters(client: Client) -> None:
    await client.leases.create("pull-a", {"purpose": "pull", "team": "red"})
    await client.leases.create("pull-b", {"purpose": "pull"})
    await client.leases.create("build", {"purpose": "build", "flag": ""})
    assert [x.id for x in await client.leases.list()] == ["build", "pull-a", "pull-b"]
    assert [x.id for x in await client.leases.list("labels.purpose==pull")] == ["pull-a", "pull-b"]
    assert [x.id for x in await client.leases.list("id==build")] == ["build"]
    assert [x.id for x in await client.leases.list("labels.team")] == ["pull-a"]
    assert [x.id for x in await client.leases.list("labels.flag")] == ["build"]
    assert [x.id for x in await client.leases.list("id~=^pull-", "id==build")] == ["build", "pull-a", "pull-b"]
    assert [x.id for x in await client.leases.list("labels.purpose==pull,labels.team!=red")] == ["pull-b"]
    assert await client.leases.list("id==nothing") == []
    with pytest.raises(InvalidArgument, match="filters: parse error"):
        await client.leases.list("labels.==x")


async def test_leases_are_per_namespace(daemon: DaemonProcess) -> None:
    async with daemon.client("one") as one, daemon.client("two") as two:
        await one.leases.create("same")
        await two.leases.create("same")
        await one.leases.delete("same")
        assert [x.id for x in await two.leases.list()] == ["same"]
        assert await one.leases.list() == []


async def test_resources_roundtrip(client: Client) -> None:
    await client.leases.create("l")
    await client.leases.add_resource("l", DIGEST, "content")
    await client.leases.add_resource("l", DIGEST, "content")  # idempotent
    await client.leases.add_resource("l", "layer-ref", "ingests")
    await client.leases.add_resource("l", "extract-1 sha256:x", "snapshots/overlayfs")
    found = [(r.type, r.id) for r in await client.leases.resources("l")]
    assert found == [("content", DIGEST), ("ingests", "layer-ref"), ("snapshots/overlayfs", "extract-1 sha256:x")]
    await client.leases.delete_resource("l", "layer-ref", "ingests")
    await client.leases.delete_resource("l", "not-held", "ingests")  # no error, as containerd
    found = [(r.type, r.id) for r in await client.leases.resources("l")]
    assert found == [("content", DIGEST), ("snapshots/overlayfs", "extract-1 sha256:x")]
    await client.leases.delete("l")
    with pytest.raises(NotFound):
        await client.leases.resources("l")


@pytest.mark.parametrize(("rid", "rtype", "error", "message"), [
    (DIGEST, "images", NotImplementedYet, "resource type images not supported yet"),
    (DIGEST, "", NotImplementedYet, "resource type  not supported yet"),
    (DIGEST, "content/x", InvalidArgument, "invalid resource type content/x"),
    ("ref", "ingests/x", InvalidArgument, "invalid resource type ingests/x"),
    ("k", "snapshots", InvalidArgument, "invalid snapshot resource type snapshots"),
    ("k", "snapshots/", InvalidArgument, "invalid snapshot resource type snapshots/"),
    ("k", "snapshots/a/b", InvalidArgument, "invalid snapshot resource type snapshots/a/b"),
    ("sha256:nothex", "content", InvalidArgument, "invalid content resource id sha256:nothex"),
    ("", "ingests", InvalidArgument, "resource id must not be empty"),
    ("", "snapshots/native", InvalidArgument, "resource id must not be empty"),
])
async def test_bad_resources(client: Client, rid: str, rtype: str, error: type[Exception], message: str) -> None:
    await client.leases.create("l")
    with pytest.raises(error, match=re.escape(message)):
        await client.leases.add_resource("l", rid, rtype)
    with pytest.raises(error, match=re.escape(message)):
        await client.leases.delete_resource("l", rid, rtype)
    assert await client.leases.resources("l") == []


async def test_resources_of_an_unknown_lease(client: Client) -> None:
    with pytest.raises(NotFound, match='lease "nope"'):
        await client.leases.add_resource("nope", DIGEST, "content")
    with pytest.raises(NotFound, match='lease "nope"'):
        await client.leases.add_resource("nope", DIGEST, "bogus")  # the lease is checked first
    with pytest.raises(NotFound):
        await client.leases.delete_resource("nope", DIGEST, "content")
    with pytest.raises(NotFound):
        await client.leases.resources("nope")


async def test_namespace_header_is_required(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await leases_pb2_grpc.LeasesStub(ch).List(leases_pb2.ListRequest())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    async with daemon.client() as c:
        c.namespace = "bad namespace!"
        with pytest.raises(InvalidArgument):
            await c.leases.list()
        with pytest.raises((InvalidArgument, FailedPrecondition)):
            await c.leases.create("x")


async def test_expired_leases_are_collected(daemon: DaemonProcess, client: Client) -> None:
    # Nothing here asks for a collection: after the start-up one, only ours removes "past".
    await asyncio.to_thread(daemon.wait_startup_collection)
    now = datetime.now(UTC)
    expiry = rfc3339(now + timedelta(seconds=1))  # whole seconds: 0 to 1 s from now
    await client.leases.create("past", {EXPIRE: expiry})
    await client.leases.create("future", {EXPIRE: rfc3339(now + timedelta(hours=1))})
    await client.leases.create("forever")
    assert {x.id for x in await client.leases.list()} == {"past", "future", "forever"}
    expires = datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    await wait_until_async(lambda: datetime.now(UTC) > expires, what='"past" to expire')
    stats = await client.leases.collect_garbage()
    assert stats.leases_removed == 1
    assert {x.id for x in await client.leases.list()} == {"future", "forever"}


def test_dock_leases_and_gc(daemon: DaemonProcess) -> None:
    a = daemon.address
    res = dock(a, "leases", "create", "--id", "L", "--expires", "1h30m", "foo=bar")
    assert res.returncode == 0 and res.stdout.strip() == "L", res.stderr
    res = dock(a, "leases", "create", "--expires", "0")
    generated = res.stdout.strip()
    assert res.returncode == 0 and re.fullmatch(r"\d+-[A-Za-z0-9_-]{4}", generated)
    rows = dock(a, "leases", "ls").stdout.splitlines()
    assert rows[0].split() == ["ID", "CREATED", "AT", "LABELS"]
    assert any(r.split()[0] == "L" and "foo=bar" in r and EXPIRE in r for r in rows[1:])
    assert any(r.split()[0] == generated and r.split()[-1] == "-" for r in rows[1:])
    assert dock(a, "leases", "ls", "-q", "labels.foo==bar").stdout == "L\n"
    data = json.loads(dock(a, "--format", "json", "leases", "ls", "id==L").stdout)
    assert data[0]["id"] == "L" and data[0]["labels"]["foo"] == "bar"
    assert dock(a, "leases", "resources", "L").stdout.split() == ["TYPE", "ID"]
    res = dock(a, "leases", "create", "--expires", "soon")
    assert res.returncode == 2 and "invalid duration" in res.stderr
    res = dock(a, "leases", "rm", "--sync", "L", "missing", generated)
    assert res.returncode == 1 and res.stdout.split() == ["L", generated]
    assert 'lease "missing": not found' in res.stderr
    res = dock(a, "gc")
    assert res.returncode == 0 and res.stdout.startswith("removed 0 content, 0 snapshots, 0 ingests")
    data = json.loads(dock(a, "--format", "json", "gc").stdout)
    assert set(data) == {"content_removed", "snapshots_removed", "ingests_removed", "leases_removed", "duration"}
