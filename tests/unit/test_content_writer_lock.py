"""A ref's lock as containerd's clients need it, and blobs freed by a content delete.

containerd's client closes a writer by half-closing its Write stream and may open the next
writer on the same ref at once, before the daemon has released the old one: opening a writer
waits briefly for a lock that is let go (containerd's local store retries too), and raises
Unavailable only for one that stays held. A record removed by Content/Delete frees its blob at
the next collection, not after the orphan grace period, so the same bytes written again later
are a new ingest, not a shared one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.errors import NotFound, Unavailable
from supervisor.content.local import LocalContentStore
from supervisor.content.local_writer import retry_while_locked
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(tmp_path / "content")


async def test_retry_returns_once_the_lock_is_free() -> None:
    calls = 0

    async def open_writer() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Unavailable("ref r locked")
        return "writer"

    assert await retry_while_locked(open_writer) == "writer"
    assert calls == 4


async def test_retry_gives_up_with_unavailable() -> None:
    calls = 0

    async def open_writer() -> str:
        nonlocal calls
        calls += 1
        raise Unavailable("ref r locked")

    with pytest.raises(Unavailable, match="ref r locked"):
        await retry_while_locked(open_writer, wait=0.05)
    assert calls > 1


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def open_writer() -> str:
        nonlocal calls
        calls += 1
        raise NotFound("ingest ref \"r\"")

    with pytest.raises(NotFound):
        await retry_while_locked(open_writer)
    assert calls == 1


async def test_writer_reopened_while_the_old_one_closes_resumes_it(store: LocalContentStore) -> None:
    w1 = await store.writer("ref", total=6)
    await w1.write(b"abc", 0)
    # The next writer is asked for before the close has run (what the daemon sees when a client
    # half-closes one stream and opens the next at once): whichever runs first, it gets the ref.
    second = asyncio.create_task(store.writer("ref", total=6))
    await w1.close()
    w2 = await second
    assert (w2.status().offset, w2.digest()) == (3, dg(b"abc"))
    await w2.write(b"def", 3)
    assert await w2.commit(6, dg(b"abcdef")) == dg(b"abcdef")


async def test_a_writer_that_stays_open_keeps_the_ref(store: LocalContentStore) -> None:
    w1 = await store.writer("held")
    with pytest.raises(Unavailable, match="ref held locked"):
        await store.writer("held")
    await w1.write(b"x", 0)  # still the holder, still usable
    await w1.close()
    w2 = await store.writer("held")
    assert w2.status().offset == 1
    await w2.close()


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[tuple[NamespacedContentStore, Collector]]:
    db = await Database.open(tmp_path / "metadata.db")
    content = NamespacedContentStore(db, LocalContentStore(tmp_path / "content"))
    collector = Collector(db, content.backend, guards=[content.gc_guard])  # default orphan grace
    content.on_delete = collector.free
    try:
        yield content, collector
    finally:
        await collector.stop()
        await db.close()


async def put(store: NamespacedContentStore, ns: str, data: bytes) -> str:
    w = await store.writer(ns, f"ref-{ns}", total=len(data), expected=dg(data))
    if not w.shared:
        await w.write(data, 0)
    return await w.commit(len(data), dg(data), labels={"containerd.io/gc.root": "now"})


async def test_deleted_content_frees_its_blob_at_the_next_collection(
        records: tuple[NamespacedContentStore, Collector]) -> None:
    store, collector = records
    d = await put(store, "a", b"shared bytes")
    assert await put(store, "b", b"shared bytes") == d
    await store.delete("a", d)
    await collector.collect()
    assert await store.backend.exists(d)  # namespace b still records it
    await store.delete("b", d)
    stats = await collector.collect()
    assert stats.blobs_removed == 1
    assert not await store.backend.exists(d)
    # Written again, the bytes are a new ingest from offset 0, not a shared one.
    w = await store.writer("c", "again", total=12, expected=d)
    assert (w.shared, w.status().offset) == (False, 0)
    await w.close()


async def ingest_rows(store: NamespacedContentStore, ns: str) -> list[str]:
    rows = await store.db.read(lambda conn: conn.execute(
        "SELECT ref FROM ingests WHERE namespace=?", (ns,)).fetchall())
    return [r[0] for r in rows]


async def test_a_writer_given_up_while_the_ref_is_locked_leaves_no_row(
        records: tuple[NamespacedContentStore, Collector]) -> None:
    store, _ = records
    held = await store.backend.writer("b/ref")  # the backend ingest, locked by someone else
    opening = asyncio.create_task(store.writer("b", "ref"))
    # The row is written before the backend writer is opened: once it is there, the task is
    # waiting for the lock (the read is answered after the write that made the row).
    while await ingest_rows(store, "b") != ["ref"]:
        await asyncio.sleep(0.001)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert await ingest_rows(store, "b") == []
    await held.close()
    # Nor does one that waited in vain.
    held = await store.backend.writer("b/ref")
    with pytest.raises(Unavailable, match="ref ref locked"):
        await store.writer("b", "ref")
    assert await ingest_rows(store, "b") == []
    await held.close()
