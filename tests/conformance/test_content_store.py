"""The ContentStore conformance suite: every implementation must pass all of it.

It speaks only `supervisor.content.store` (the Protocol, Info, Status) and the error kinds.
To add an implementation, append a harness to HARNESSES: `open()` returns a fresh handle
on the same backing state (what a daemon restart gives a client), `close()` tears it down.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pytest

from dockyard_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from supervisor.content.local import LocalContentStore
from supervisor.content.store import BlobReader, ContentStore, Info, Status, Writer
from tests.conformance.content_remote import RemoteHarness


class StoreHarness(Protocol):
    async def open(self) -> ContentStore: ...

    async def close(self) -> None: ...


@dataclass
class LocalHarness:
    root: Path

    async def open(self) -> ContentStore:
        return LocalContentStore(self.root)

    async def close(self) -> None:
        return None


HARNESSES: dict[str, Callable[[Path], StoreHarness]] = {
    "local": lambda tmp: LocalHarness(tmp / "content"),
    # A real dockyardd over gRPC (the namespaced store), through the dock SDK.
    "remote": lambda tmp: RemoteHarness(),
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    h = HARNESSES[request.param](tmp_path)
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
async def store(harness: StoreHarness) -> ContentStore:
    return await harness.open()


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def put(store: ContentStore, ref: str, data: bytes) -> str:
    w = await store.writer(ref, total=len(data), expected=dg(data))
    await w.write(data, 0)
    return await w.commit(len(data), dg(data))


async def walk(store: ContentStore) -> list[Info]:
    return [i async for i in store.walk()]


MISSING = dg(b"never written")
BAD_DIGESTS = [
    "",
    "sha256",
    "sha256:",
    "sha256:abc",
    "sha256:" + "A" * 64,
    "sha256:" + "g" * 64,
    "sha512:" + "a" * 128,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "a" * 64,
    " sha256:" + "a" * 64,
]


# -- blobs --------------------------------------------------------------------------------


async def test_implements_protocol(store: ContentStore) -> None:
    assert isinstance(store, ContentStore)
    w = await store.writer("proto")
    assert isinstance(w, Writer)
    await w.write(b"x", 0)
    d = await w.commit()
    async with await store.reader(d) as r:
        assert isinstance(r, BlobReader)


async def test_commit_then_info_read_walk(store: ContentStore) -> None:
    data = b"hello, content"
    d = await put(store, "ref-1", data)
    assert d == dg(data)
    info = await store.info(d)
    assert (info.digest, info.size, info.labels) == (d, len(data), {})
    assert info.created_at.tzinfo is not None and info.updated_at >= info.created_at
    assert await store.exists(d)
    assert await store.read_all(d, len(data)) == data
    assert [(i.digest, i.size) for i in await walk(store)] == [(d, len(data))]


async def test_nothing_visible_before_commit(store: ContentStore) -> None:
    data = b"partial" * 100
    w = await store.writer("pending", total=len(data) * 2)
    await w.write(data, 0)
    assert not await store.exists(dg(data))
    with pytest.raises(NotFound):
        await store.info(dg(data))
    assert await walk(store) == []
    assert (await store.status("pending")).offset == len(data)
    await w.close()


async def test_empty_blob(store: ContentStore) -> None:
    w = await store.writer("empty")
    assert w.digest() == dg(b"")
    d = await w.commit(0, dg(b""))
    assert d == dg(b"")
    assert (await store.info(d)).size == 0
    assert await store.read_all(d, 0) == b""


async def test_reader_ranges(store: ContentStore) -> None:
    data = bytes(range(256)) * 40
    d = await put(store, "ranges", data)
    r = await store.reader(d)
    try:
        assert r.size == len(data)
        assert await r.read_at(0, 10) == data[:10]
        assert await r.read_at(1000, 2000) == data[1000:3000]
        assert await r.read_at(len(data) - 5, 100) == data[-5:]
        assert await r.read_at(len(data), 10) == b""
        assert await r.read_at(len(data) + 100, 10) == b""
        assert await r.read_at(3, 0) == b""
        with pytest.raises(InvalidArgument):
            await r.read_at(-1, 10)
        with pytest.raises(InvalidArgument):
            await r.read_at(0, -1)
    finally:
        await r.close()
    await r.close()  # idempotent
    with pytest.raises(FailedPrecondition):
        await r.read_at(0, 1)


async def test_read_all_limit(store: ContentStore) -> None:
    data = b"x" * 1000
    d = await put(store, "limit", data)
    assert await store.read_all(d, 1000) == data
    with pytest.raises(ResourceExhausted, match="1000"):
        await store.read_all(d, 999)
    with pytest.raises(InvalidArgument):
        await store.read_all(d, -1)
    with pytest.raises(NotFound):
        await store.read_all(MISSING, 10)


async def test_missing_blob_is_not_found(store: ContentStore) -> None:
    for call in (store.info, store.reader, store.delete):
        with pytest.raises(NotFound, match=MISSING):
            await call(MISSING)
    assert not await store.exists(MISSING)


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_malformed_digests_are_invalid(store: ContentStore, bad: str) -> None:
    for call in (store.info, store.reader, store.delete, store.exists):
        with pytest.raises(InvalidArgument):
            await call(bad)
    if bad:  # "" means "no expectation" for writer and commit
        with pytest.raises(InvalidArgument):
            await store.writer("bad-expected", expected=bad)
        w = await store.writer("bad-commit")
        with pytest.raises(InvalidArgument):
            await w.commit(0, bad)
        await store.abort("bad-commit")


async def test_unsupported_algorithm_message(store: ContentStore) -> None:
    with pytest.raises(InvalidArgument, match="sha512"):
        await store.info("sha512:" + "a" * 128)


async def test_delete(store: ContentStore, harness: StoreHarness) -> None:
    data = b"to be deleted"
    d = await put(store, "del", data)
    keep = await put(store, "keep", b"kept")
    r = await store.reader(d)
    await store.delete(d)
    assert not await store.exists(d)
    with pytest.raises(NotFound):
        await store.info(d)
    with pytest.raises(NotFound):
        await store.delete(d)
    assert [i.digest for i in await walk(store)] == [keep]
    try:
        # An open reader outlives the delete, unless the store is namespaced: reading
        # content a namespace has no record of is refused there.
        if getattr(harness, "reader_outlives_delete", True):
            assert await r.read_at(0, 100) == data
    finally:
        await r.close()
    # The same content can be written again after a delete.
    assert await put(store, "del-again", data) == d


async def test_walk_lists_every_blob_once(store: ContentStore) -> None:
    blobs = {await put(store, f"w{i}", f"blob {i}".encode()) for i in range(20)}
    w = await store.writer("unfinished")
    await w.write(b"not a blob", 0)
    infos = await walk(store)
    assert sorted(i.digest for i in infos) == sorted(blobs)
    assert {i.size for i in infos} == {6, 7}  # "blob 0".."blob 9" and "blob 10".."blob 19"
    await w.close()


# -- writers ------------------------------------------------------------------------------


async def test_writer_status_and_digest(store: ContentStore) -> None:
    data = b"abcdef"
    w = await store.writer("st", total=6, expected=dg(data))
    st = w.status()
    assert (st.ref, st.offset, st.total, st.expected) == ("st", 0, 6, dg(data))
    assert st.started_at <= st.updated_at
    assert w.ref == "st"
    assert await w.write(b"abc", 0) == 3
    assert w.digest() == dg(b"abc")
    assert await w.write(b"def", 3) == 6
    assert w.status().offset == 6 and w.digest() == dg(data)
    assert await w.commit() == dg(data)  # size and expected default to those given at open


async def test_write_at_wrong_offset(store: ContentStore) -> None:
    w = await store.writer("off")
    await w.write(b"12345", 0)
    for offset in (3, 6, -1):
        with pytest.raises(InvalidArgument, match="offset"):
            await w.write(b"x", offset)
    assert w.status().offset == 5 and w.digest() == dg(b"12345")
    await w.close()


async def test_write_at_zero_restarts(store: ContentStore) -> None:
    w = await store.writer("restart")
    await w.write(b"first attempt", 0)
    assert await w.write(b"second", 0) == 6
    assert w.digest() == dg(b"second")
    assert await w.commit(6, dg(b"second")) == dg(b"second")
    assert await store.read_all(dg(b"second"), 100) == b"second"


async def test_truncate(store: ContentStore) -> None:
    w = await store.writer("trunc")
    await w.write(b"garbage", 0)
    with pytest.raises(InvalidArgument):
        await w.truncate(3)
    await w.truncate(0)
    assert w.status().offset == 0 and w.digest() == dg(b"")
    assert (await store.status("trunc")).offset == 0
    await w.write(b"good", 0)
    assert await w.commit(4, dg(b"good")) == dg(b"good")


async def test_many_chunks(store: ContentStore) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 * 32768 + 7)  # ~3 MiB, not chunk-aligned
    w = await store.writer("big", total=len(data))
    chunk = 65536
    for off in range(0, len(data), chunk):
        await w.write(data[off : off + chunk], off)
    assert await w.commit(len(data), dg(data)) == dg(data)
    assert await store.read_all(dg(data), len(data)) == data


async def test_commit_size_mismatch(store: ContentStore) -> None:
    w = await store.writer("size")
    await w.write(b"12345", 0)
    with pytest.raises(FailedPrecondition, match=r"5.*\b9\b"):
        await w.commit(9, "")
    # The writer is closed; the ingest is kept for inspection, resume or abort.
    with pytest.raises(FailedPrecondition):
        await w.write(b"6", 5)
    assert (await store.status("size")).offset == 5
    assert not await store.exists(dg(b"12345"))
    w2 = await store.writer("size")
    assert w2.status().offset == 5
    assert await w2.commit(5, dg(b"12345")) == dg(b"12345")


async def test_commit_digest_mismatch(store: ContentStore) -> None:
    w = await store.writer("dig")
    await w.write(b"actual", 0)
    wrong = dg(b"something else")
    with pytest.raises(FailedPrecondition) as ei:
        await w.commit(6, wrong)
    assert dg(b"actual") in str(ei.value) and wrong in str(ei.value)
    assert not await store.exists(dg(b"actual")) and not await store.exists(wrong)
    assert (await store.status("dig")).offset == 6
    await store.abort("dig")


async def test_commit_checks_total_given_at_open(store: ContentStore) -> None:
    w = await store.writer("tot", total=10)
    await w.write(b"short", 0)
    with pytest.raises(FailedPrecondition, match="10"):
        await w.commit()
    await store.abort("tot")


async def test_commit_checks_expected_given_at_open(store: ContentStore) -> None:
    w = await store.writer("exp", expected=dg(b"one thing"))
    await w.write(b"another", 0)
    with pytest.raises(FailedPrecondition, match=dg(b"one thing")):
        await w.commit()
    await store.abort("exp")


async def test_closed_writer_refuses_everything(store: ContentStore) -> None:
    w = await store.writer("closed")
    await w.write(b"a", 0)
    await w.commit()
    for op in (lambda: w.write(b"b", 1), lambda: w.commit(), lambda: w.truncate(0)):
        with pytest.raises(FailedPrecondition):
            await op()
    await w.close()  # idempotent, even after commit
    await w.close()


async def test_writer_for_existing_expected(store: ContentStore) -> None:
    d = await put(store, "orig", b"present")
    with pytest.raises(AlreadyExists, match=d):
        await store.writer("again", expected=d)
    assert await store.list_statuses() == []


async def test_commit_of_existing_content_discards_ingest(store: ContentStore) -> None:
    d = await put(store, "first", b"dup")
    w = await store.writer("second")  # no expected: the store cannot know yet
    await w.write(b"dup", 0)
    with pytest.raises(AlreadyExists, match=d):
        await w.commit(3, d)
    with pytest.raises(NotFound):
        await store.status("second")
    assert [i.digest for i in await walk(store)] == [d]


async def test_two_refs_same_content(store: ContentStore) -> None:
    """Both writers finish: the first commit publishes, the second gets AlreadyExists."""
    data = b"same bytes" * 1000
    a = await store.writer("a", total=len(data))
    b = await store.writer("b", total=len(data))
    await asyncio.gather(a.write(data, 0), b.write(data, 0))
    results = await asyncio.gather(a.commit(), b.commit(), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "str"]
    assert [i.digest for i in await walk(store)] == [dg(data)]
    assert await store.list_statuses() == []
    assert await store.read_all(dg(data), len(data)) == data


async def test_concurrent_refs_are_independent(store: ContentStore) -> None:
    async def one(i: int) -> str:
        return await put(store, f"par-{i}", f"payload {i}".encode() * 50)

    digests = await asyncio.gather(*(one(i) for i in range(8)))
    assert len(set(digests)) == 8
    assert len(await walk(store)) == 8


# -- ref locks, status, abort ---------------------------------------------------------------


async def test_ref_is_locked_while_open(store: ContentStore) -> None:
    w = await store.writer("locked")
    with pytest.raises(Unavailable, match="ref locked locked"):
        await store.writer("locked")
    other = await store.writer("other")  # other refs are unaffected
    await other.close()
    await w.close()
    w2 = await store.writer("locked")
    await w2.close()


async def test_lock_released_by_commit(store: ContentStore) -> None:
    w = await store.writer("rel")
    await w.write(b"x", 0)
    with pytest.raises(FailedPrecondition):
        await w.commit(2)
    (await store.writer("rel")).status()  # failed commit released the lock too
    await store.abort("rel")


async def test_close_and_resume(store: ContentStore) -> None:
    w = await store.writer("resume", total=8)
    await w.write(b"1234", 0)
    started = w.status().started_at
    await w.close()
    w = await store.writer("resume")
    st = w.status()
    assert (st.offset, st.total, st.started_at) == (4, 8, started)
    assert w.digest() == dg(b"1234")
    await w.write(b"5678", 4)
    assert await w.commit() == dg(b"12345678")


async def test_resume_with_contradicting_total_restarts(store: ContentStore) -> None:
    w = await store.writer("contra", total=8)
    await w.write(b"1234", 0)
    await w.close()
    w = await store.writer("contra", total=5)
    assert (w.status().offset, w.status().total) == (0, 5)
    assert w.digest() == dg(b"")
    await w.close()


async def test_status_and_list(store: ContentStore) -> None:
    assert await store.list_statuses() == []
    writers = []
    for ref, total in (("pull-b", 10), ("pull-a", 0), ("push-x", 3)):
        w = await store.writer(ref, total=total)
        await w.write(ref.encode(), 0)
        writers.append(w)
    await writers[0].close()  # closed and open ingests are listed alike
    st = await store.status("pull-b")
    assert isinstance(st, Status)
    assert (st.ref, st.offset, st.total, st.expected) == ("pull-b", 6, 10, "")
    assert isinstance(st.started_at, datetime) and st.started_at <= st.updated_at
    assert [s.ref for s in await store.list_statuses()] == ["pull-a", "pull-b", "push-x"]
    assert [s.ref for s in await store.list_statuses("pull-")] == ["pull-a", "pull-b"]
    assert await store.list_statuses("nothing") == []
    for w in writers:
        await w.close()


async def test_status_records_expected(store: ContentStore) -> None:
    w = await store.writer("e", expected=dg(b"e"))
    await w.close()
    assert (await store.status("e")).expected == dg(b"e")
    await store.abort("e")


async def test_unknown_ref(store: ContentStore) -> None:
    with pytest.raises(NotFound, match='"nope"'):
        await store.status("nope")
    with pytest.raises(NotFound, match='"nope"'):
        await store.abort("nope")


async def test_bad_refs_and_sizes(store: ContentStore) -> None:
    for call in (store.writer, store.status, store.abort):
        with pytest.raises(InvalidArgument, match="ref"):
            await call("")
    with pytest.raises(InvalidArgument, match="total"):
        await store.writer("neg", total=-1)
    w = await store.writer("neg-commit")
    with pytest.raises(InvalidArgument):
        await w.commit(-5)
    await store.abort("neg-commit")


async def test_abort(store: ContentStore) -> None:
    w = await store.writer("ab")
    await w.write(b"doomed", 0)
    await w.close()
    await store.abort("ab")
    with pytest.raises(NotFound):
        await store.status("ab")
    assert await store.list_statuses() == []
    w = await store.writer("ab")  # a new ingest under the same ref starts at zero
    assert w.status().offset == 0
    await w.close()


async def test_abort_cancels_open_writer(store: ContentStore) -> None:
    w = await store.writer("cancel")
    await w.write(b"data", 0)
    await store.abort("cancel")
    with pytest.raises(NotFound):
        await w.commit(4, dg(b"data"))
    assert not await store.exists(dg(b"data"))
    assert await store.list_statuses() == []


async def test_same_ref_reusable_after_commit(store: ContentStore) -> None:
    await put(store, "reuse", b"one")
    assert await put(store, "reuse", b"two") == dg(b"two")


# -- restart ------------------------------------------------------------------------------


async def test_ingest_survives_restart(harness: StoreHarness) -> None:
    """Drop the store and its writer without closing them (what kill -9 leaves) and reopen."""
    store = await harness.open()
    data = bytes(range(251)) * 997
    w = await store.writer("crash", total=len(data), expected=dg(data))
    half = len(data) // 2
    await w.write(data[:half], 0)
    del w, store
    gc.collect()

    store = await harness.open()
    assert [s.ref for s in await store.list_statuses()] == ["crash"]
    st = await store.status("crash")
    assert (st.offset, st.total, st.expected) == (half, len(data), dg(data))
    assert not await store.exists(dg(data))
    w = await store.writer("crash")
    assert w.status().offset == half
    assert w.digest() == dg(data[:half])  # recomputed from the bytes on disk
    await w.write(data[half:], half)
    assert await w.commit() == dg(data)

    store = await harness.open()
    assert await store.read_all(dg(data), len(data)) == data
    assert await store.list_statuses() == []


async def test_blobs_survive_restart(harness: StoreHarness) -> None:
    store = await harness.open()
    d = await put(store, "keep", b"durable")
    info = await store.info(d)
    store = await harness.open()
    assert await store.info(d) == info
    assert [i.digest for i in await walk(store)] == [d]
