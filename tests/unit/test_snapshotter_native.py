"""NativeSnapshotter specifics: mount shapes, copies of the parent, usage of a copy."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.types import Mount
from supervisor.snapshotter import NativeSnapshotter

pytestmark = pytest.mark.root


@pytest.fixture
async def sn(tmp_path: Path) -> AsyncIterator[NativeSnapshotter]:
    s = await NativeSnapshotter.open(tmp_path / "root")
    yield s
    await s.close()


def snaps(sn: NativeSnapshotter) -> str:
    return os.path.join(sn.root, "snapshots")


async def test_layout_and_mount_shapes(sn: NativeSnapshotter) -> None:
    d = snaps(sn)
    assert await sn.prepare("a", "") == [Mount("bind", f"{d}/1/fs", "", ["rw", "rbind"])]
    with open(f"{d}/1/fs/file", "w") as f:
        f.write("from the parent")
    await sn.commit("c", "a")
    # Active snapshots get a full copy of the parent...
    assert await sn.prepare("b", "c") == [Mount("bind", f"{d}/2/fs", "", ["rw", "rbind"])]
    with open(f"{d}/2/fs/file") as f:
        assert f.read() == "from the parent"
    # ...views use the parent's directory read-only, without copying.
    assert await sn.view("v", "c") == [Mount("bind", f"{d}/1/fs", "", ["ro", "rbind"])]
    assert os.listdir(f"{d}/3/fs") == []
    assert await sn.view("v0", "") == [Mount("bind", f"{d}/4/fs", "", ["ro", "rbind"])]
    assert sorted(os.listdir(d)) == ["1", "2", "3", "4"]
    con = sqlite3.connect(os.path.join(sn.root, "metadata.db"))
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


async def test_native_usage_excludes_the_copied_parent(sn: NativeSnapshotter) -> None:
    await sn.prepare("a", "")
    with open(os.path.join(snaps(sn), "1", "fs", "big"), "wb") as f:
        f.write(b"x" * 1_000_000)
    await sn.commit("c", "a")
    assert (await sn.usage("c")).size >= 1_000_000
    await sn.prepare("b", "c")
    assert (await sn.usage("b")).inodes == 0
    with open(os.path.join(snaps(sn), "2", "fs", "big"), "ab") as f:
        f.write(b"y")
    usage = await sn.usage("b")
    assert usage.inodes == 1 and usage.size >= 1_000_000


# A native prepare copies, so staging takes long enough to race with.


async def test_cleanup_spares_a_snapshot_being_staged(sn: NativeSnapshotter) -> None:
    await sn.prepare("a", "")
    src = os.path.join(snaps(sn), "1", "fs")
    for i in range(1000):
        with open(os.path.join(src, f"f{i}"), "w") as f:
            f.write("x" * 100)
    await sn.commit("c", "a")
    prepare = asyncio.create_task(sn.prepare("b", "c"))
    # Let the copy start, then clean up concurrently with it.
    while not any(e.startswith(".new-") for e in os.listdir(snaps(sn))):
        await asyncio.sleep(0.001)
    await sn.cleanup()
    await prepare
    assert len(os.listdir(os.path.join(snaps(sn), "2", "fs"))) == 1000


async def test_cancelled_prepare_leaves_nothing(sn: NativeSnapshotter) -> None:
    await sn.prepare("a", "")
    src = os.path.join(snaps(sn), "1", "fs")
    for i in range(1000):
        with open(os.path.join(src, f"f{i}"), "w") as f:
            f.write("x")
    await sn.commit("c", "a")
    task = asyncio.create_task(sn.prepare("b", "c"))
    while not any(e.startswith(".new-") for e in os.listdir(snaps(sn))):
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [i.name async for i in sn.walk()] == ["c"]
    assert sorted(os.listdir(snaps(sn))) == ["1"]
    await sn.prepare("b", "c")  # the key is free
