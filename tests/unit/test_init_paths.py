"""Resolving mount destinations inside a rootfs (dockyard_common.rootpath.secure_join) — no root needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.rootpath import opened_in_root, secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hosts").write_text("")
    (r / "usr" / "lib").mkdir(parents=True)
    return r


def test_plain_paths(root: Path) -> None:
    assert secure_join(str(root), "/etc/hosts") == f"{root}/etc/hosts"
    assert secure_join(str(root), "etc//./hosts") == f"{root}/etc/hosts"
    assert secure_join(str(root), "/") == str(root)
    assert secure_join(str(root), "/usr/lib/../../etc") == f"{root}/etc"


def test_absolute_symlinks_resolve_inside_the_root(root: Path, tmp_path: Path) -> None:
    (root / "lib").symlink_to("/usr/lib")
    (root / "hostdir").symlink_to(str(tmp_path))  # an absolute path that exists on the host
    assert secure_join(str(root), "/lib/x") == f"{root}/usr/lib/x"
    assert secure_join(str(root), "/hostdir/y") == f"{root}{tmp_path}/y"


def test_relative_symlinks(root: Path) -> None:
    (root / "usr" / "etc").symlink_to("../etc")
    assert secure_join(str(root), "/usr/etc/hosts") == f"{root}/etc/hosts"


@pytest.mark.parametrize("target", ["../../../../../../tmp", "../..", "../etc/../../x"])
def test_symlinks_escaping_the_root_are_refused(root: Path, target: str) -> None:
    (root / "escape").symlink_to(target)
    with pytest.raises(InvalidArgument, match="escapes the container root"):
        secure_join(str(root), "/escape/x", create="dir")


def test_dotdot_above_the_root_is_refused(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="escapes"):
        secure_join(str(root), "/../etc")
    with pytest.raises(InvalidArgument, match="escapes"):
        secure_join(str(root), "/missing/../../x")


def test_symlink_loops_are_refused(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(InvalidArgument, match="too many levels"):
        secure_join(str(root), "/a/x")


def test_file_in_the_middle_is_refused(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a directory"):
        secure_join(str(root), "/etc/hosts/x", create="dir")


def test_create_makes_directories_and_files(root: Path) -> None:
    (root / "link").symlink_to("/var/run")
    assert secure_join(str(root), "/link/a/b", create="dir") == f"{root}/var/run/a/b"
    assert (root / "var" / "run" / "a" / "b").is_dir()
    path = secure_join(str(root), "/srv/file", create="file")
    assert os.path.isfile(path) and path == f"{root}/srv/file"
    assert not (root.parent / "var").exists()


def test_opened_in_root_checks_the_real_location(root: Path, tmp_path: Path) -> None:
    with opened_in_root(str(root), f"{root}/etc") as p:
        assert p.startswith("/proc/self/fd/")
        assert os.readlink(p) == f"{root}/etc"
    (root / "out").symlink_to(str(tmp_path))
    with pytest.raises(InvalidArgument, match="symbolic link"), opened_in_root(str(root), f"{root}/out"):
        pass
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(InvalidArgument, match="outside"), opened_in_root(str(root), str(outside)):
        pass
