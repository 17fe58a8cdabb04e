"""Images service against a real dockyardd: SDK, raw gRPC, events, namespaces, GC roots."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from dock.client import Client
from dock.images import OCI_INDEX, OCI_MANIFEST, Descriptor
from dockyard_api.containerd.events import image_pb2 as image_events
from dockyard_api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.daemon import DaemonProcess, start_daemon, subscribed
from tests.integration.test_cli import dock
from tests.waiting import wait_until_async

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
BUSYBOX = "docker.io/library/busybox:latest"
# Go's zero time, which ctr leaves in created_at/updated_at of every Create and Update
GO_ZERO = timestamp_pb2.Timestamp(seconds=-62135596800)


def target(digest: str = D1, size: int = 528, media_type: str = OCI_MANIFEST, **annotations: str) -> Descriptor:
    return Descriptor(media_type, digest, size, dict(annotations))


# --- SDK: every RPC -------------------------------------------------------------------------


async def test_create_get_list_delete(client: Client) -> None:
    made = await client.images.create(BUSYBOX, target(), {"team": "infra"})
    assert made.name == BUSYBOX and made.target == target() and made.labels == {"team": "infra"}
    assert made.created_at is not None and made.created_at == made.updated_at
    got = await client.images.get(BUSYBOX)
    assert got == made
    await client.images.create("docker.io/library/alpine:3", target(D2, 1000, OCI_INDEX))
    assert [i.name for i in await client.images.list()] == ["docker.io/library/alpine:3", BUSYBOX]
    await client.images.delete(BUSYBOX)
    assert [i.name for i in await client.images.list()] == ["docker.io/library/alpine:3"]
    with pytest.raises(NotFound, match=re.escape(f'image "{BUSYBOX}"')):
        await client.images.get(BUSYBOX)


async def test_create_makes_the_namespace(daemon: DaemonProcess) -> None:
    async with daemon.client("fresh") as c:
        assert [n.name for n in await c.list_namespaces()] == []
        await c.images.create("x", target())
        assert [n.name for n in await c.list_namespaces()] == ["fresh"]


async def test_target_annotations_roundtrip(client: Client) -> None:
    t = Descriptor(OCI_MANIFEST, D1, 528, {"io.containerd.image.name": BUSYBOX,
                                           "org.opencontainers.image.ref.name": "latest"})
    made = await client.images.create(BUSYBOX, t)
    assert made.target.annotations == t.annotations
    assert (await client.images.get(BUSYBOX)).target.annotations == t.annotations


async def test_update_labels_by_path(client: Client) -> None:
    await client.images.create("img", target(), {"a": "1", "b": "2"})
    img = await client.images.set_labels("img", {"a": "10", "containerd.io/gc.ref.content.x": D2})
    assert img.labels == {"a": "10", "b": "2", "containerd.io/gc.ref.content.x": D2}
    assert img.target == target()  # untouched: only label paths were named
    img = await client.images.set_labels("img", {"b": ""})  # empty value removes
    assert await client.images.set_labels("img", {}) == img  # nothing to set: nothing changes
    assert img.labels == {"a": "10", "containerd.io/gc.ref.content.x": D2}
    # a labels.<key> path whose key is absent from the request removes that label
    got = await client.images.get("img")
    got.labels = {}
    img = await client.images.update(got, ["labels.a"])
    assert img.labels == {"containerd.io/gc.ref.content.x": D2}
    got.labels = {"only": "this"}
    img = await client.images.update(got, ["labels"])
    assert img.labels == {"only": "this"}


async def test_update_target_keeps_created_at(client: Client) -> None:
    made = await client.images.create("img", target(), {"k": "v"})
    created = made.updated_at
    assert created is not None
    # The update must get a later time: on a coarse clock, wait until it has moved.
    await wait_until_async(lambda: datetime.now(UTC) > created, what="the clock to pass the image's creation")
    img = await client.images.set_target("img", target(D2, 99, OCI_INDEX, a="b"))
    assert img.target == target(D2, 99, OCI_INDEX, a="b")
    assert img.labels == {"k": "v"}
    assert img.created_at == made.created_at
    assert img.updated_at is not None and made.updated_at is not None and img.updated_at > made.updated_at


async def test_update_annotations_paths(client: Client) -> None:
    await client.images.create("img", target(a="1", b="2"))
    got = await client.images.get("img")
    got.target.annotations = {"a": "10", "c": "3"}
    img = await client.images.update(got, ["annotations.a", "annotations.b"])
    assert img.target.annotations == {"a": "10"}
    img = await client.images.update(got, ["annotations"])
    assert img.target.annotations == {"a": "10", "c": "3"}


async def test_update_without_mask_replaces_target_and_labels(client: Client) -> None:
    await client.images.create("img", target(), {"old": "1"})
    got = await client.images.get("img")
    got.labels = {"new": "2"}
    got.target = target(D2, 7)
    img = await client.images.update(got)
    assert img.labels == {"new": "2"} and img.target == target(D2, 7)
    got.target = Descriptor("", "", 0)
    with pytest.raises(InvalidArgument, match=re.escape("Target.Digest")):
        await client.images.update(got)  # no mask: the whole image, target included, must be valid


async def test_tag_copies_target_and_labels(client: Client) -> None:
    await client.images.create(BUSYBOX, target(), {"k": "v"})
    copy = await client.images.tag("busybox", "busybox:copy")  # source found by its normalized name
    assert copy.name == "docker.io/library/busybox:copy"
    assert copy.target == target() and copy.labels == {"k": "v"}
    with pytest.raises(AlreadyExists, match=re.escape('image "docker.io/library/busybox:copy": already exists')):
        await client.images.tag(BUSYBOX, "busybox:copy")


async def test_find_tries_the_exact_name_first(client: Client) -> None:
    await client.images.create("busybox", target(D1))
    await client.images.create(BUSYBOX, target(D2))
    assert (await client.images.find("busybox")).target.digest == D1
    await client.images.delete("busybox")
    assert (await client.images.find("busybox")).target.digest == D2
    with pytest.raises(NotFound):
        await client.images.find("nothere")


async def test_delete_sync_collects_garbage(client: Client) -> None:
    await client.images.create("img", target())
    await client.images.delete("img", sync=True)
    assert await client.images.list() == []


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("desc", "match"), [
    (Descriptor(OCI_MANIFEST, "", 1), 'Target.Digest "" invalid: invalid checksum digest format'),
    (Descriptor(OCI_MANIFEST, "sha256:abc", 1), 'Target.Digest "sha256:abc" invalid: invalid checksum digest length'),
    (Descriptor(OCI_MANIFEST, "md5:" + "0" * 32, 1), "unsupported digest algorithm"),
    (Descriptor(OCI_MANIFEST, "sha256:" + "G" * 64, 1), "invalid checksum digest format"),
    (Descriptor(OCI_MANIFEST, D1, 0), "Target.Size must be greater than zero"),
    (Descriptor(OCI_MANIFEST, D1, -5), "Target.Size must be greater than zero"),
    (Descriptor("", D1, 1), "Target.MediaType must be set"),
])
async def test_create_refuses_bad_targets(client: Client, desc: Descriptor, match: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(match)):
        await client.images.create("bad", desc)
    assert await client.images.list() == []


async def test_create_refuses_bad_names_and_labels(client: Client) -> None:
    with pytest.raises(InvalidArgument, match=re.escape("Image.Name required")):
        await client.images.create("", target())
    with pytest.raises(InvalidArgument, match=re.escape("control characters")):
        await client.images.create("a\nb", target())
    with pytest.raises(InvalidArgument, match=re.escape("image.Labels: label key and value greater than maximum size")):
        await client.images.create("big", target(), {"k": "v" * 5000})


async def test_duplicate_create_is_already_exists(client: Client) -> None:
    await client.images.create(BUSYBOX, target())
    with pytest.raises(AlreadyExists, match=re.escape(f'image "{BUSYBOX}": already exists')):
        await client.images.create(BUSYBOX, target(D2))
    assert (await client.images.get(BUSYBOX)).target.digest == D1


async def test_unknown_image(client: Client) -> None:
    with pytest.raises(NotFound, match=re.escape('image "nope": not found')):
        await client.images.get("nope")
    with pytest.raises(NotFound, match=re.escape('image "nope": not found')):
        await client.images.set_labels("nope", {"a": "b"})
    with pytest.raises(NotFound, match=re.escape('image "nope": not found')):
        await client.images.delete("nope")


@pytest.mark.parametrize("path", ["name", "target.digest", "created_at", "label", "annotation.x"])
async def test_bad_field_mask(client: Client, path: str) -> None:
    await client.images.create("img", target(), {"a": "1"})
    with pytest.raises(InvalidArgument, match=re.escape(f'cannot update "{path}" field on image "img"')):
        await client.images.update(await client.images.get("img"), [path])
    assert (await client.images.get("img")).labels == {"a": "1"}


async def test_update_to_an_invalid_target_is_refused(client: Client) -> None:
    await client.images.create("img", target())
    with pytest.raises(InvalidArgument, match=re.escape("Target.Size")):
        await client.images.set_target("img", Descriptor(OCI_MANIFEST, D2, 0))
    assert (await client.images.get("img")).target == target()


# --- filters --------------------------------------------------------------------------------


async def test_list_filters(client: Client) -> None:
    await client.images.create("docker.io/library/a:1", target(D1), {"team": "red", "dots.in/key": "x"})
    await client.images.create("docker.io/library/b:1", target(D2, 10, OCI_INDEX), {"team": "blue"})
    await client.images.create("example.com/c:1", target(D1, media_type=OCI_INDEX, note="y"))

    async def names(*filters: str) -> list[str]:
        return [i.name for i in await client.images.list(*filters)]

    assert await names("name==example.com/c:1") == ["example.com/c:1"]
    assert await names("name~=^docker.io/") == ["docker.io/library/a:1", "docker.io/library/b:1"]
    assert await names(f"target.digest=={D1}") == ["docker.io/library/a:1", "example.com/c:1"]
    assert await names("target.mediatype~=index") == ["docker.io/library/b:1", "example.com/c:1"]
    assert await names("labels.team==red") == ["docker.io/library/a:1"]
    assert await names("labels.team") == ["docker.io/library/a:1", "docker.io/library/b:1"]
    assert await names('labels."dots.in/key"==x') == ["docker.io/library/a:1"]
    assert await names("annotations.note==y") == ["example.com/c:1"]
    assert await names("labels.team==red", "labels.team==blue") == [  # any of several filters
        "docker.io/library/a:1", "docker.io/library/b:1"]
    assert await names("labels.team==red,target.mediatype~=index") == []  # all selectors of one
    assert len(await names("")) == 3  # ctr sends [""]: everything
    with pytest.raises(InvalidArgument, match=re.escape("filters: parse error")):
        await client.images.list("name==")


# --- namespaces -----------------------------------------------------------------------------


async def test_namespace_isolation(daemon: DaemonProcess) -> None:
    async with daemon.client("one") as one, daemon.client("two") as two:
        await one.images.create(BUSYBOX, target(D1), {"ns": "one"})
        await two.images.create(BUSYBOX, target(D2), {"ns": "two"})
        assert (await one.images.get(BUSYBOX)).target.digest == D1
        assert (await two.images.get(BUSYBOX)).target.digest == D2
        await one.images.create("only-one", target())
        assert [i.name for i in await two.images.list()] == [BUSYBOX]
        with pytest.raises(NotFound):
            await two.images.get("only-one")
        with pytest.raises(NotFound):
            await two.images.delete("only-one")
        await one.images.delete(BUSYBOX)
        assert (await two.images.get(BUSYBOX)).labels == {"ns": "two"}


async def test_namespace_with_images_cannot_be_deleted(daemon: DaemonProcess) -> None:
    async with daemon.client("held") as c:
        await c.images.create(BUSYBOX, target())
        with pytest.raises(FailedPrecondition,
                           match=re.escape('namespace "held" must be empty, but it still has images')):
            await c.delete_namespace("held")
        await c.images.delete(BUSYBOX)
        await c.delete_namespace("held")
        assert await c.list_namespaces() == []


async def test_images_persist_across_restart(daemon: DaemonProcess) -> None:
    async with daemon.client() as c:
        made = await c.images.create(BUSYBOX, target(a="b"), {"x": "y"})
    assert daemon.stop() == 0
    d2 = start_daemon(base=daemon.base)
    try:
        async with d2.client() as c:
            assert await c.images.get(BUSYBOX) == made
    finally:
        assert d2.stop() == 0


# --- garbage collection ---------------------------------------------------------------------


async def test_an_image_keeps_its_target_and_label_refs(client: Client) -> None:
    """Images are GC roots: the target blob and gc.ref labels survive a collection."""
    config = b'{"architecture":"amd64","os":"linux"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
        "size": len(config)}, "layers": []}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    extra = b"referenced from a label"
    extra_digest = "sha256:" + hashlib.sha256(extra).hexdigest()
    stray = b"nothing keeps me"
    stray_digest = "sha256:" + hashlib.sha256(stray).hexdigest()
    # written under a lease, as a pull does; once the lease goes only the image keeps them
    lease = await client.leases.create()
    cs = client.content.with_lease(lease.id)
    await cs.write("config", config, expected=config_digest)
    await cs.write("manifest", manifest, expected=manifest_digest,
                   labels={"containerd.io/gc.ref.content.config": config_digest})
    await cs.write("extra", extra, expected=extra_digest)
    await cs.write("stray", stray, expected=stray_digest)
    await client.images.create("img", target(manifest_digest, len(manifest)),
                               {"containerd.io/gc.ref.content.extra": extra_digest})
    await client.leases.delete(lease.id, sync=True)
    for kept in (manifest_digest, config_digest, extra_digest):
        assert await client.content.exists(kept), kept
    assert not await client.content.exists(stray_digest)
    await client.images.delete("img", sync=True)  # no other root: everything goes
    for gone in (manifest_digest, config_digest, extra_digest):
        assert not await client.content.exists(gone), gone


# --- raw gRPC -------------------------------------------------------------------------------


@pytest.fixture
async def channel(daemon: DaemonProcess) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        yield ch


def md(ns: str = "raw") -> list[tuple[str, str]]:
    return [("containerd-namespace", ns)]


def raw_image(name: str, digest: str = D1, **labels: str) -> images_pb2.Image:
    """An image the way ctr sends it: zero-time timestamps included."""
    return images_pb2.Image(name=name, labels=labels, created_at=GO_ZERO, updated_at=GO_ZERO,
                            target=descriptor_pb2.Descriptor(media_type=OCI_MANIFEST, digest=digest, size=528))


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def test_raw_grpc_rpcs_and_codes(channel: grpc.aio.Channel) -> None:
    stub = images_pb2_grpc.ImagesStub(channel)
    resp = await stub.Create(images_pb2.CreateImageRequest(image=raw_image(BUSYBOX)), metadata=md())
    # the zero times the client sent were replaced by the server's
    assert resp.image.created_at.seconds > 0 and resp.image.updated_at == resp.image.created_at
    assert resp.image.target.digest == D1
    assert await code_of(stub.Create(images_pb2.CreateImageRequest(image=raw_image(BUSYBOX)), metadata=md())) == (
        grpc.StatusCode.ALREADY_EXISTS, f'image "{BUSYBOX}": already exists')

    got = await stub.Get(images_pb2.GetImageRequest(name=BUSYBOX), metadata=md())
    assert got.image == resp.image
    assert await code_of(stub.Get(images_pb2.GetImageRequest(name="x"), metadata=md())) == (
        grpc.StatusCode.NOT_FOUND, 'image "x": not found')

    # ctr images label: labels.<key> paths, zero times
    upd = await stub.Update(images_pb2.UpdateImageRequest(
        image=raw_image(BUSYBOX, foo="bar"), update_mask=field_mask_pb2.FieldMask(paths=["labels.foo"])),
        metadata=md())
    assert dict(upd.image.labels) == {"foo": "bar"} and upd.image.created_at == resp.image.created_at
    assert upd.image.updated_at.ToNanoseconds() >= resp.image.updated_at.ToNanoseconds()

    # ctr import: Update(target) on a missing image is NOT_FOUND, so it falls back to Create
    mask = field_mask_pb2.FieldMask(paths=["target"])
    assert (await code_of(stub.Update(images_pb2.UpdateImageRequest(image=raw_image("new"), update_mask=mask),
                                      metadata=md())))[0] == grpc.StatusCode.NOT_FOUND
    assert await code_of(stub.Update(images_pb2.UpdateImageRequest(image=raw_image(""), update_mask=mask),
                                     metadata=md())) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                         "Image.Name required: invalid argument")
    assert (await code_of(stub.Update(images_pb2.UpdateImageRequest(
        image=raw_image(BUSYBOX), update_mask=field_mask_pb2.FieldMask(paths=["spec"])), metadata=md())) == (
        grpc.StatusCode.INVALID_ARGUMENT, f'cannot update "spec" field on image "{BUSYBOX}": invalid argument'))

    # missing target: an unset Descriptor has no digest
    no_target = images_pb2.Image(name="t")
    assert await code_of(stub.Create(images_pb2.CreateImageRequest(image=no_target), metadata=md())) == (
        grpc.StatusCode.INVALID_ARGUMENT, 'Target.Digest "" invalid: invalid checksum digest format: invalid argument')

    listed = await stub.List(images_pb2.ListImagesRequest(filters=[""]), metadata=md())
    assert [i.name for i in listed.images] == [BUSYBOX]
    await stub.Delete(images_pb2.DeleteImageRequest(name=BUSYBOX, sync=False), metadata=md())
    assert await code_of(stub.Delete(images_pb2.DeleteImageRequest(name=BUSYBOX), metadata=md())) == (
        grpc.StatusCode.NOT_FOUND, f'image "{BUSYBOX}": not found')


async def test_raw_grpc_needs_a_namespace(channel: grpc.aio.Channel) -> None:
    stub = images_pb2_grpc.ImagesStub(channel)
    code, _ = await code_of(stub.List(images_pb2.ListImagesRequest()))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_events_published(channel: grpc.aio.Channel, daemon: DaemonProcess) -> None:
    call = await subscribed(channel, 'topic~="^/images/"', namespace="evt")
    async with daemon.client("evt") as c:
        await c.images.create("img", target(), {"a": "b"})
        await c.images.set_labels("img", {"a": "c"})
        await c.images.delete("img")
    envs = []
    async for env in call:
        envs.append(env)
        if len(envs) == 3:
            break
    call.cancel()
    assert [e.topic for e in envs] == ["/images/create", "/images/update", "/images/delete"]
    assert [e.event.type_url for e in envs] == [
        "containerd.services.images.v1.ImageCreate", "containerd.services.images.v1.ImageUpdate",
        "containerd.services.images.v1.ImageDelete"]
    assert all(e.namespace == "evt" for e in envs)
    created = image_events.ImageCreate.FromString(envs[0].event.value)
    assert created.name == "img" and dict(created.labels) == {"a": "b"}
    assert dict(image_events.ImageUpdate.FromString(envs[1].event.value).labels) == {"a": "c"}
    assert image_events.ImageDelete.FromString(envs[2].event.value).name == "img"


async def test_failed_calls_publish_nothing(channel: grpc.aio.Channel, daemon: DaemonProcess) -> None:
    call = await subscribed(channel, 'topic~="^/images/"', namespace="evt")
    async with daemon.client("evt") as c:
        with pytest.raises(NotFound):
            await c.images.delete("missing")
        with pytest.raises(InvalidArgument):
            await c.images.create("bad", Descriptor("", "", 0))
        await c.images.create("marker", target())
    env = await asyncio.wait_for(anext(aiter(call)), 10)
    call.cancel()
    assert env.topic == "/images/create"
    assert image_events.ImageCreate.FromString(env.event.value).name == "marker"


# --- CLI ------------------------------------------------------------------------------------


async def test_cli_ls_tag_label_rm(daemon: DaemonProcess) -> None:
    async with daemon.client() as c:
        await c.images.create(BUSYBOX, target(), {"team": "red"})
    a = daemon.address
    table = dock(a, "images", "ls").stdout.splitlines()
    assert table[0].split() == ["REF", "TYPE", "DIGEST", "SIZE", "UNPACKED", "LABELS"]
    # no blob behind the record: ctr's size is the target's own (all it could walk), nothing unpacked
    assert table[1].split() == [BUSYBOX, "oci-manifest", D1, "528", "B", "-", "team=red"]
    res = dock(a, "images", "tag", "busybox", "busybox:copy", "localhost:5000/bb")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["docker.io/library/busybox:copy", "localhost:5000/bb:latest"]
    res = dock(a, "images", "tag", "busybox", "busybox:copy")
    assert res.returncode == 1
    assert res.stderr.strip() == 'dock: image "docker.io/library/busybox:copy": already exists'
    assert dock(a, "images", "tag", "--force", "busybox", "busybox:copy").returncode == 0
    res = dock(a, "images", "tag", "busybox", "Bad:Name")
    assert res.returncode == 1 and "must be lowercase" in res.stderr and "Traceback" not in res.stderr
    assert dock(a, "i", "label", "busybox:copy", "tier=1", "team=").stdout.strip() == "tier=1"
    assert dock(a, "images", "ls", "-q", "labels.tier==1").stdout == "docker.io/library/busybox:copy\n"
    data = json.loads(dock(a, "--format", "json", "images", "ls", "name==localhost:5000/bb:latest").stdout)
    assert data[0]["name"] == "localhost:5000/bb:latest" and data[0]["target"]["digest"] == D1
    assert data[0]["created_at"].startswith("20")
    res = dock(a, "images", "rm", "busybox", "nothere", "localhost:5000/bb")
    assert res.returncode == 1
    assert res.stdout.split() == [BUSYBOX, "localhost:5000/bb:latest"]
    assert 'image "nothere": not found' in res.stderr
    assert dock(a, "images", "ls", "-q").stdout == "docker.io/library/busybox:copy\n"
