"""A full disk, for real: the store on a small tmpfs mounted for each test (needs root)."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import NotFound, ResourceExhausted
from supervisor.content import LocalContentStore

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]

KiB = 1024


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        gc.collect()  # close the fds of writers and readers a failed test dropped
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt", "size=1m,mode=0700") as p:
        yield p


@pytest.fixture
def few_inodes_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "mnt", "size=4m,nr_inodes=24,mode=0700") as p:
        yield p


def fill_pages(path: Path) -> None:
    """Write until the filesystem has no page left."""
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * (64 * KiB))


def fill_inodes(directory: Path) -> int:
    directory.mkdir()
    n = 0
    with contextlib.suppress(OSError):
        while True:
            os.close(os.open(directory / str(n), os.O_CREAT | os.O_WRONLY, 0o600))
            n += 1
    return n


def blob_files(root: Path) -> list[str]:
    blobs = root / "blobs" / "sha256"
    return os.listdir(blobs) if blobs.exists() else []


async def test_write_enospc(small_fs: Path) -> None:
    store = LocalContentStore(small_fs)
    head = os.urandom(512 * KiB)
    w = await store.writer("big", total=2048 * KiB)
    await w.write(head, 0)
    with pytest.raises(ResourceExhausted, match="no space left on device"):
        await w.write(os.urandom(1024 * KiB), len(head))
    # The ingest still ends at the last good write: file, offset and hash agree.
    assert w.status().offset == len(head)
    assert w.digest() == dg(head)
    assert (await store.status("big")).offset == len(head)
    assert blob_files(small_fs) == []
    # Still usable: a write that fits goes through, and the result commits.
    tail = os.urandom(64 * KiB)
    await w.write(tail, len(head))
    assert await w.commit(len(head) + len(tail), dg(head + tail)) == dg(head + tail)
    assert await store.read_all(dg(head + tail), 1 << 20) == head + tail


async def test_write_enospc_then_abort_frees_space(small_fs: Path) -> None:
    store = LocalContentStore(small_fs)
    free_before = os.statvfs(small_fs).f_bfree
    w = await store.writer("doomed")
    with pytest.raises(ResourceExhausted):
        await w.write(os.urandom(2048 * KiB), 0)
    assert w.status().offset == 0
    await w.close()  # never raises for disk trouble
    await store.abort("doomed")
    assert os.listdir(small_fs / "ingest") == []
    assert blob_files(small_fs) == []
    assert os.statvfs(small_fs).f_bfree == free_before


async def test_writer_setup_enospc(small_fs: Path) -> None:
    store = LocalContentStore(small_fs)
    assert await store.list_statuses() == []  # prepares the layout while there is room
    fill_pages(small_fs / "filler")
    with pytest.raises(ResourceExhausted, match="no space left on device"):
        await store.writer("no-room", total=10)
    # The half-made ingest was removed, not left behind for list_statuses to trip over.
    assert os.listdir(small_fs / "ingest") == []
    with pytest.raises(NotFound):
        await store.status("no-room")
    os.unlink(small_fs / "filler")
    w = await store.writer("no-room", total=10)
    await w.write(b"0123456789", 0)
    assert await w.commit() == dg(b"0123456789")


async def test_commit_enospc(few_inodes_fs: Path) -> None:
    store = LocalContentStore(few_inodes_fs)
    data = os.urandom(100 * KiB)
    w = await store.writer("layer", total=len(data))
    await w.write(data, 0)
    # With every inode taken, commit cannot create blobs/sha256 and must fail cleanly.
    assert fill_inodes(few_inodes_fs / "filler") > 0
    with pytest.raises(ResourceExhausted, match="no space left on device"):
        await w.commit(len(data), dg(data))
    assert not (few_inodes_fs / "blobs").exists()
    assert not await store.exists(dg(data))
    st = await store.status("layer")
    assert (st.offset, st.total) == (len(data), len(data))

    # Once there is room again the ingest resumes where it was and commits.
    for name in os.listdir(few_inodes_fs / "filler"):
        os.unlink(few_inodes_fs / "filler" / name)
    w = await store.writer("layer")
    assert w.status().offset == len(data) and w.digest() == dg(data)
    assert await w.commit() == dg(data)
    assert blob_files(few_inodes_fs) == [dg(data).removeprefix("sha256:")]


async def test_commit_enospc_then_abort(few_inodes_fs: Path) -> None:
    store = LocalContentStore(few_inodes_fs)
    w = await store.writer("gone")
    await w.write(b"x" * 1000, 0)
    fill_inodes(few_inodes_fs / "filler")
    with pytest.raises(ResourceExhausted):
        await w.commit()
    await store.abort("gone")
    assert await store.list_statuses() == []
    assert os.listdir(few_inodes_fs / "ingest") == []
