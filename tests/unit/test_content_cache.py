"""The small-blob byte cache, held descriptors of larger blobs and the cached content records:
bounds, invalidation, hop-free hits."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from supervisor.content.cache import BlobCache, Lru, MemoryBlobReader, OpenBlobs
from supervisor.content.local import LocalBlobReader, LocalContentStore
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector

T = TypeVar("T")


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def without_suspending(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end in one step: it fails if the coroutine waits for anything
    (a thread hop, the metadata thread), which is what a cache hit must not do."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the call suspended: it was not answered from memory")


# -- Lru and BlobCache ------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_within_the_weight_bound() -> None:
    lru: Lru[str, bytes] = Lru(10, len)
    lru.put("a", b"aaaa")
    lru.put("b", b"bbbb")
    assert lru.get("a") == b"aaaa"  # a is now the most recent
    lru.put("c", b"cccc")
    assert "b" not in lru and "a" in lru and "c" in lru and lru.weight == 8
    lru.put("big", b"x" * 11)  # heavier than the whole bound: never kept, nothing evicted
    assert "big" not in lru and len(lru) == 2
    lru.put("a", b"a")  # replacing re-weighs
    assert lru.weight == 5
    lru.discard("c")
    lru.discard("missing")
    assert lru.weight == 1 and len(lru) == 1
    lru.clear()
    assert lru.weight == 0 and len(lru) == 0
    with pytest.raises(InvalidArgument):
        Lru(-1)


def test_lru_counts_entries_by_default() -> None:
    lru: Lru[int, str] = Lru(3)
    for i in range(10):
        lru.put(i, str(i))
    assert len(lru) == 3 and [k for k in range(10) if k in lru] == [7, 8, 9]


def test_blob_cache_bounds_hold() -> None:
    cache = BlobCache(max_blob=100, max_total=250)
    for i in range(20):
        cache.put(f"d{i}", bytes([i]) * 100, cache.epoch)
        assert cache.total <= 250
    assert len(cache) == 2 and cache.get("d19") == bytes([19]) * 100
    assert not cache.put("too-big", b"x" * 101, cache.epoch)
    assert "too-big" not in cache and cache.fits(100) and not cache.fits(101)


def test_blob_cache_refuses_fills_a_discard_overlapped() -> None:
    cache = BlobCache()
    epoch = cache.epoch  # a filler notes the epoch, then hops to a thread...
    cache.discard("sha256:x")  # ...while the blob is removed
    assert not cache.put("sha256:x", b"bytes", epoch)
    assert cache.put("sha256:x", b"bytes", cache.epoch)
    cache.discard("sha256:x")
    assert cache.get("sha256:x") is None and cache.total == 0


async def test_memory_reader_checks_like_a_file_reader() -> None:
    r = MemoryBlobReader(b"0123456789", "sha256:x")
    assert (r.size, await r.read_at(3, 4), await r.read_at(8, 100), await r.read_at(10, 1)) == (
        10, b"3456", b"89", b"")
    with pytest.raises(InvalidArgument):
        await r.read_at(-1, 1)
    with pytest.raises(InvalidArgument):
        await r.read_at(0, -1)
    async with r:
        pass
    with pytest.raises(FailedPrecondition, match="closed"):
        await r.read_at(0, 1)


# -- LocalContentStore ------------------------------------------------------------------------


async def commit(store: LocalContentStore, data: bytes) -> str:
    w = await store.writer(f"ref-{dg(data)}", total=len(data))
    await w.write(data, 0)
    return await w.commit(len(data), dg(data))


@pytest.fixture
def local(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(tmp_path / "content", BlobCache(max_blob=1024, max_total=4096))


async def test_a_read_small_blob_is_served_from_memory(local: LocalContentStore) -> None:
    data = os.urandom(1000)
    d = await commit(local, data)
    async with await local.reader(d) as r:
        assert isinstance(r, LocalBlobReader)  # nothing cached until read
        assert await r.read_at(10, 20) == data[10:30]  # the first read keeps the whole blob
    assert local.cache.get(d) == data
    r2 = without_suspending(local.reader(d))
    assert isinstance(r2, MemoryBlobReader)
    assert without_suspending(r2.read_at(990, 100)) == data[990:]
    assert await local.read_all(d, 1000) == data
    with pytest.raises(Exception, match="over the limit"):
        await local.read_all(d, 999)


async def test_large_blobs_are_never_cached(local: LocalContentStore) -> None:
    data = os.urandom(1025)
    d = await commit(local, data)
    assert await local.read_all(d, 1 << 20) == data
    assert d not in local.cache
    async with await local.reader(d) as r:
        assert isinstance(r, LocalBlobReader) and await r.read_at(1000, 100) == data[1000:]


async def test_delete_drops_the_cached_blob_at_once(local: LocalContentStore) -> None:
    data = b"small and cached"
    d = await commit(local, data)
    assert await local.read_all(d, 100) == data
    early = await local.reader(d)  # from the cache
    await local.delete(d)
    assert d not in local.cache
    with pytest.raises(NotFound):
        await local.reader(d)
    assert await early.read_at(0, 100) == data  # open readers keep working, as the contract says


async def test_a_reader_opened_before_a_delete_does_not_refill_the_cache(local: LocalContentStore) -> None:
    data = b"read after its delete"
    d = await commit(local, data)
    r = await local.reader(d)  # an fd, nothing cached yet
    await local.delete(d)
    assert await r.read_at(0, 100) == data
    await r.close()
    assert d not in local.cache
    with pytest.raises(NotFound):
        await local.reader(d)


async def test_the_total_bound_holds_over_many_blobs(local: LocalContentStore) -> None:
    blobs = [os.urandom(1000) for _ in range(12)]
    for data in blobs:
        assert await local.read_all(await commit(local, data), 1000) == data
        assert local.cache.total <= 4096
    assert len(local.cache) == 4  # the four most recent
    for data in blobs:  # evicted ones come back from disk
        assert await local.read_all(dg(data), 1000) == data


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_open_blobs_close_what_leaves() -> None:
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    held = OpenBlobs(max_open=2)
    for i, fd in enumerate(fds[:3]):
        assert held.put(f"d{i}", fd, 10, held.epoch)
    assert len(held) == 2 and not is_open(fds[0]) and is_open(fds[1]) and is_open(fds[2])
    epoch = held.epoch
    held.discard("d1")  # a removal overlapping a fill: the fill's descriptor is refused, closed
    assert not is_open(fds[1])
    assert not held.put("d3", fds[3], 10, epoch) and not is_open(fds[3])
    held.clear()
    assert len(held) == 0 and not is_open(fds[2])


def deleted_files_held(under: Path) -> list[str]:
    """Targets of this process' descriptors that are deleted files below `under`."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.append(target)
    return out


async def test_a_large_blob_is_reopened_and_read_without_a_hop(local: LocalContentStore, tmp_path: Path) -> None:
    data = os.urandom(256 << 10)
    d = await commit(local, data)
    async with await local.reader(d) as r:  # the first open takes the thread, and is kept
        assert await r.read_at(0, 10) == data[:10]
    assert d not in local.cache and len(local.open_blobs) == 1
    # ctr reads a blob one Read call (one reader) per 32 KiB: each is a dup and a cached read
    for offset in range(0, len(data), 32 << 10):
        r2 = without_suspending(local.reader(d))
        assert without_suspending(r2.read_at(offset, 32 << 10)) == data[offset:offset + (32 << 10)]
        await r2.close()
    await local.delete(d)  # the held descriptor goes with the blob: its space is not kept
    assert len(local.open_blobs) == 0 and deleted_files_held(tmp_path) == []
    with pytest.raises(NotFound):
        await local.reader(d)


async def test_a_read_the_page_cache_cannot_answer_goes_to_the_disk(local: LocalContentStore) -> None:
    data = os.urandom(1 << 20)
    d = await commit(local, data)
    fd = os.open(local.root / "blobs" / "sha256" / d.removeprefix("sha256:"), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
    finally:
        os.close(fd)
    async with await local.reader(d) as r:
        assert await r.read_at(4096, 300 << 10) == data[4096:4096 + (300 << 10)]
        assert await r.read_at(0, len(data)) == data


# -- NamespacedContentStore -------------------------------------------------------------------


@pytest.fixture
async def records(tmp_path: Path) -> AsyncIterator[NamespacedContentStore]:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        yield NamespacedContentStore(db, LocalContentStore(tmp_path / "content"), max_cached=8)
    finally:
        await db.close()


async def put(store: NamespacedContentStore, ns: str, data: bytes, labels: dict[str, str] | None = None) -> str:
    w = await store.writer(ns, f"ref-{dg(data)}", total=len(data))
    await w.write(data, 0)
    return await w.commit(len(data), dg(data), labels=labels)


async def test_info_and_read_are_hop_free_once_warm(records: NamespacedContentStore) -> None:
    data = b'{"config": "small"}'
    d = await put(records, "a", data, {"k": "v"})
    first = await records.info("a", d)
    async with await records.reader("a", d) as r:
        assert await r.read_at(0, 100) == data
    again = without_suspending(records.info("a", d))
    assert again == first and again.labels == {"k": "v"}
    again.labels["mutated"] = "by a caller"  # a caller's copy: the cached record is untouched
    assert without_suspending(records.info("a", d)).labels == {"k": "v"}
    assert without_suspending(records.exists("a", d))
    r = without_suspending(records.reader("a", d))
    assert without_suspending(r.read_at(2, 6)) == data[2:8]


async def test_namespace_isolation_holds_with_a_warm_cache(records: NamespacedContentStore) -> None:
    data = b"only in a"
    d = await put(records, "a", data)
    await records.info("a", d)
    async with await records.reader("a", d) as r:
        await r.read_at(0, 100)
    for call in (records.info, records.reader):
        with pytest.raises(NotFound, match=f"content digest {d}"):
            await call("b", d)
    assert not await records.exists("b", d)


async def test_every_change_to_the_records_shows_at_once(records: NamespacedContentStore) -> None:
    d = await put(records, "a", b"labelled", {"x": "1"})
    assert (await records.info("a", d)).labels == {"x": "1"}
    await records.update("a", d, {"x": "2", "y": "3"}, [])
    assert (await records.info("a", d)).labels == {"x": "2", "y": "3"}
    await records.delete("a", d)
    with pytest.raises(NotFound):
        await records.info("a", d)
    with pytest.raises(NotFound):
        await records.reader("a", d)


async def test_writes_by_other_code_invalidate_too(records: NamespacedContentStore) -> None:
    d = await put(records, "a", b"swept elsewhere")
    await records.info("a", d)
    # The collector's sweep (or anything else) deletes records with its own SQL.
    await records.db.write(lambda conn: conn.execute("DELETE FROM content WHERE digest=?", (d,)))
    with pytest.raises(NotFound):
        await records.info("a", d)


async def test_unrelated_writes_keep_the_cache_warm(records: NamespacedContentStore) -> None:
    d = await put(records, "a", b"warm through leases")
    await records.info("a", d)
    await records.db.write(lambda conn: conn.execute(
        "INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l', '2026-01-01T00:00:00+00:00')"))
    assert without_suspending(records.info("a", d)).digest == d


async def test_garbage_collection_removes_records_and_bytes_at_once(records: NamespacedContentStore) -> None:
    shared = b"kept in b, collected in a"
    d = await put(records, "a", shared)
    await put(records, "b", shared, {"containerd.io/gc.root": "yes"})
    for ns in ("a", "b"):
        await records.info(ns, d)
        async with await records.reader(ns, d) as r:
            await r.read_at(0, 100)
    collector = Collector(records.db, records.backend, guards=[records.gc_guard])
    stats = await collector.collect()
    assert stats.content_removed == 1 and stats.blobs_removed == 0
    with pytest.raises(NotFound):
        await records.info("a", d)
    with pytest.raises(NotFound):
        await records.reader("a", d)
    assert await records.info("b", d)
    await records.update("b", d, {}, ["labels"])
    stats = await collector.collect()
    assert stats.blobs_removed == 1
    backend = records.backend
    assert isinstance(backend, LocalContentStore) and d not in backend.cache
    with pytest.raises(NotFound):
        await records.info("b", d)
    with pytest.raises(NotFound):
        await backend.reader(d)


async def test_the_record_cache_is_bounded(records: NamespacedContentStore) -> None:
    digests = [await put(records, "a", f"blob {i}".encode()) for i in range(20)]
    for d in digests:
        await records.info("a", d)
    assert len(records._cached) == 8
    for d in digests:  # evicted ones are read again
        assert (await records.info("a", d)).digest == d
