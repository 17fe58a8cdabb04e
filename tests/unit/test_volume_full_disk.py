"""supervisor/volumes on a full disk, without a daemon: a volume that cannot be made is
ResourceExhausted and leaves nothing; a seed cut short by a crash is emptied at the next start.
(tests/integration/test_full_disk_more.py does it with a real full filesystem.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dockyard_common.errors import ResourceExhausted
from supervisor.volumes.store import SEEDING
from tests.unit.test_volume_store import store_at


async def test_a_volume_that_does_not_fit_is_resource_exhausted_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_at(tmp_path)
    real = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ResourceExhausted, match="volume 'data': No space left on device"):
        await store.create("default", "data")
    monkeypatch.setattr(os, "fsync", real)
    assert os.listdir(tmp_path / "volumes" / "default") == []
    assert await store.list("default") == []


async def test_a_seed_cut_short_is_emptied_at_the_next_start(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    vol, _ = await store.create("default", "data")
    (vol.mountpoint / "half").write_text("x")
    os.mkdir(vol.mountpoint / "dir")
    (vol.mountpoint / "dir" / "file").write_text("y")
    (vol.mountpoint.parent / SEEDING).touch()  # the daemon died copying
    seeded, _ = await store.create("default", "seeded")
    (seeded.mountpoint / "whole").write_text("z")  # a seed that finished: no marker
    store = store_at(tmp_path)  # the next start
    assert os.listdir(vol.mountpoint) == [] and not (vol.mountpoint.parent / SEEDING).exists()
    assert os.listdir(seeded.mountpoint) == ["whole"]
    assert [v.name for v in await store.list("default")] == ["data", "seeded"]
