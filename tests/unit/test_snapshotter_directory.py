"""The lifecycle both directory snapshotters share: removal, orphans, cancellation, close."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition
from supervisor.snapshotter import NativeSnapshotter, OverlaySnapshotter

pytestmark = pytest.mark.root

Impl = type[NativeSnapshotter] | type[OverlaySnapshotter]


@pytest.fixture(params=[NativeSnapshotter, OverlaySnapshotter], ids=["native", "overlayfs"])
def impl(request: pytest.FixtureRequest) -> Impl:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def sn(impl: Impl, tmp_path: Path) -> AsyncIterator[NativeSnapshotter | OverlaySnapshotter]:
    s = await impl.open(tmp_path / "root")
    yield s
    await s.close()


def snaps(sn: NativeSnapshotter | OverlaySnapshotter | OverlaySnapshotter) -> str:
    return os.path.join(sn.root, "snapshots")


async def test_remove_deletes_the_directory(sn: NativeSnapshotter | OverlaySnapshotter) -> None:
    await sn.prepare("a", "")
    await sn.remove("a")
    assert os.listdir(snaps(sn)) == []


async def test_cleanup_removes_orphans_only(sn: NativeSnapshotter | OverlaySnapshotter) -> None:
    await sn.prepare("a", "")
    await sn.commit("c", "a")
    await sn.prepare("live", "c")
    d = snaps(sn)
    for orphan in ("999", ".new-deadbeef", ".rm-7-abcd", "junk"):
        os.makedirs(os.path.join(d, orphan, "fs", "deep"))
    with open(os.path.join(d, "stray-file"), "w") as f:
        f.write("x")
    await sn.cleanup()
    assert sorted(os.listdir(d)) == ["1", "2"]


async def test_orphan_with_the_next_id_is_replaced(sn: NativeSnapshotter | OverlaySnapshotter) -> None:
    # A crash after renaming a staged dir but before the commit leaves <id> without a record.
    await sn.prepare("a", "")
    os.makedirs(os.path.join(snaps(sn), "2", "fs", "stale"))
    await sn.prepare("b", "")
    assert os.listdir(os.path.join(snaps(sn), "2", "fs")) == []
    await sn.cleanup()
    assert sorted(os.listdir(snaps(sn))) == ["1", "2"]


async def test_calls_after_close_fail(impl: Impl, tmp_path: Path) -> None:
    s = await impl.open(tmp_path / "root")
    await s.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await s.prepare("a", "")
    with pytest.raises(FailedPrecondition):
        [i async for i in s.walk()]


