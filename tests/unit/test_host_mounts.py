"""dockyard_common.mounts in the daemon: mount lists performed to look at a tree, always undone."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.mounts import mount_all, mounted, unmount_all
from dockyard_common.types import Mount
from tests.conformance.mounts import mounts_under


def _overlay(tmp_path: Path) -> Mount:
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "file").write_text("from lower\n")
    return Mount("overlay", "overlay", options=[f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"])


def test_mounted_overlay_is_writable_and_undone(tmp_path: Path) -> None:
    with mounted([_overlay(tmp_path)], tmp_path / "tmp") as root:
        assert (root / "file").read_text() == "from lower\n"
        (root / "new").write_text("x")
    assert (tmp_path / "upper" / "new").read_text() == "x"
    assert mounts_under(str(tmp_path)) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_readonly_forces_ro_even_on_a_bind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with mounted([Mount("bind", str(src), options=["rbind", "rw"])], tmp_path / "tmp", readonly=True) as root:
        with pytest.raises(OSError) as err:
            (root / "x").write_text("no")
        assert err.value.errno == errno.EROFS
    assert not (src / "x").exists()
    assert mounts_under(str(tmp_path)) == []


def test_a_failing_mount_undoes_the_earlier_ones(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    target = tmp_path / "target"
    target.mkdir()
    gone = Mount("overlay", "overlay", target="sub", options=[f"lowerdir={tmp_path / 'missing'}"])
    with pytest.raises(NotFound, match="missing does not exist"):
        mount_all([Mount("bind", str(src), options=["rbind"]), gone], target)
    assert mounts_under(str(tmp_path)) == []
    (src / "empty").mkdir()
    bad = Mount("overlay", "overlay", target="sub", options=[f"lowerdir={src / 'empty'}", "no_such_option"])
    with pytest.raises(InvalidArgument, match=r"overlay .*Invalid argument"):
        mount_all([Mount("bind", str(src), options=["rbind"]), bad], target)
    assert mounts_under(str(tmp_path)) == []


def test_unmount_all_takes_nested_mounts_deepest_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    target = tmp_path / "target"
    target.mkdir()
    mount_all([Mount("bind", str(src), options=["rbind"]), Mount("tmpfs", "tmpfs", target="inner")], target)
    try:
        assert os.path.ismount(target / "inner")
    finally:
        unmount_all(target)
    assert mounts_under(str(tmp_path)) == []
