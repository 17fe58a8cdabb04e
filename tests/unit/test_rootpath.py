"""dockyard_common.rootpath: the one path-in-root walker, as the shim (secure_join: refuse escapes)
and the layer applier (RootDir.resolve_dir: `..` stays at the root) use it — no root needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.rootpath import MAX_SYMLINKS, NotADirectory, RootDir, secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hosts").write_text("")
    (r / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return r


def _resolved(root: Path, path: str) -> tuple[str, ...] | None:
    with RootDir(root) as rd:
        got = rd.resolve_dir(path.split("/"))
        if got is None:
            return None
        os.close(got.fd)
        return got.canonical


# -- `..` ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "clamped"), [
    ("..", ()), ("/../etc", ("etc",)), ("etc/../../etc", ("etc",)), ("/usr/lib/../../../usr", ("usr",)),
])
def test_dotdot_above_the_root_is_refused_for_a_mount_and_clamped_for_a_layer(
        root: Path, path: str, clamped: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument, match="escapes the container root"):
        secure_join(str(root), path)
    with pytest.raises(InvalidArgument, match="escapes the container root"):
        secure_join(str(root), path, create="dir")
    assert _resolved(root, path) == clamped  # a layer's walk stays at the root: `..` of `/` is `/`


@pytest.mark.parametrize(("target", "clamped"), [
    ("..", ("new",)), ("../..", ("new",)), ("../../outside", ("outside", "new")),
    ("usr/../../outside", ("outside", "new")), ("/../outside", ("outside", "new")),
])
def test_a_symlink_climbing_out(root: Path, target: str, clamped: tuple[str, ...]) -> None:
    (root / "up").symlink_to(target)
    with pytest.raises(InvalidArgument, match="escapes"):
        secure_join(str(root), "/up/new", create="dir")
    assert sorted(os.listdir(root)) == ["etc", "up", "usr"]  # nothing made on the way
    # The layer walk clamps: what it makes lands inside the root.
    with RootDir(root) as rd:
        got = rd.resolve_dir(["up", "new"], create=True)
        assert got is not None
        os.close(got.fd)
    assert got.canonical == clamped and root.joinpath(*clamped).is_dir()
    assert not (root.parent / "new").exists() and list((root.parent / "outside").iterdir()) == []


# -- symlinks -----------------------------------------------------------------------------------------


def test_absolute_symlinks_restart_at_the_root(root: Path, tmp_path: Path) -> None:
    (root / "lib").symlink_to("/usr/lib")
    (root / "host").symlink_to(str(tmp_path / "outside"))  # exists on the host, not in the root
    assert secure_join(str(root), "/lib/x") == f"{root}/usr/lib/x"
    assert _resolved(root, "lib") == ("usr", "lib")
    assert secure_join(str(root), "/host/y") == f"{root}{tmp_path}/outside/y"
    assert _resolved(root, "host") is None  # missing inside the root: never the host's directory
    path = secure_join(str(root), "/host/y", create="file")
    assert path == f"{root}{tmp_path}/outside/y" and os.path.isfile(path)
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_final_symlink_is_followed_to_a_file(root: Path) -> None:
    (root / "etc" / "resolv.conf").symlink_to("../run/resolv.conf")
    path = secure_join(str(root), "/etc/resolv.conf", create="file")
    assert path == f"{root}/run/resolv.conf" and os.path.isfile(path)
    assert secure_join(str(root), "/etc/resolv.conf") == path  # now it exists: the same answer
    with RootDir(root) as rd, pytest.raises(NotADirectory):
        rd.resolve_dir(["etc", "resolv.conf"])


@pytest.mark.parametrize("links", [[("a", "a")], [("a", "b"), ("b", "a")], [("a", "/a")], [("a", "./a/")]])
def test_symlink_loops_are_refused(root: Path, links: list[tuple[str, str]]) -> None:
    for name, target in links:
        (root / name).symlink_to(target)
    with pytest.raises(InvalidArgument, match="too many levels"):
        secure_join(str(root), "/a/x", create="dir")
    with RootDir(root) as rd, pytest.raises(InvalidArgument, match="too many levels"):
        rd.resolve_dir(["a", "x"], create=True)


def test_a_chain_of_links_within_the_limit_resolves(root: Path) -> None:
    for i in range(MAX_SYMLINKS - 1):
        (root / f"l{i}").symlink_to(f"l{i + 1}")
    (root / f"l{MAX_SYMLINKS - 1}").symlink_to("etc")
    assert secure_join(str(root), "/l0/hosts") == f"{root}/etc/hosts"


def test_an_empty_symlink_is_refused(root: Path) -> None:
    # symlink(2) refuses an empty target; a lower layer's link (`lower_link`) may still be one.
    with RootDir(root) as rd, pytest.raises(InvalidArgument, match="empty symlink"):
        rd.resolve_dir(["gone", "x"], lower_link=lambda canonical: "" if canonical == ("gone",) else None)


# -- create= ------------------------------------------------------------------------------------------


def test_create_makes_directories_0755_and_an_empty_file(root: Path) -> None:
    old = os.umask(0o077)
    try:
        assert secure_join(str(root), "/a/b/c", create="dir") == f"{root}/a/b/c"
        path = secure_join(str(root), "/a/f", create="file")
    finally:
        os.umask(old)
    assert all((root / d).stat().st_mode & 0o7777 == 0o755 for d in ("a", "a/b", "a/b/c"))
    assert os.path.isfile(path) and os.path.getsize(path) == 0
    # Asked again: what exists is found, not made anew.
    assert secure_join(str(root), "/a/f", create="file") == path
    assert secure_join(str(root), "/a/b/c", create="dir") == f"{root}/a/b/c"


def test_create_refuses_to_walk_through_a_file(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="/etc/hosts is not a directory"):
        secure_join(str(root), "/etc/hosts/x", create="dir")
    with RootDir(root) as rd, pytest.raises(NotADirectory):
        rd.resolve_dir(["etc", "hosts", "x"], create=True)
    assert (root / "etc" / "hosts").is_file()


def test_without_create_a_missing_path_is_finished_lexically(root: Path) -> None:
    assert secure_join(str(root), "/missing/a/../b") == f"{root}/missing/b"
    assert not (root / "missing").exists()
    with pytest.raises(InvalidArgument, match="escapes"):
        secure_join(str(root), "/missing/../../b")
    assert _resolved(root, "missing/a") is None


def test_both_walks_agree_inside_the_root(root: Path) -> None:
    (root / "usr" / "etc").symlink_to("../etc")
    (root / "lib").symlink_to("usr/lib")
    (root / "abs").symlink_to("/usr/./lib/")
    for path in ("usr/etc", "lib", "abs", "usr/lib/../etc", "lib/../../etc", "abs/.."):
        canonical = _resolved(root, path)
        assert canonical is not None
        assert secure_join(str(root), path) == os.path.join(str(root), *canonical), path
