"""Content/Info and Content/Read answered from the daemon's caches, against a real dockyardd:
every call below reads a blob whose record and bytes were read before (a warm cache), and must
answer exactly what the uncached path answers — ranges, errors, namespaces, deletes, labels."""

from __future__ import annotations

import os

import grpc
import pytest

from dock.client import Client
from dock.content import ContentAPI
from dockyard_api.containerd.services.content.v1 import content_pb2 as pb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument, NotFound
from tests.compat.test_ctr_content import ctr, quiet_daemon  # noqa: F401  (a fixture)
from tests.daemon import DaemonProcess
from tests.integration.test_content import content, dg, leased, md, stub

SMALL = 16 << 10  # the daemon's small-blob limit
FIXTURES = (content, stub)  # test_content's: a ContentAPI under the lease md() names, a raw stub


async def warm(content: ContentAPI, digest: str) -> bytes:
    """Info and a full Read, twice: the record and the bytes are cached after this."""
    for _ in range(2):
        await content.info(digest)
        data = await content.read_all(digest)
    return data


async def read_code(stub: pb_grpc.ContentStub, req: pb.ReadContentRequest, ns: str = "default") -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        async for _ in stub.Read(req, metadata=md(ns)):
            pass
    return ei.value.code()


async def test_info_and_read_after_write(content: ContentAPI) -> None:
    data = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
    written = await content.write("manifest", data, labels={"a": "1"})
    assert await warm(content, written.digest) == data
    for _ in range(3):
        assert await content.info(written.digest) == written
        assert await content.read_all(written.digest) == data
    boundary = os.urandom(SMALL)  # exactly at the limit: cached too
    d = (await content.write("boundary", boundary)).digest
    assert await warm(content, d) == boundary
    assert await content.read_all(d, SMALL - 5) == boundary[-5:]


async def test_ranges_on_a_cached_blob(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    data = bytes(range(256)) * 20
    d = (await content.write("ranges", data)).digest
    await warm(content, d)
    assert await content.read_all(d, 10, 20) == data[10:30]
    assert await content.read_all(d, 5000) == data[5000:]  # size 0: to the end
    assert await content.read_all(d, 5100, 1000) == data[5100:]  # clipped at the end
    assert await content.read_all(d, len(data)) == b""
    with pytest.raises(InvalidArgument, match=f"read past object length {len(data)} bytes"):
        await content.read_all(d, len(data) + 1)
    assert await read_code(stub, pb.ReadContentRequest(digest=d, offset=len(data) + 1)) == \
        grpc.StatusCode.OUT_OF_RANGE
    got = [(r.offset, r.data) async for r in stub.Read(pb.ReadContentRequest(digest=d, offset=7, size=3),
                                                        metadata=md())]
    assert got == [(7, data[7:10])]
    got = [(r.offset, r.data) async for r in stub.Read(pb.ReadContentRequest(digest=d, offset=-4, size=-1),
                                                        metadata=md())]
    assert got == [(0, data)]  # negative offset and size read as containerd reads them: 0, to the end


async def test_content_delete_is_not_found_at_once(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    data = b"deleted while cached"
    d = (await content.write("doomed", data)).digest
    await warm(content, d)
    await content.delete(d)
    with pytest.raises(NotFound, match=f"content digest {d}"):
        await content.info(d)
    with pytest.raises(NotFound, match=f"content digest {d}"):
        await content.read_all(d)
    assert await read_code(stub, pb.ReadContentRequest(digest=d)) == grpc.StatusCode.NOT_FOUND
    # Written again, it is back, with its new record.
    again = await content.write("reborn", data, labels={"round": "2"})
    assert (await content.info(d)).labels == {"round": "2"} and again.digest == d
    assert await warm(content, d) == data


async def test_garbage_collection_is_not_found_at_once(client: Client, daemon: DaemonProcess) -> None:
    shared = b"collected in one namespace, kept in the other"
    root = {"containerd.io/gc.root": "keep"}
    async with daemon.client("other") as other_client:
        other = await leased(other_client)
        mine = await leased(client)
        d = (await mine.write("gc-a", shared)).digest
        await other.write("gc-b", shared, labels=root)
        await warm(mine, d)
        await warm(other, d)
        await client.leases.delete("test", sync=True)  # the record in "default" goes
        with pytest.raises(NotFound):
            await mine.info(d)
        with pytest.raises(NotFound):
            await mine.read_all(d)
        assert await other.read_all(d) == shared  # still recorded there; bytes on disk
        blob = daemon.root / "content" / "blobs" / "sha256" / d.removeprefix("sha256:")
        assert blob.exists()
        await other.set_labels(d, {})  # no longer a root: the lease alone holds it
        await other_client.leases.delete("test", sync=True)
        assert not blob.exists()
        with pytest.raises(NotFound):
            await other.info(d)
        with pytest.raises(NotFound):
            await other.read_all(d)


async def test_namespace_isolation_with_a_warm_cache(daemon: DaemonProcess, content: ContentAPI,
                                                     stub: pb_grpc.ContentStub) -> None:
    data = b"only in default"
    d = (await content.write("isolated", data)).digest
    await warm(content, d)
    async with daemon.client("elsewhere") as other_client:
        other = await leased(other_client)
        with pytest.raises(NotFound, match=f"content digest {d}"):
            await other.info(d)
        with pytest.raises(NotFound, match=f"content digest {d}"):
            await other.read_all(d)
    assert await read_code(stub, pb.ReadContentRequest(digest=d), ns="elsewhere") == grpc.StatusCode.NOT_FOUND


async def test_updated_labels_show_at_once(content: ContentAPI) -> None:
    d = (await content.write("labels", b"labelled blob", labels={"a": "1"})).digest
    await warm(content, d)
    before = await content.info(d)
    updated = await content.set_labels(d, {"b": "2"})
    info = await content.info(d)
    assert info == updated and info.labels == {"a": "1", "b": "2"} and info.updated_at > before.updated_at
    await content.update(d, {"only": "this"}, ["labels"])
    assert (await content.info(d)).labels == {"only": "this"}


@pytest.mark.parametrize("size", [SMALL + 1, 3 * (1 << 20) + 17])
async def test_large_blobs_read_through_the_file(content: ContentAPI, size: int) -> None:
    data = os.urandom(size)
    d = (await content.write(f"large-{size}", data)).digest
    assert await warm(content, d) == data
    chunks = [c async for c in content.read(d)]
    assert b"".join(chunks) == data and all(len(c) <= 1 << 20 for c in chunks)
    assert await content.read_all(d, size - 100, 50) == data[-100:-50]
    await content.delete(d)
    with pytest.raises(NotFound):
        await content.read_all(d)


@pytest.mark.usefixtures("quiet_daemon")  # ctr's ingest holds no lease: let the start-up collection pass
def test_ctr_content_get_from_a_warm_cache(daemon: DaemonProcess) -> None:
    data = b'{"architecture": "amd64", "os": "linux"}\n'
    res = ctr(daemon, "content", "ingest", "--expected-digest", dg(data), "cfg", namespace="fast", stdin=data)
    assert res.returncode == 0, res.stderr
    for _ in range(3):
        got = ctr(daemon, "content", "get", dg(data), namespace="fast")
        assert got.returncode == 0 and got.stdout == data, got.stderr
    assert ctr(daemon, "content", "get", dg(data), namespace="default").returncode != 0
    assert ctr(daemon, "content", "rm", dg(data), namespace="fast").returncode == 0
    got = ctr(daemon, "content", "get", dg(data), namespace="fast")
    assert got.returncode != 0 and b"not found" in got.stderr
