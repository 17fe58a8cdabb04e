"""Content under stress: a daemon killed mid-ingest, racing writers, a full disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dock.content import ContentAPI
from dockyard_common.errors import DockyardError, NotFound, ResourceExhausted
from tests.daemon import DaemonProcess, remove_base, start_daemon

LEASE = "keep"
MiB = 1 << 20


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(root: Path) -> list[str]:
    d = root / "content" / "blobs" / "sha256"
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.exists() else []


def ingest_dirs(root: Path) -> list[str]:
    d = root / "content" / "ingest"
    return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.exists() else []


async def leased(c: Client) -> ContentAPI:
    try:
        await c.leases.create(LEASE)
    except DockyardError:
        pass  # made before a restart: leases persist
    return c.content.with_lease(LEASE)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dy-rel-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def restart(d: DaemonProcess) -> DaemonProcess:
    Path(d.address).unlink(missing_ok=True)  # a stale socket would look ready at once
    return start_daemon(d.base)


async def test_kill_9_mid_ingest_then_resume_or_abort(base: Path) -> None:
    data = os.urandom(48 * MiB)
    d = start_daemon(base)
    try:
        async with d.client() as c:
            content = await leased(c)
            w = await content.writer("big-layer", total=len(data), expected=dg(data))

            async def pump() -> None:
                offset = 0
                while offset < len(data):
                    offset = await w.write(data[offset:offset + MiB], offset)

            task = asyncio.create_task(pump())
            while w.status().offset < 16 * MiB:
                await asyncio.sleep(0.005)
            d.stop(signal.SIGKILL)  # in the middle of the stream, writes in flight
            with pytest.raises(DockyardError):
                await task
            acked = w.status().offset
        assert 16 * MiB <= acked < len(data)

        d = restart(d)
        async with d.client() as c:
            content = await leased(c)
            # No partial blob anywhere: not in the namespace, not on disk.
            assert await content.list() == []
            with pytest.raises(NotFound):
                await content.info(dg(data))
            assert blob_files(d.root) == []
            [st] = await content.list_statuses()
            assert (st.ref, st.total, st.expected) == ("big-layer", len(data), dg(data))
            assert acked <= st.offset < len(data)
            # Resume from the offset the daemon kept and commit.
            info = await content.write("big-layer", data, total=len(data), expected=dg(data))
            assert (info.digest, info.size) == (dg(data), len(data))
            assert await content.list_statuses() == []
            assert await content.read_all(dg(data), 47 * MiB) == data[47 * MiB:]
            assert blob_files(d.root) == [dg(data).split(":")[1]]

            # Kill again mid-ingest, and this time abort after the restart.
            other = os.urandom(8 * MiB)
            w = await content.writer("doomed", total=len(other))
            await w.write(other[:4 * MiB], 0)
        d.stop(signal.SIGKILL)
        d = restart(d)
        async with d.client() as c:
            content = await leased(c)
            assert [(s.ref, s.offset) for s in await content.list_statuses()] == [("doomed", 4 * MiB)]
            await content.abort("doomed")
            assert await content.list_statuses() == []
            assert ingest_dirs(d.root) == []
            assert [i.digest for i in await content.list()] == [dg(data)]
    finally:
        d.stop()
        remove_base(d)


async def test_concurrent_writers_same_blob_different_refs(daemon: DaemonProcess, client: Client) -> None:
    data = os.urandom(24 * MiB)
    content = await leased(client)
    results = await asyncio.gather(*(content.write(f"racer-{i}", data, chunk_size=512 << 10) for i in range(3)))
    assert {(r.digest, r.size) for r in results} == {(dg(data), len(data))}
    assert blob_files(daemon.root) == [dg(data).split(":")[1]]
    assert await content.list_statuses() == []
    assert ingest_dirs(daemon.root) == []
    assert [i.digest for i in await content.list()] == [dg(data)]
    assert await content.read_all(dg(data)) == data


@pytest.fixture
def small_root(base: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs as the daemon's --root (base/root), unmounted afterwards."""
    root = base / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


async def test_full_disk_during_write(base: Path, small_root: Path) -> None:
    d = start_daemon(base)
    try:
        async with d.client() as c:
            content = await leased(c)
            kept = (await content.write("small", b"fits easily")).digest
            data = os.urandom(40 * MiB)
            with pytest.raises(ResourceExhausted) as ei:
                await content.write("too-big", data, total=len(data))
            message = str(ei.value)
            assert 'ingest ref "too-big"' in message and "no space left on device" in message
            # Nothing half-written is visible; the ingest holds what fitted, at a clean offset.
            assert [i.digest for i in await content.list()] == [kept]
            assert blob_files(d.root) == [kept.split(":")[1]]
            [st] = await content.list_statuses()
            assert st.ref == "too-big" and 0 < st.offset < len(data)
            # The daemon keeps serving: reads work, the ingest can be aborted, space comes back.
            assert await content.read_all(kept) == b"fits easily"
            await content.abort("too-big")
            assert await content.list_statuses() == []
            info = await content.write("after", os.urandom(MiB))
            assert info.size == MiB
            assert len(await content.list()) == 2
    finally:
        d.stop()
        assert d.proc.returncode == 0, d.log()
