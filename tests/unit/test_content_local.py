"""LocalContentStore specifics: on-disk layout, locking across instances, crash leftovers."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import stat
from datetime import datetime
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from supervisor.content import LocalContentStore
from supervisor.content.ingest import parse_time, ref_key


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "content"


@pytest.fixture
def store(root: Path) -> LocalContentStore:
    return LocalContentStore(root)


def files_under(p: Path) -> list[str]:
    return sorted(str(f.relative_to(p)) for f in p.rglob("*"))


def test_constructor_touches_no_disk(root: Path) -> None:
    LocalContentStore(root)
    assert not os.path.exists(root)


async def test_ingest_layout(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("my/ref:1", total=5, expected=dg(b"hello"))
    await w.write(b"hel", 0)
    key = hashlib.sha256(b"my/ref:1").hexdigest()
    assert ref_key("my/ref:1") == key
    d = root / "ingest" / key
    assert sorted(os.listdir(d)) == ["data", "expected", "ref", "startedat", "total", "updatedat"]
    assert (d / "ref").read_text() == "my/ref:1"
    assert (d / "total").read_text() == "5"
    assert (d / "expected").read_text() == dg(b"hello")
    assert (d / "data").read_bytes() == b"hel"
    started = parse_time((d / "startedat").read_text())
    assert isinstance(started, datetime) and started == w.status().started_at
    # Nothing is in blobs/ until commit, not even a partial file.
    assert not (root / "blobs").exists() or files_under(root / "blobs") == ["sha256"]
    await w.close()
    assert (d / "data").read_bytes() == b"hel"  # close keeps the ingest


async def test_blob_layout(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("r", total=5)
    await w.write(b"hello", 0)
    d = await w.commit(5, dg(b"hello"))
    blob = root / "blobs" / "sha256" / d.removeprefix("sha256:")
    assert blob.read_bytes() == b"hello"
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert blob.stat().st_nlink == 1
    assert os.listdir(root / "ingest") == []
    info = await store.info(d)
    assert info.created_at.timestamp() == pytest.approx(blob.stat().st_mtime, abs=1e-3)


async def test_no_total_or_expected_files_when_unknown(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("plain")
    d = root / "ingest" / ref_key("plain")
    assert sorted(os.listdir(d)) == ["data", "ref", "startedat", "updatedat"]
    await w.close()


async def test_close_records_updatedat(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("upd")
    await asyncio.sleep(0.01)
    await w.write(b"x", 0)
    await w.close()
    stamp = parse_time((root / "ingest" / ref_key("upd") / "updatedat").read_text())
    assert stamp == w.status().updated_at
    assert stamp is not None and stamp > w.status().started_at


async def test_error_messages(store: LocalContentStore) -> None:
    missing = dg(b"missing")
    with pytest.raises(NotFound) as nf:
        await store.info(missing)
    assert str(nf.value) == f"content digest {missing}: not found"
    w = await store.writer("busy")
    with pytest.raises(Unavailable) as un:
        await store.writer("busy")
    assert str(un.value) == "ref busy locked: unavailable"
    await w.write(b"x", 0)
    d = await w.commit()
    with pytest.raises(AlreadyExists) as ae:
        await store.writer("again", expected=d)
    assert str(ae.value) == f"content {d}: already exists"
    with pytest.raises(NotFound) as nf2:
        await store.abort("busy")
    assert str(nf2.value) == 'ingest ref "busy": not found'


async def test_write_rejects_non_bytes(store: LocalContentStore) -> None:
    w = await store.writer("types")
    with pytest.raises(InvalidArgument, match="bytes"):
        await w.write("text", 0)  # type: ignore[arg-type]
    assert await w.write(bytearray(b"ab"), 0) == 2
    assert await w.write(memoryview(b"cd"), 2) == 4
    assert await w.commit(4, dg(b"abcd")) == dg(b"abcd")


async def test_lock_spans_store_instances(root: Path) -> None:
    a, b = LocalContentStore(root), LocalContentStore(root)
    w = await a.writer("shared")
    with pytest.raises(Unavailable):
        await b.writer("shared")
    await w.close()
    w = await b.writer("shared")
    await w.close()


async def test_dropped_writer_releases_lock(store: LocalContentStore) -> None:
    w = await store.writer("dropped")
    await w.write(b"abc", 0)
    del w
    gc.collect()
    w = await store.writer("dropped")
    assert w.status().offset == 3
    await w.close()


async def test_dropped_reader_closes_fd(store: LocalContentStore) -> None:
    w = await store.writer("r")
    await w.write(b"abc", 0)
    d = await w.commit()
    blob = str(store.root / "blobs" / "sha256" / d.removeprefix("sha256:"))

    def open_on_blob() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if _readlink(fd) == blob)

    readers = [await store.reader(d) for _ in range(10)]
    assert open_on_blob() == 10
    del readers
    await asyncio.sleep(0)  # let the loop drop its last handle on the final future
    gc.collect()
    assert open_on_blob() == 0


def _readlink(p: Path) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return ""


async def test_half_made_ingest_is_invisible_and_restarted(store: LocalContentStore, root: Path) -> None:
    # What a crash between mkdir and writing the metadata leaves behind.
    d = root / "ingest" / ref_key("half")
    d.mkdir(parents=True)
    (d / "data").write_bytes(b"stale bytes")
    assert await store.list_statuses() == []
    with pytest.raises(NotFound):
        await store.status("half")
    w = await store.writer("half")
    assert w.status().offset == 0 and w.digest() == dg(b"")
    assert (d / "data").read_bytes() == b""
    await w.close()
    assert [s.ref for s in await store.list_statuses()] == ["half"]


async def test_foreign_ref_in_ingest_dir_is_not_resumed(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("mine")
    await w.write(b"abc", 0)
    await w.close()
    # Corrupt the ref file: the directory no longer belongs to "mine".
    (root / "ingest" / ref_key("mine") / "ref").write_text("someone-else")
    with pytest.raises(NotFound):
        await store.status("mine")
    w = await store.writer("mine")
    assert w.status().offset == 0
    await w.close()
    assert (await store.status("mine")).ref == "mine"


async def test_leftovers_of_interrupted_deletes_are_swept(root: Path) -> None:
    store = LocalContentStore(root)
    w = await store.writer("x")
    await w.write(b"x", 0)
    d = await w.commit()
    blobs = root / "blobs" / "sha256"
    hidden_blob = blobs / ".deadbeef.deleting-1234"
    hidden_blob.write_bytes(b"half deleted")
    hidden_ingest = root / "ingest" / ".abc.removing-1"
    (hidden_ingest / "sub").mkdir(parents=True)
    (blobs / "not-a-digest").write_bytes(b"junk")
    fresh = LocalContentStore(root)
    assert [i.digest async for i in fresh.walk()] == [d]  # junk names are skipped
    assert not hidden_blob.exists() and not hidden_ingest.exists()
    assert await fresh.list_statuses() == []


async def test_delete_renames_before_unlink(store: LocalContentStore, root: Path) -> None:
    w = await store.writer("d")
    await w.write(b"d", 0)
    d = await w.commit()
    await store.delete(d)
    assert os.listdir(root / "blobs" / "sha256") == []


async def test_concurrent_commits_of_same_content_race(root: Path) -> None:
    # Two store instances (as two processes would) racing commit: link() picks one winner.
    for round_ in range(10):
        data = f"race {round_}".encode() * 1000
        stores = [LocalContentStore(root) for _ in range(4)]
        writers = [await s.writer(f"race-{round_}-{i}") for i, s in enumerate(stores)]
        for w in writers:
            await w.write(data, 0)
        results = await asyncio.gather(
            *(w.commit(len(data), dg(data)) for w in writers), return_exceptions=True
        )
        assert sum(r == dg(data) for r in results) == 1
        assert sum(isinstance(r, AlreadyExists) for r in results) == 3
    assert len(os.listdir(root / "blobs" / "sha256")) == 10
    assert os.listdir(root / "ingest") == []


async def test_large_write_does_not_block_the_loop(store: LocalContentStore) -> None:
    # A big write runs in a worker thread: a ticker keeps running meanwhile.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    data = os.urandom(64 << 20)
    w = await store.writer("big")
    t = asyncio.create_task(ticker())
    try:
        await w.write(data, 0)
        await w.commit(len(data), dg(data))
    finally:
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
    assert ticks > 10


async def test_commit_interrupted_after_publishing(store: LocalContentStore, root: Path) -> None:
    # A commit killed between link() and removing its ingest leaves the data file with two
    # names. The next writer on the ref must start afresh without touching the blob.
    w = await store.writer("half-committed")
    await w.write(b"published", 0)
    await w.close()
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    blob = blobs / dg(b"published").removeprefix("sha256:")
    os.link(root / "ingest" / ref_key("half-committed") / "data", blob)
    assert await store.exists(dg(b"published"))
    w = await store.writer("half-committed")
    assert w.status().offset == 0
    await w.write(b"new", 0)
    await w.close()
    assert blob.read_bytes() == b"published"
    assert blob.stat().st_nlink == 1
