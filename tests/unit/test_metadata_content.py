"""NamespacedContentStore corners the gRPC tests do not reach easily: the GC guard and shared ingests."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition, NotFound
from supervisor.content.local import LocalContentStore
from supervisor.metadata.content import NamespacedContentStore, backend_ref
from supervisor.metadata.db import Database
from supervisor.metadata.guard import GcGuard


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NamespacedContentStore]:
    db = await Database.open(tmp_path / "metadata.db")
    deleted: list[str] = []
    s = NamespacedContentStore(db, LocalContentStore(tmp_path / "content"), on_delete=deleted.append)
    s.deleted = deleted  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        await db.close()


async def put(store: NamespacedContentStore, ns: str, ref: str, data: bytes) -> str:
    w = await store.writer(ns, ref, total=len(data))
    await w.write(data, 0)
    return await w.commit(len(data), dg(data))


async def passes(n: int = 5) -> None:
    """Let every ready task run until it waits (loop passes, no clock involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_gc_guard_excludes_both_ways() -> None:
    guard = GcGuard()
    order: list[str] = []
    w1_in, release_w1 = asyncio.Event(), asyncio.Event()

    async def writer(name: str, entered: asyncio.Event | None = None, release: asyncio.Event | None = None) -> None:
        async with guard.shared():
            order.append(f"{name} in")
            if entered is not None:
                entered.set()
            if release is not None:
                await release.wait()
            order.append(f"{name} out")

    async def collector() -> None:
        async with guard.exclusive():
            order.append("gc in")
            await passes()  # holding it: nobody else may get in meanwhile
            order.append("gc out")

    first = asyncio.create_task(writer("w1", w1_in, release_w1))
    await w1_in.wait()
    gc = asyncio.create_task(collector())
    await passes()  # the collector now waits for w1
    late = asyncio.create_task(writer("w2"))  # arrives while the collector waits: goes after it
    await passes()
    assert order == ["w1 in"]
    release_w1.set()
    await asyncio.gather(first, gc, late)
    assert order == ["w1 in", "w1 out", "gc in", "gc out", "w2 in", "w2 out"]


async def test_cancelled_holder_releases_the_guard() -> None:
    guard = GcGuard()
    held = asyncio.Event()

    async def hold() -> None:
        async with guard.shared():
            held.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(hold())
    await held.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(1), guard.exclusive():
        pass


async def test_delete_tells_the_collector_and_keeps_the_blob(store: NamespacedContentStore) -> None:
    d = await put(store, "a", "r", b"bytes")
    await store.delete("a", d)
    assert store.deleted == [d]  # type: ignore[attr-defined]
    assert await store.backend.exists(d)  # the collector's job, not delete's
    with pytest.raises(NotFound):
        await store.reader("a", d)


async def test_shared_writer_appending_at_the_end_is_seeded_with_the_blob(store: NamespacedContentStore) -> None:
    data = b"existing blob"
    await put(store, "a", "r", data)
    w = await store.writer("b", "fetch", expected=dg(data))
    assert w.shared and w.status().offset == len(data)
    assert await w.write(b"+more", len(data)) == len(data) + 5
    assert not w.shared and w.digest() == dg(data + b"+more")
    with pytest.raises(FailedPrecondition) as ei:
        await w.commit(0, dg(data))
    assert dg(data) in str(ei.value) and dg(data + b"+more") in str(ei.value)
    assert (await store.status("b", "fetch")).offset == len(data) + 5
    await store.abort("b", "fetch")
    assert await store.list_statuses("b") == []


async def test_shared_commit_after_blob_vanished(store: NamespacedContentStore) -> None:
    data = b"short-lived"
    d = await put(store, "a", "r", data)
    w = await store.writer("b", "fetch", total=len(data), expected=d)
    await store.backend.delete(d)  # what a collector would do without the ingest's expected
    with pytest.raises(NotFound):
        await w.commit()
    assert not await store.exists("b", d)


async def test_shared_size_mismatch_is_an_ordinary_ingest(store: NamespacedContentStore) -> None:
    data = b"twelve bytes"
    d = await put(store, "a", "r", data)
    w = await store.writer("b", "wrong-size", total=99, expected=d)
    assert not w.shared and w.status().offset == 0
    await w.close()
    # The backend holds that digest already, so its ingest cannot be told to expect it.
    [st] = await store.list_statuses("b")
    assert (st.ref, st.total, st.expected) == ("wrong-size", 99, "")
    w = await store.writer("b", "new", expected=dg(b"new"))
    await w.close()
    assert [s.ref for s in await store.list_statuses("b", ["expected"])] == ["new"]
    assert [s.ref for s in await store.list_statuses("b", [f"expected=={dg(b'new')}"])] == ["new"]
    assert await store.list_statuses("b", ["ref==other"]) == []
    # Its backend ingest is named for the namespace and the ref.
    assert [s.ref for s in await store.backend.list_statuses()] == [backend_ref("b", r) for r in ("new", "wrong-size")]
