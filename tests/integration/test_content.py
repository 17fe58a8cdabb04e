"""Content service: every RPC against a real dockyardd, through the SDK and on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from dock.client import Client
from dock.content import ContentAPI, ContentWriter
from dockyard_api.containerd.events import content_pb2 as content_events
from dockyard_api.containerd.services.content.v1 import content_pb2 as pb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc as pb_grpc
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.daemon import REPO, DaemonProcess, subscribed
from tests.integration.test_cli import dock
from tests.waiting import wait_until_async


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LEASE = "test"  # content nothing holds is garbage: every test writes under this lease


def md(ns: str = "default", lease: str = LEASE) -> list[tuple[str, str]]:
    return [("containerd-namespace", ns)] + ([("containerd-lease", lease)] if lease else [])


async def leased(c: Client) -> ContentAPI:
    """`c.content` under a lease of its namespace, so the garbage collector keeps what it writes."""
    await c.leases.create(LEASE)
    return c.content.with_lease(LEASE)


def collections(daemon: DaemonProcess) -> int:
    """How many garbage collections this daemon has run (each logs one line, at debug level)."""
    return daemon.log()[daemon.log_start:].count("garbage collection: removed")


def blobs_on_disk(daemon: DaemonProcess) -> list[str]:
    d = daemon.root / "content" / "blobs" / "sha256"
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.exists() else []


@pytest.fixture
async def content(client: Client) -> ContentAPI:
    return await leased(client)


@pytest.fixture
async def stub(daemon: DaemonProcess, content: ContentAPI) -> AsyncIterator[pb_grpc.ContentStub]:
    """A raw stub; `content` made the lease that md() names."""
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        yield pb_grpc.ContentStub(ch)


async def exchange(call: grpc.aio.StreamStreamCall, req: pb.WriteContentRequest) -> pb.WriteContentResponse:
    await call.write(req)
    resp = await call.read()
    assert resp is not grpc.aio.EOF
    return resp


BAD_DIGESTS = ["", "sha256:abc", "sha256:" + "A" * 64, "md5:d41d8cd98f00b204e9800998ecf8427e", "a" * 64]


# -- Info, Read, List, Update, Delete -------------------------------------------------------


async def test_write_info_read_roundtrip(content: ContentAPI) -> None:
    data = os.urandom(3 * (1 << 20) + 123)
    info = await content.write("roundtrip", data, labels={"team": "red"})
    assert (info.digest, info.size, info.labels) == (dg(data), len(data), {"team": "red"})
    assert info.created_at.tzinfo is not None and info.updated_at >= info.created_at
    got = await content.info(dg(data))
    assert got == info
    chunks = [c async for c in content.read(dg(data))]
    assert b"".join(chunks) == data
    assert all(len(c) <= 1 << 20 for c in chunks) and len(chunks) == 4
    assert await content.list_statuses() == []


async def test_read_ranges(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    data = bytes(range(256)) * 100
    d = (await content.write("ranges", data)).digest
    assert await content.read_all(d, 10, 20) == data[10:30]
    assert await content.read_all(d, 25000) == data[25000:]  # size 0: to the end
    assert await content.read_all(d, 25500, 1000) == data[25500:]  # clipped at the end
    assert await content.read_all(d, len(data)) == b""
    with pytest.raises(InvalidArgument, match="read past object length 25600 bytes"):
        await content.read_all(d, len(data) + 1)
    # On the wire: OUT_OF_RANGE as containerd; each chunk carries its offset.
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        async for _ in stub.Read(pb.ReadContentRequest(digest=d, offset=len(data) + 1), metadata=md()):
            pass
    assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
    offsets = [r.offset async for r in stub.Read(pb.ReadContentRequest(digest=d, offset=7), metadata=md())]
    assert offsets == [7]


async def test_read_cancelled_by_client_is_harmless(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    data = os.urandom(5 << 20)
    d = (await content.write("cancel-read", data)).digest
    call = stub.Read(pb.ReadContentRequest(digest=d), metadata=md())
    first = await call.read()
    assert first.data == data[: 1 << 20]
    call.cancel()
    assert await content.read_all(d) == data


async def test_empty_blob(content: ContentAPI) -> None:
    info = await content.write("empty", b"")
    assert (info.digest, info.size) == (dg(b""), 0)
    assert await content.read_all(dg(b"")) == b""


async def test_missing_and_bad_digests(content: ContentAPI) -> None:
    missing = dg(b"never written")
    for op in (content.info, content.delete, content.read_all):
        with pytest.raises(NotFound, match=f"content digest {missing}"):
            await op(missing)
    with pytest.raises(NotFound):
        await content.update(missing, {"a": "b"})
    for bad in BAD_DIGESTS:
        for op in (content.info, content.delete, content.read_all):
            with pytest.raises(InvalidArgument):
                await op(bad)
        with pytest.raises(InvalidArgument):
            await content.update(bad, {})
        if bad:
            with pytest.raises(InvalidArgument):
                await content.write("bad-expected", b"x", expected=bad)


async def test_update_labels_and_masks(content: ContentAPI) -> None:
    d = (await content.write("lbl", b"labelled", labels={"a": "1", "b": "2"})).digest
    before = await content.info(d)
    info = await content.set_labels(d, {"c": "3", "a": ""})  # a= removes a
    assert info.labels == {"b": "2", "c": "3"}
    assert info.updated_at > before.updated_at and info.created_at == before.created_at
    # A dotted, slashed key: the path splits on the first dot only.
    key = "containerd.io/gc.ref.content.l.0"
    info = await content.update(d, {key: "sha256:x"}, [f"labels.{key}"])
    assert info.labels[key] == "sha256:x"
    info = await content.update(d, {"only": "this"}, ["labels"])
    assert info.labels == {"only": "this"}
    info = await content.update(d, {"no": "mask"})  # empty mask: all labels replaced
    assert info.labels == {"no": "mask"}
    for path in ("size", "digest", "created_at", "labelsx"):
        with pytest.raises(InvalidArgument, match=f'cannot update "{path}" field on content info "{d}"'):
            await content.update(d, {}, [path])
    with pytest.raises(InvalidArgument, match="label key and value greater than maximum size"):
        await content.set_labels(d, {"big": "x" * 5000})
    assert (await content.info(d)).labels == {"no": "mask"}


async def test_list_filters(content: ContentAPI) -> None:
    a = (await content.write("fa", b"alpha", labels={"team": "red", "x.y/z": "1"})).digest
    b = (await content.write("fb", b"bravo!", labels={"team": "blue"})).digest
    c = (await content.write("fc", b"charlie")).digest

    async def digests(*filters: str) -> list[str]:
        return sorted(i.digest for i in await content.list(list(filters)))

    assert await digests() == sorted([a, b, c])
    assert await digests("") == sorted([a, b, c])  # ctr sends [""]
    assert await digests("labels.team==red") == [a]
    assert await digests("labels.team") == sorted([a, b])
    assert await digests("labels.team!=red") == sorted([b, c])
    assert await digests('labels."x.y/z"==1') == [a]
    assert await digests(f"digest=={b}") == [b]
    assert await digests("size==7") == [c]
    assert await digests("labels.team==red", "labels.team==blue") == sorted([a, b])  # OR
    assert await digests("labels.team~=^b", f"digest=={c}") == sorted([b, c])
    assert await digests("labels.team==red,size==6") == []  # AND
    with pytest.raises(InvalidArgument, match="filters: parse error"):
        await content.list(["labels.==x"])


async def test_list_batches_many(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    for i in range(250):
        await content.write(f"many-{i}", f"blob {i}".encode())
    sizes = [len(r.info) async for r in stub.List(pb.ListContentRequest(), metadata=md())]
    assert sizes == [100, 100, 50]


async def test_delete_publishes_event_and_keeps_other_namespaces(daemon: DaemonProcess, content: ContentAPI) -> None:
    data = b"shared between namespaces"
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        sub = await subscribed(ch, 'topic=="/content/delete"', namespace="default")
        await asyncio.to_thread(daemon.wait_startup_collection)  # the next collection counted is the delete's
        async with daemon.client("other") as other_client:
            other = await leased(other_client)
            d = (await content.write("del", data)).digest
            await other.write("del", data)
            before = collections(daemon)
            await content.delete(d)
            with pytest.raises(NotFound):
                await content.info(d)
            with pytest.raises(NotFound):
                await content.delete(d)
            # The delete scheduled a collection: once it has run, the blob must still be there.
            await wait_until_async(lambda: collections(daemon) > before, what="the collection the delete scheduled")
            assert await other.read_all(d) == data  # the other namespace still has it
        env = await asyncio.wait_for(anext(aiter(sub)), 10)
        sub.cancel()
    assert (env.topic, env.namespace, env.event.type_url) == (
        "/content/delete", "default", "containerd.events.ContentDelete")
    assert content_events.ContentDelete.FromString(env.event.value).digest == d


# -- namespaces -------------------------------------------------------------------------------


async def test_namespace_isolation_and_one_blob_on_disk(daemon: DaemonProcess, content: ContentAPI) -> None:
    data = os.urandom(100_000)
    async with daemon.client("ns-b") as b_client:
        b = await leased(b_client)
        await content.write("same-ref", data)
        with pytest.raises(NotFound):
            await b.info(dg(data))
        with pytest.raises(NotFound):
            await b.read_all(dg(data))
        assert await b.list() == []
        # The same ref in two namespaces: two independent ingests.
        wa = await content.writer("pending", total=10)
        wb = await b.writer("pending", total=20)
        await wa.write(b"aaa", 0)
        await wb.write(b"bbbbb", 0)
        await wa.close()
        await wb.close()
        assert [(s.ref, s.offset, s.total) for s in await content.list_statuses()] == [("pending", 3, 10)]
        assert [(s.ref, s.offset, s.total) for s in await b.list_statuses()] == [("pending", 5, 20)]
        await b.abort("pending")
        assert (await content.status("pending")).offset == 3
        with pytest.raises(NotFound):
            await b.status("pending")
        # Writing the same bytes in the second namespace records them; the blob stays single.
        info = await b.write("other-ref", data)
        assert info.digest == dg(data)
        assert blobs_on_disk(daemon) == [dg(data).split(":")[1]]
        assert [i.digest for i in await b.list()] == [dg(data)]
        await content.abort("pending")


async def test_shared_blob_needs_no_bytes(daemon: DaemonProcess, content: ContentAPI) -> None:
    """containerd's shared policy: with `expected`, content of another namespace is recorded at commit."""
    data = os.urandom(50_000)
    await content.write("orig", data)
    async with daemon.client("ns-share") as b_client:
        b = await leased(b_client)
        w = await b.writer("fetch", total=len(data), expected=dg(data))
        st = w.status()
        assert w.shared and (st.offset, st.total) == (len(data), len(data)) and w.digest() == dg(data)
        assert await w.commit(len(data), dg(data), {"src": "shared"}) == dg(data)
        info = await b.info(dg(data))
        assert (info.size, info.labels) == (len(data), {"src": "shared"})
        # Written again with expected: now the namespace has it, the first message says so.
        with pytest.raises(AlreadyExists, match=f"content {dg(data)}"):
            await b.writer("fetch-again", expected=dg(data))
        # The SDK's write() treats that as success.
        assert (await b.write("fetch-again", data, expected=dg(data))).digest == dg(data)
        # A shared ingest whose client rewrites from 0 anyway still commits.
        async with daemon.client("ns-share2") as c_client:
            w = await (await leased(c_client)).writer("rewrite", total=len(data), expected=dg(data))
            assert await w.write(data, 0) == len(data)
            assert await w.commit(len(data), dg(data)) == dg(data)
    assert blobs_on_disk(daemon) == [dg(data).split(":")[1]]


async def test_delete_namespace_with_blobs(daemon: DaemonProcess) -> None:
    async with daemon.client("full") as c:
        d = (await c.content.write("x", b"occupant", labels={"containerd.io/gc.root": "test"})).digest
        with pytest.raises(FailedPrecondition, match='namespace "full" must be empty, but it still has blobs'):
            await c.delete_namespace("full")
        await c.content.delete(d)
        await c.delete_namespace("full")


# -- Write: the wire protocol ---------------------------------------------------------------------


async def test_write_wire_sequence_like_ctr(stub: pb_grpc.ContentStub, content: ContentAPI) -> None:
    data = os.urandom((1 << 20) + 5)
    call = stub.Write(metadata=md())
    r = await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="wire", total=len(data)))
    assert (r.action, r.offset, r.total, r.digest) == (pb.STAT, 0, len(data), dg(b""))
    assert r.started_at.seconds > 0
    r = await exchange(call, pb.WriteContentRequest(action=pb.STAT))  # bare STAT, as ctr sends
    assert (r.action, r.offset, r.total) == (pb.STAT, 0, len(data))
    r = await exchange(call, pb.WriteContentRequest(action=pb.WRITE, offset=0, data=data[: 1 << 20]))
    assert (r.action, r.offset, r.total, r.digest) == (pb.WRITE, 1 << 20, len(data), dg(data[: 1 << 20]))
    r = await exchange(call, pb.WriteContentRequest(action=pb.WRITE, offset=1 << 20, data=data[1 << 20:]))
    assert r.offset == len(data)
    r = await exchange(call, pb.WriteContentRequest(action=pb.COMMIT, total=len(data), offset=len(data),
                                                    labels={"at": "commit"}))
    assert (r.action, r.offset, r.digest) == (pb.COMMIT, len(data), dg(data))
    assert await call.read() is grpc.aio.EOF  # one response per request, then the call ends
    assert await call.code() == grpc.StatusCode.OK
    assert (await content.info(dg(data))).labels == {"at": "commit"}


async def test_write_already_exists_on_first_message(stub: pb_grpc.ContentStub, content: ContentAPI) -> None:
    d = (await content.write("exists", b"present")).digest
    call = stub.Write(metadata=md())
    await call.write(pb.WriteContentRequest(action=pb.STAT, ref="exists-2", total=7, expected=d))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call.read()
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert ei.value.details() == f"content {d}: already exists"
    assert await content.list_statuses() == []


async def test_write_expected_on_commit_of_existing(stub: pb_grpc.ContentStub, content: ContentAPI) -> None:
    d = (await content.write("e1", b"dup")).digest
    call = stub.Write(metadata=md())
    await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="e2"))
    await exchange(call, pb.WriteContentRequest(action=pb.WRITE, data=b"dup"))
    await call.write(pb.WriteContentRequest(action=pb.COMMIT, offset=3, expected=d))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call.read()
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await content.list_statuses() == []  # the ingest was dropped


async def test_write_wrong_digest_size_and_offset(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    wrong = dg(b"something else")
    w = await content.writer("wrong", expected=wrong)
    await w.write(b"actual", 0)
    with pytest.raises(FailedPrecondition) as ei:
        await w.commit(6)
    assert dg(b"actual") in str(ei.value) and wrong in str(ei.value)
    assert (await content.status("wrong")).offset == 6  # kept for inspection
    w = await content.writer("wrong")
    with pytest.raises(FailedPrecondition, match=r"unexpected commit size 6, expected 9"):
        await w.commit(9)
    await content.abort("wrong")
    # Writing at an offset that is not the current one: OUT_OF_RANGE on the wire.
    call = stub.Write(metadata=md())
    await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="offsets"))
    await exchange(call, pb.WriteContentRequest(action=pb.WRITE, data=b"12345"))
    await call.write(pb.WriteContentRequest(action=pb.WRITE, offset=3, data=b"x"))
    with pytest.raises(grpc.aio.AioRpcError) as ei2:
        await call.read()
    assert ei2.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert ei2.value.details() == "write @3 must occur at current offset 5"
    assert (await content.status("offsets")).offset == 5
    await content.abort("offsets")


async def test_write_bad_first_message(stub: pb_grpc.ContentStub) -> None:
    for req, code in ((pb.WriteContentRequest(action=pb.STAT), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.WriteContentRequest(action=pb.STAT, ref="r", expected="sha256:nope"),
                       grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.WriteContentRequest(action=pb.STAT, ref="r", total=-1), grpc.StatusCode.INVALID_ARGUMENT)):
        call = stub.Write(metadata=md())
        await call.write(req)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call.read()
        assert ei.value.code() == code, ei.value.details()
    call = stub.Write(metadata=[])  # no namespace
    await call.write(pb.WriteContentRequest(action=pb.STAT, ref="r"))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call.read()
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_write_restart_at_zero_and_resume(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    call = stub.Write(metadata=md())
    await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="again", total=6))
    await exchange(call, pb.WriteContentRequest(action=pb.WRITE, data=b"garbage"[:4]))
    r = await exchange(call, pb.WriteContentRequest(action=pb.WRITE, offset=0, data=b"abc"))
    assert (r.offset, r.digest) == (3, dg(b"abc"))
    await call.done_writing()  # half-close without commit: the ingest stays
    assert await call.read() is grpc.aio.EOF
    st = await content.status("again")
    assert (st.ref, st.offset, st.total) == ("again", 3, 6)
    call = stub.Write(metadata=md())
    r = await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="again"))
    assert (r.offset, r.total, r.digest) == (3, 6, dg(b"abc"))
    r = await exchange(call, pb.WriteContentRequest(action=pb.COMMIT, offset=3, data=b"def", total=6))
    assert (r.offset, r.digest) == (6, dg(b"abcdef"))
    assert await content.read_all(dg(b"abcdef")) == b"abcdef"


async def test_client_cancel_after_commit_is_harmless(content: ContentAPI, stub: pb_grpc.ContentStub) -> None:
    call = stub.Write(metadata=md())
    await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="cancel"))
    r = await exchange(call, pb.WriteContentRequest(action=pb.COMMIT, data=b"committed", total=9))
    assert r.digest == dg(b"committed")
    call.cancel()
    assert (await content.info(dg(b"committed"))).size == 9
    # And a cancel in the middle keeps the ingest, unlocked, for a resume.
    call = stub.Write(metadata=md())
    await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="mid"))
    await exchange(call, pb.WriteContentRequest(action=pb.WRITE, data=b"half"))
    call.cancel()

    async def unlocked_writer() -> ContentWriter | None:
        """A writer on "mid" once the daemon has seen the cancel and unlocked the ref."""
        try:
            return await content.writer("mid")
        except Unavailable:  # "ref mid locked"
            return None

    w = await wait_until_async(unlocked_writer, what='the cancelled write to unlock "mid"')
    assert w.status().offset == 4
    await w.close()


async def test_second_writer_on_locked_ref_is_unavailable(stub: pb_grpc.ContentStub) -> None:
    first = stub.Write(metadata=md())
    await exchange(first, pb.WriteContentRequest(action=pb.STAT, ref="locked"))
    second = stub.Write(metadata=md())
    await second.write(pb.WriteContentRequest(action=pb.STAT, ref="locked"))
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await second.read()
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ei.value.details() == "ref locked locked: unavailable"
    other_ns = stub.Write(metadata=md("elsewhere", lease=""))  # the same ref in another namespace is free
    await exchange(other_ns, pb.WriteContentRequest(action=pb.STAT, ref="locked"))
    for call in (first, other_ns):
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF


async def test_labels_at_commit_are_validated(content: ContentAPI) -> None:
    w = await content.writer("biglabel")
    await w.write(b"data", 0)
    with pytest.raises(InvalidArgument, match=r"info\.Labels: label key and value greater than maximum size"):
        await w.commit(4, "", {"k": "v" * 5000})
    assert not await content.exists(dg(b"data"))
    assert (await content.write("biglabel", b"data", labels={"k": "v"})).labels == {"k": "v"}


async def test_status_list_statuses_abort(content: ContentAPI) -> None:
    writers = []
    for ref, total in (("layer-b", 10), ("layer-a", 0), ("config-x", 3)):
        w = await content.writer(ref, total=total, expected=dg(ref.encode()) if total == 3 else "")
        await w.write(ref.encode()[:2], 0)
        writers.append(w)
    st = await content.status("layer-b")
    assert (st.ref, st.offset, st.total, st.expected) == ("layer-b", 2, 10, "")
    assert (await content.status("config-x")).expected == dg(b"config-x")
    assert [s.ref for s in await content.list_statuses()] == ["config-x", "layer-a", "layer-b"]
    assert [s.ref for s in await content.list_statuses(["ref~=^layer-"])] == ["layer-a", "layer-b"]
    assert [s.ref for s in await content.list_statuses(["ref==config-x"])] == ["config-x"]
    with pytest.raises(InvalidArgument):
        await content.list_statuses(["ref=="])
    for w in writers:
        await w.close()
    await content.abort("layer-a")
    with pytest.raises(NotFound, match='ingest ref "layer-a"'):
        await content.status("layer-a")
    with pytest.raises(NotFound, match='ingest ref "layer-a"'):
        await content.abort("layer-a")
    with pytest.raises(InvalidArgument):
        await content.status("")
    assert [s.ref for s in await content.list_statuses()] == ["config-x", "layer-b"]


async def test_abort_while_writer_open(content: ContentAPI) -> None:
    w = await content.writer("doomed")
    await w.write(b"data", 0)
    await content.abort("doomed")
    with pytest.raises(NotFound):
        await w.commit(4)
    assert not await content.exists(dg(b"data"))


async def test_leases_hold_ingests_and_content(daemon: DaemonProcess, client: Client, content: ContentAPI) -> None:
    await client.leases.create("L1")
    async with Client(daemon.address) as raw:
        stub = pb_grpc.ContentStub(raw.channel)
        call = stub.Write(metadata=md(lease="L1"))
        await exchange(call, pb.WriteContentRequest(action=pb.STAT, ref="leased"))
        await exchange(call, pb.WriteContentRequest(action=pb.WRITE, data=b"leased bytes"))
        assert [(r.type, r.id) for r in await client.leases.resources("L1")] == [("ingests", "leased")]
        await exchange(call, pb.WriteContentRequest(action=pb.COMMIT, offset=12))
        assert [(r.type, r.id) for r in await client.leases.resources("L1")] == [("content", dg(b"leased bytes"))]
        # A missing lease is refused before anything is written.
        call = stub.Write(metadata=md(lease="nope"))
        await call.write(pb.WriteContentRequest(action=pb.STAT, ref="unleased"))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call.read()
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert await content.list_statuses() == []


async def test_sdk_write_resumes_from_status_offset(content: ContentAPI, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    w = await content.writer("resume", total=len(data))
    await w.write(data[:100_000], 0)
    await w.close()
    path = tmp_path / "blob"
    path.write_bytes(data)
    info = await content.write("resume", path, total=len(data), chunk_size=64 << 10)
    assert info.digest == dg(data)

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 7000):
            yield data[i:i + 7000]

    w = await content.writer("resume-iter", total=len(data))
    await w.write(data[:12345], 0)
    await w.close()
    async with Client(content._client.address, "iter") as other:  # a namespace without the blob
        assert (await (await leased(other)).write("resume-iter", gen(), total=len(data))).digest == dg(data)
    assert (await content.write("resume-iter", gen(), total=len(data))).digest == dg(data)


# -- the dock CLI ----------------------------------------------------------------------------


async def test_cli_content(daemon: DaemonProcess, content: ContentAPI, tmp_path: Path) -> None:
    await asyncio.to_thread(daemon.wait_startup_collection)  # the CLI writes without a lease here
    a = daemon.address
    data = os.urandom(3000)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    res = dock(a, "content", "ingest", "--label", "team=red", "--lease", LEASE, "cli-1", str(src))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == dg(data)
    raw = dock_bytes(a, "content", "ingest", "--expected-size", "5", "cli-2", stdin=b"hello")
    assert raw.returncode == 0, raw.stderr
    table = dock(a, "content", "ls").stdout.splitlines()
    assert table[0].split() == ["DIGEST", "SIZE", "AGE", "LABELS"]
    by_digest = {line.split()[0]: line for line in table[1:]}
    assert "2.9 KiB" in by_digest[dg(data)] and "team=red" in by_digest[dg(data)]
    assert "5 B" in by_digest[dg(b"hello")]
    listed = json.loads(dock(a, "--format", "json", "content", "ls", "labels.team==red").stdout)
    assert [(x["digest"], x["size"], x["labels"]) for x in listed] == [(dg(data), 3000, {"team": "red"})]
    assert dock(a, "content", "ls", "-q").stdout.split() == sorted([dg(data), dg(b"hello")])

    assert dock_bytes(a, "content", "get", dg(data)).stdout == data
    out = tmp_path / "out.bin"
    assert dock(a, "content", "get", dg(b"hello"), "-o", str(out)).returncode == 0
    assert out.read_bytes() == b"hello"
    res = dock(a, "content", "get", dg(b"missing"))
    assert res.returncode == 1 and res.stderr.strip() == f"dock: content digest {dg(b'missing')}: not found"

    assert dock(a, "content", "label", dg(data), "tier=1", "team=").stdout.strip() == "tier=1"

    w = await content.writer("half-done", total=100)
    await w.write(b"x" * 40, 0)
    await w.close()
    for verb in ("status", "active"):
        rows = dock(a, "content", verb).stdout.splitlines()
        assert rows[0].split()[:2] == ["REF", "PROGRESS"] and rows[1].split()[0] == "half-done"
        assert "40 B/100 B" in rows[1]
    [st] = json.loads(dock(a, "--format", "json", "content", "status", "half-done").stdout)
    assert (st["ref"], st["offset"], st["total"]) == ("half-done", 40, 100)
    assert dock(a, "content", "active", "--filter", "ref==other").stdout.splitlines()[1:] == []
    assert dock(a, "content", "abort", "half-done").stdout.strip() == "half-done"
    res = dock(a, "content", "abort", "half-done")
    assert res.returncode == 1 and 'ingest ref "half-done": not found' in res.stderr

    res = dock(a, "content", "rm", dg(data), dg(b"missing"))
    assert res.returncode == 1 and res.stdout.strip() == dg(data)
    assert "not found" in res.stderr
    res = dock(a, "content", "ingest", "--expected-digest", dg(b"other"), "cli-3", str(src))
    assert res.returncode == 1 and "failed precondition" in res.stderr and "Traceback" not in res.stderr


def dock_bytes(address: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=30, cwd=REPO)
