"""Freeing space on a full disk, piece by piece (no daemon): the metadata database and the
snapshotter delete in the room the disk reserve gives back, a failed write leaves no
transaction open, the reserve is released and refilled, an ingest begun under a lease is
collected as soon as the lease is gone, and snapshot trees deeper than PATH_MAX are removed.
The filesystems are small tmpfs mounts made per test (root)."""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard_common.errors import ResourceExhausted
from supervisor.content.local import LocalContentStore
from supervisor.diskreserve import DEFAULT_SIZE, RESERVE_NAME, DiskReserve, free_bytes
from supervisor.metadata import gc_graph as g
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector
from supervisor.metadata.gc_graph import IngestRecord, Inventory, LeaseRecord
from supervisor.metadata.leases import LeaseStore
from supervisor.snapshotter import NativeSnapshotter
from supervisor.snapshotter.tree import remove_tree

MiB = 1 << 20
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "dy-full", str(path)], check=True)
    try:
        yield path
    finally:
        gc.collect()  # fds of writers a failed test dropped
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt", "32m") as p:
        yield p


def fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (64 << 10))
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


# -- the reserve ---------------------------------------------------------------------------------


@root_only
def test_reserve_is_released_on_a_full_disk_and_refilled_when_space_returns(small_fs: Path) -> None:
    reserve = DiskReserve()
    reserve.prepare([small_fs, small_fs / "missing", small_fs])
    assert (small_fs / RESERVE_NAME).stat().st_blocks * 512 >= DEFAULT_SIZE
    assert reserve.released == []
    fill(small_fs / "filler")
    assert free_bytes(small_fs) < MiB
    assert reserve.release(small_fs / "filler")
    assert free_bytes(small_fs) >= DEFAULT_SIZE - MiB
    assert not reserve.release(small_fs)  # nothing left to give
    reserve.refill()  # no room: stays out
    assert reserve.released == [small_fs / RESERVE_NAME]
    os.unlink(small_fs / "filler")
    reserve.refill()
    assert reserve.released == [] and (small_fs / RESERVE_NAME).exists()


@root_only
def test_a_restart_on_a_full_disk_releases_the_reserve_first(small_fs: Path) -> None:
    DiskReserve().prepare([small_fs])
    fill(small_fs / "filler")
    reserve = DiskReserve()
    reserve.prepare([small_fs])
    assert not (small_fs / RESERVE_NAME).exists()
    assert free_bytes(small_fs) >= DEFAULT_SIZE - MiB


# -- the metadata database -----------------------------------------------------------------------


async def _rows(db: Database) -> int:
    return await db.read(lambda conn: conn.execute("SELECT count(*) FROM leases").fetchone()[0])


@root_only
async def test_deletes_work_on_a_full_disk_and_other_writes_fail_cleanly(small_fs: Path) -> None:
    reserve = DiskReserve()
    reserve.prepare([small_fs])
    db = await Database.open(small_fs / "metadata.db", on_full=reserve.release)
    try:
        leases = LeaseStore(db)
        for i in range(200):
            await leases.create("ns", f"lease-{i}", {"k": "v" * 200})
        fill(small_fs / "filler")
        with pytest.raises(ResourceExhausted, match="no space left on device"):
            for i in range(1000):  # until the log can grow no more
                await leases.create("ns", f"more-{i}", {"k": "v" * 2000})
        count = await _rows(db)
        # No transaction was left open by the failure: reads and deletes go on.
        for i in range(200):
            await leases.delete("ns", f"lease-{i}")
        assert await _rows(db) == count - 200
        assert reserve.released == [small_fs / RESERVE_NAME]
    finally:
        await db.close()


@root_only
async def test_a_failed_commit_leaves_no_transaction_open(small_fs: Path) -> None:
    db = await Database.open(small_fs / "metadata.db")  # no reserve at all
    try:
        fill(small_fs / "filler")

        def big(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE IF NOT EXISTS junk (x BLOB)")
            conn.execute("INSERT INTO junk VALUES (zeroblob(4000000))")

        with pytest.raises(ResourceExhausted):
            await db.write(big)
        os.unlink(small_fs / "filler")
        await db.write(big)  # BEGIN works again: the failed one was rolled back
        assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM junk").fetchone()[0]) == 1
    finally:
        await db.close()


# -- snapshots -----------------------------------------------------------------------------------


@root_only
async def test_a_snapshot_that_filled_the_disk_is_removed(small_fs: Path) -> None:
    reserve = DiskReserve()
    reserve.prepare([small_fs])
    before = free_bytes(small_fs)
    sn = await NativeSnapshotter.open(small_fs / "native", on_full=reserve.release)
    try:
        mounts = await sn.prepare("k")
        fill(Path(mounts[0].source) / "big")
        assert free_bytes(small_fs) < MiB
        await sn.remove("k")
        reserve.refill()
        assert reserve.released == []
        assert abs(free_bytes(small_fs) - before) < MiB
        assert [i async for i in sn.walk()] == []
    finally:
        await sn.close()


def _deep_tree(top: Path, depth: int) -> None:
    """A chain of 250-byte names `depth` deep (built with openat: its path passes PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
            os.symlink("/", "up", dir_fd=fd)  # never followed
            os.mkdir("d" * 250, dir_fd=fd)
            child = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_remove_tree_takes_trees_deeper_than_path_max(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "t", 100)  # ~25 KiB of path
    (tmp_path / "keep").write_text("outside")
    remove_tree(str(tmp_path / "t"))
    assert sorted(os.listdir(tmp_path)) == ["keep"]


async def test_cleanup_removes_a_deep_hidden_snapshot_dir(tmp_path: Path) -> None:
    sn = await NativeSnapshotter.open(tmp_path / "native")
    try:
        _deep_tree(tmp_path / "native" / "snapshots" / ".rm-7-abcd", 60)
        await sn.cleanup()
        assert os.listdir(tmp_path / "native" / "snapshots") == []
    finally:
        await sn.close()


# -- ingests and leases --------------------------------------------------------------------------


def test_an_ingest_begun_under_a_lease_gets_no_grace_once_the_lease_is_gone() -> None:
    leased, free, held = g.ingest("ns", "leased"), g.ingest("ns", "free"), g.ingest("ns", "held")
    inv = Inventory(ingests={
        leased: IngestRecord("ns/leased", NOW - timedelta(seconds=1), leased=True),
        free: IngestRecord("ns/free", NOW - timedelta(seconds=1)),
        held: IngestRecord("ns/held", NOW - timedelta(seconds=1), leased=True),
    }, leases=[LeaseRecord("ns", "l", {}, [("ingests", "held")])])
    plan = g.collectable(inv, NOW, timedelta(hours=24))
    assert plan.ingests == [leased]


async def test_a_failed_ingest_goes_with_its_lease(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    backend = LocalContentStore(tmp_path / "content")
    try:
        content = NamespacedContentStore(db, backend)
        leases = LeaseStore(db)
        await leases.create("ns", "job", {})
        w = await content.writer("ns", "layer", total=100, lease="job")
        await w.write(b"x" * 50, 0)
        await w.close()  # as a write that failed half way leaves it
        plain = await content.writer("ns", "resumable")
        await plain.write(b"y", 0)
        await plain.close()
        collector = Collector(db, backend, {})
        assert (await collector.collect()).ingests_removed == 0
        await leases.delete("ns", "job")
        assert (await collector.collect()).ingests_removed == 1
        assert [s.ref for s in await backend.list_statuses()] == ["ns/resumable"]
        # a lease-less ingest reopened under a lease keeps its grace period (containerd's rule)
        await leases.create("ns", "later", {})
        w = await content.writer("ns", "resumable", lease="later")
        await w.close()
        await leases.delete("ns", "later")
        assert (await collector.collect()).ingests_removed == 0
    finally:
        await db.close()


@root_only
async def test_a_blob_whose_record_did_not_fit_is_taken_back(small_fs: Path) -> None:
    db = await Database.open(small_fs / "metadata.db")
    backend = LocalContentStore(small_fs / "content")
    try:
        collector = Collector(db, backend, {})
        content = NamespacedContentStore(db, backend, on_delete=collector.free)
        data = os.urandom(4 * MiB)
        w = await content.writer("ns", "blob", total=len(data))
        await w.write(data, 0)
        fill(small_fs / "filler")
        with pytest.raises(ResourceExhausted, match="no space left on device"):
            await w.commit(len(data))
        await collector.collect()  # what the scheduled collection does, on the still full disk
        assert [i async for i in backend.walk()] == []
        assert free_bytes(small_fs) >= 4 * MiB
    finally:
        await db.close()
