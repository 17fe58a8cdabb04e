"""Hostile layers: nothing an archive says may create, change or delete outside the target.

Each case applies a tar into `<jail>/root`, next to sentinels in `<jail>`; afterwards the
jail outside `root`, /etc/passwd, /etc/shadow and the usual landing places of an escape
must be exactly as before. Cases either fail with InvalidArgument naming the entry, or are
contained (chroot semantics: symlinks resolve as if `root` were `/`).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.archive.apply import apply_layer
from tests.unit.archive_fixtures import (
    TarEntry,
    build_tar,
    char_device,
    directory,
    file,
    hardlink,
    opaque,
    symlink,
    tree_state,
    whiteout,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)"),
]

ESC = f"dockyard-escape-{uuid.uuid4().hex[:8]}"  # a name no test run leaves anywhere


@dataclass
class Jail:
    base: Path  # holds the sentinels and root
    root: Path  # the apply target

    @property
    def outside_file(self) -> Path:
        return self.base / "outside_file"

    @property
    def outside_dir(self) -> Path:
        return self.base / "outside_dir"


def _host_files() -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for p in ("/etc/passwd", "/etc/shadow"):
        if os.path.exists(p):
            st = os.lstat(p)
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_mtime_ns, digest)
    return out


def _outside_state(jail: Jail) -> object:
    base = jail.base.lstat()
    state = {k: v for k, v in tree_state(jail.base, dir_mtimes=True).items() if not k.startswith("root")}
    return (base.st_mode, base.st_uid, base.st_mtime_ns, sorted(os.listdir(jail.base)), state, _host_files())


@pytest.fixture
def jail() -> Iterator[Jail]:
    base = Path(tempfile.mkdtemp(prefix="dockyard-jail-"))
    try:
        j = Jail(base, base / "root")
        j.root.mkdir()
        j.outside_file.write_bytes(b"precious")
        j.outside_dir.mkdir(mode=0o755)
        (j.outside_dir / "keep").write_bytes(b"keep")
        before = _outside_state(j)
        yield j
        assert _outside_state(j) == before, "something outside the target changed"
        for place in (base, base.parent, Path("/"), Path("/etc"), Path("/tmp"), j.outside_dir):
            assert not (place / ESC).exists(), f"escaped into {place}"
    finally:
        shutil.rmtree(base)


def _apply(jail: Jail, entries: list[TarEntry], mode: str = "delete") -> None:
    apply_layer(io.BytesIO(build_tar(entries)), jail.root, whiteout_mode=mode)  # type: ignore[arg-type]


# -- names that escape are errors ------------------------------------------------------------

ESCAPING_NAMES = [
    f"../{ESC}",
    f"a/../../{ESC}",
    f"./../{ESC}",
    f"a/b/../../../{ESC}",
    f"/../{ESC}",
    f"../root/{ESC}",
]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
@pytest.mark.parametrize("kind", ["file", "dir", "symlink", "whiteout", "opaque-dir"])
def test_escaping_names_are_invalid_argument(jail: Jail, name: str, kind: str) -> None:
    entry = {
        "file": file(name, b"pwned"),
        "dir": directory(name),
        "symlink": symlink(name, "/"),
        "whiteout": whiteout(name),
        "opaque-dir": opaque(name),
    }[kind]
    with pytest.raises(InvalidArgument, match="escapes the layer root") as err:
        _apply(jail, [file("fine", b"1"), entry])
    assert repr(entry.name) in str(err.value)
    assert (jail.root / "fine").read_bytes() == b"1"  # a partial tree, inside only


@pytest.mark.parametrize("target", [f"../{ESC}", f"a/../../{ESC}", "../outside_file", "../root/../outside_file"])
def test_hardlink_targets_that_escape_are_invalid_argument(jail: Jail, target: str) -> None:
    with pytest.raises(InvalidArgument, match="escapes the layer root"):
        _apply(jail, [hardlink("h", target)])


@pytest.mark.parametrize("base", [".wh...", ".wh..", ".wh."])
def test_whiteouts_of_dot_names_are_invalid_argument(jail: Jail, base: str) -> None:
    (jail.root / "sub").mkdir()
    for mode in ("delete", "overlay"):
        with pytest.raises(InvalidArgument, match="invalid whiteout name"):
            _apply(jail, [file(f"sub/{base}")], mode=mode)
    assert (jail.root / "sub").is_dir()


def test_an_absolute_name_lands_inside_the_root(jail: Jail) -> None:
    _apply(jail, [file("/etc/passwd", b"mine"), file(f"//{ESC}", b"x")])
    assert (jail.root / "etc/passwd").read_bytes() == b"mine"
    assert (jail.root / ESC).read_bytes() == b"x"


# -- symlinks are resolved as if the root were / ------------------------------------------------


@pytest.mark.parametrize(
    ("links", "write", "lands"),
    [
        ([("up", "..")], f"up/{ESC}", ESC),
        ([("up", "../../../../..")], f"up/{ESC}", ESC),
        ([("r", "/")], f"r/{ESC}", ESC),
        ([("r", "/")], "r/outside_file", "outside_file"),
        ([("e", "/etc")], "e/passwd", "etc/passwd"),
        ([("a", "b"), ("b", "c/../.."), ("c", ".")], f"a/{ESC}", ESC),
        ([("l", "sub/../../../../")], f"l/{ESC}", ESC),
        ([("d", "x"), ("x", "/y"), ("y", "..")], f"d/{ESC}", ESC),
    ],
)
def test_symlinks_in_the_same_layer_stay_inside(
    jail: Jail, links: list[tuple[str, str]], write: str, lands: str
) -> None:
    _apply(jail, [*(symlink(n, t) for n, t in links), file(write, b"contained")])
    assert (jail.root / lands).read_bytes() == b"contained"


def test_absolute_symlink_to_the_jail_resolves_inside(jail: Jail) -> None:
    _apply(jail, [symlink("s", str(jail.base)), file("s/outside_file", b"contained"), file(f"s/{ESC}", b"x")])
    inside = jail.root / str(jail.base).lstrip("/")
    assert (inside / "outside_file").read_bytes() == b"contained"
    assert (inside / ESC).exists()


def test_symlinks_left_by_lower_layers_stay_inside(jail: Jail) -> None:
    (jail.root / "etc").symlink_to(jail.outside_dir)  # absolute, to the real outside
    (jail.root / "rel").symlink_to("../outside_dir")
    (jail.root / "f").symlink_to(jail.outside_file)
    _apply(jail, [file("etc/passwd", b"a"), file("rel/keep", b"b"), file(f"rel/{ESC}", b"c"), file("f", b"d")])
    assert (jail.root / str(jail.outside_dir).lstrip("/") / "passwd").read_bytes() == b"a"
    assert (jail.root / "outside_dir/keep").read_bytes() == b"b"
    # A file over a symlink replaces the symlink; it does not write through it.
    assert not (jail.root / "f").is_symlink() and (jail.root / "f").read_bytes() == b"d"


def test_a_directory_replaced_by_a_symlink_cannot_be_written_through(jail: Jail) -> None:
    _apply(
        jail,
        [
            directory("d"),
            file("d/a", b"1"),
            symlink("d", str(jail.outside_dir)),
            file("d/pwned", b"2"),
            directory("d/sub", mode=0o777),
        ],
    )
    moved = jail.root / str(jail.outside_dir).lstrip("/")
    assert (moved / "pwned").read_bytes() == b"2"
    assert (moved / "sub").is_dir()


def test_a_directory_entry_over_a_symlink_replaces_the_symlink(jail: Jail) -> None:
    (jail.root / "d").symlink_to(jail.outside_dir)
    _apply(jail, [directory("d", mode=0o777, uid=1234)])
    assert not (jail.root / "d").is_symlink()


def test_symlink_loops_are_invalid_argument(jail: Jail) -> None:
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        _apply(jail, [symlink("a", "b"), symlink("b", "a"), file(f"a/{ESC}")])


def test_a_file_under_a_file_is_invalid_argument(jail: Jail) -> None:
    with pytest.raises(InvalidArgument, match="not a directory"):
        _apply(jail, [file("f", b"x"), file(f"f/{ESC}", b"y")])


def test_attributes_of_a_symlink_never_reach_its_target(jail: Jail) -> None:
    _apply(
        jail,
        [
            symlink("s", str(jail.outside_file), uid=1234, gid=1234, mtime=1, xattrs={"user.x": b"1"}),
            symlink("t", "/outside_dir", uid=1234, mtime=1),
            hardlink("h", "s", uid=4321, mtime=2),  # a hard link to the symlink, not its target
        ],
    )
    assert (jail.root / "h").is_symlink()
    assert jail.outside_file.stat().st_nlink == 1


# -- hard links --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/etc/shadow", "/etc/passwd", "etc/passwd", "s/outside_file", "s2/keep"])
def test_hardlinks_cannot_reach_outside_files(jail: Jail, target: str) -> None:
    with pytest.raises(InvalidArgument, match="not found"):
        _apply(jail, [symlink("s", str(jail.base)), symlink("s2", "../outside_dir"), hardlink("h", target)])
    assert jail.outside_file.stat().st_nlink == 1
    assert (jail.outside_dir / "keep").stat().st_nlink == 1


def test_hardlinks_to_directories_are_invalid_argument(jail: Jail) -> None:
    with pytest.raises(InvalidArgument, match="is a directory"):
        _apply(jail, [directory("d"), hardlink("h", "d")])


def test_hardlink_to_root_is_invalid_argument(jail: Jail) -> None:
    with pytest.raises(InvalidArgument, match="layer root"):
        _apply(jail, [hardlink("h", "/")])


# -- whiteouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["delete", "overlay"])
def test_whiteouts_through_symlinks_stay_inside(jail: Jail, mode: str) -> None:
    (jail.root / "lower-abs").symlink_to(jail.base)
    (jail.root / "lower-rel").symlink_to("../../..")
    _apply(
        jail,
        [
            symlink("s", str(jail.base)),
            symlink("o", str(jail.outside_dir)),
            opaque("o"),
            opaque("lower-abs/outside_dir"),
            whiteout("s/outside_file"),
            whiteout("s/outside_dir"),
            whiteout("lower-abs/outside_file"),
            whiteout("lower-rel/outside_dir"),
        ],
        mode=mode,
    )


def test_a_whiteout_of_a_symlink_removes_only_the_symlink(jail: Jail) -> None:
    (jail.root / "link").symlink_to(jail.outside_dir)
    (jail.root / "flink").symlink_to(jail.outside_file)
    _apply(jail, [whiteout("link"), whiteout("flink")])
    assert os.listdir(jail.root) == []


def test_an_opaque_marker_at_the_root_empties_only_the_root(jail: Jail) -> None:
    (jail.root / "lower").mkdir()
    (jail.root / "lower/f").write_bytes(b"x")
    (jail.root / "up").symlink_to("..")
    _apply(jail, [file("new", b"n"), opaque("")])
    assert os.listdir(jail.root) == ["new"]


def test_overlay_whiteout_over_a_symlink_replaces_the_symlink(jail: Jail) -> None:
    (jail.root / "x").symlink_to(jail.outside_file)
    _apply(jail, [whiteout("x"), char_device(f"dev/{ESC}", 1, 3)], mode="overlay")
    assert (jail.root / "x").lstat().st_rdev == 0
    assert not (jail.root / "x").is_symlink()


# -- failure halfway leaves a partial tree, inside only -------------------------------------------


def test_failure_halfway_leaves_only_a_partial_tree_inside(jail: Jail) -> None:
    with pytest.raises(InvalidArgument) as err:
        _apply(jail, [directory("a"), file("a/one", b"1"), symlink("b", "/"), file(f"b/../../{ESC}", b"x")])
    assert ESC in str(err.value)
    assert (jail.root / "a/one").read_bytes() == b"1"


# -- overlay mode: hostile symlinks in the lower layers ----------------------------------------


def test_symlinks_of_the_lowers_stay_inside_the_upperdir(jail: Jail) -> None:
    lower = Path(tempfile.mkdtemp(prefix="dockyard-lower-"))
    try:
        (lower / "abs").symlink_to(jail.outside_dir)
        (lower / "up").symlink_to("../../../..")
        (lower / "root").symlink_to("/")
        (lower / "loop1").symlink_to("loop2")
        (lower / "loop2").symlink_to("loop1")
        layer = [
            file("abs/pwned", b"1"),
            whiteout("abs/keep"),
            file(f"up/{ESC}", b"2"),
            opaque("up"),
            file("root/outside_file", b"3"),
        ]
        apply_layer(io.BytesIO(build_tar(layer)), jail.root, whiteout_mode="overlay", parents=[lower])
        inside = jail.root / str(jail.outside_dir).lstrip("/")
        assert (inside / "pwned").read_bytes() == b"1"
        assert (inside / "keep").lstat().st_rdev == 0  # a whiteout, made inside
        assert (jail.root / ESC).read_bytes() == b"2"
        assert (jail.root / "outside_file").read_bytes() == b"3"
        with pytest.raises(InvalidArgument, match="not found"):
            link = [hardlink("h", "abs/../abs/keep-not-here"), hardlink("h2", "root/tmp")]
            apply_layer(io.BytesIO(build_tar(link)), jail.root, whiteout_mode="overlay", parents=[lower])
        with pytest.raises(InvalidArgument, match="too many levels"):
            apply_layer(io.BytesIO(build_tar([file("loop1/x")])), jail.root, whiteout_mode="overlay", parents=[lower])
    finally:
        shutil.rmtree(lower)
