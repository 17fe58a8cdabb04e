"""write_diff / write_overlay_diff: the tar they write, and apply(diff(lower, upper)) == upper."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.archive.apply import apply_layer
from supervisor.archive.diff import write_diff, write_overlay_diff
from supervisor.errors import FailedPrecondition, NotFound
from tests.unit.archive_fixtures import (
    block_device,
    build_tar,
    char_device,
    directory,
    fifo,
    file,
    hardlink,
    mount_overlay,
    symlink,
    tree_state,
    umount,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, overlay mounts)"),
]

BASE_LAYER = [
    directory("etc"),
    file("etc/passwd", b"root:x:0:0\n", mtime=1_600_000_000),
    file("etc/shadow", b"root:*:\n", mode=0o600, mtime=1_600_000_000),
    file("etc/same-size", b"AAAA", mtime=1_600_000_000),
    directory("etc/conf.d"),
    file("etc/conf.d/a", b"a"),
    file("etc/conf.d/b", b"b"),
    directory("usr/bin", mode=0o755),
    file("usr/bin/busybox", b"\x7fELF" * 100, mode=0o755),
    hardlink("usr/bin/sh", "usr/bin/busybox"),
    hardlink("usr/bin/ls", "usr/bin/busybox"),
    file("usr/bin/su", b"su", mode=0o4755),
    symlink("bin", "usr/bin"),
    symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
    directory("var/lib/apt/lists"),
    file("var/lib/apt/lists/x", b"x"),
    file("var/replaced-by-dir", b"f"),
    directory("var/replaced-by-file"),
    file("var/replaced-by-file/inner", b"i"),
    char_device("dev/null", 1, 3, mode=0o666),
    file("opt/xattr", b"x", xattrs={"user.a": b"1"}),
    file("opt/unchanged", b"u"),
]


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dockyard-diff-"))
    try:
        yield d
    finally:
        for sub in ("merged",):
            while os.path.ismount(d / sub):
                umount(str(d / sub))
        shutil.rmtree(d)


def _apply(target: Path, raw: bytes, mode: str = "delete") -> None:
    target.mkdir(exist_ok=True)
    apply_layer(io.BytesIO(raw), target, whiteout_mode=mode)  # type: ignore[arg-type]


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)


def _mutate(root: Path) -> None:
    """Every kind of change a container makes, applied to the tree at `root`."""
    (root / "etc/passwd").write_bytes(b"root:x:0:0\nuser:x:1000:1000\n")
    os.chmod(root / "etc/shadow", 0o640)
    os.chown(root / "etc/shadow", 0, 42)
    # Same size, same whole-second mtime, other bytes: only the content can tell.
    (root / "etc/same-size").write_bytes(b"BBBB")
    os.utime(root / "etc/same-size", ns=(1_600_000_000 * 10**9,) * 2)
    shutil.rmtree(root / "etc/conf.d")
    (root / "etc/localtime").unlink()
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    (root / "usr/bin/ls").unlink()
    (root / "usr/bin/busybox").write_bytes(b"\x7fELF-v2")  # sh shares the inode: it changes too
    os.link(root / "opt/unchanged", root / "opt/new-link-to-unchanged")
    (root / "var/replaced-by-dir").unlink()
    (root / "var/replaced-by-dir").mkdir(mode=0o700)
    (root / "var/replaced-by-dir/child").write_bytes(b"c")
    shutil.rmtree(root / "var/replaced-by-file")
    (root / "var/replaced-by-file").write_bytes(b"now a file")
    (root / "var/lib/apt/lists/new").write_bytes(b"n")
    os.setxattr(root / "opt/xattr", "user.a", b"2")
    os.setxattr(root / "opt/xattr", "user.b", b"\xff\x00")
    os.chmod(root / "usr/bin", 0o750)
    (root / "home/user/.config").mkdir(parents=True)
    (root / "home/user/.config/app.conf").write_bytes(b"k=v")
    os.chown(root / "home/user", 1000, 1000)
    long_dir = root / ("d" * 120)
    long_dir.mkdir()
    (long_dir / ("f" * 150)).write_bytes(b"long")
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1 name")
    os.mknod(root / "dev/loop0", 0o660 | 0o060000, os.makedev(7, 0))
    os.mkfifo(root / "run-fifo")
    (root / "dev/null").unlink()


def _members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        return tf.getmembers()


def _native_diff(work: Path) -> tuple[Path, Path, bytes]:
    lower, upper = work / "lower", work / "upper"
    _apply(lower, build_tar(BASE_LAYER))
    _copy(lower, upper)
    _mutate(upper)
    out = io.BytesIO()
    write_diff(lower, upper, out)
    return lower, upper, out.getvalue()


def test_native_round_trip(work: Path) -> None:
    lower, upper, raw = _native_diff(work)
    result = work / "result"
    _copy(lower, result)
    _apply(result, raw)
    assert tree_state(result) == tree_state(upper)


def test_native_diff_contents(work: Path) -> None:
    _lower, _upper, raw = _native_diff(work)
    members = _members(raw)
    names = [m.name for m in members]
    assert "etc/conf.d/.wh..wh..opq" not in names
    assert {"etc/.wh.conf.d", "usr/bin/.wh.ls", "dev/.wh.null"} <= set(names)
    assert "etc/conf.d/a" not in names and "opt/unchanged" in names  # deleted dir: one whiteout
    assert "etc/same-size" in names
    # unchanged entries are left out; their parents only come with a changed child
    assert "usr/bin/su" not in names and "etc/passwd" in names
    by_name = {m.name: m for m in members}
    # busybox changed and sh shares its inode: one file, one link to it.
    assert by_name["usr/bin/busybox"].isreg()
    assert by_name["usr/bin/sh"].islnk() and by_name["usr/bin/sh"].linkname == "usr/bin/busybox"
    # an unchanged name of an inode that gained a name comes along as a link
    link_pair = {by_name["opt/new-link-to-unchanged"].type, by_name["opt/unchanged"].type}
    assert link_pair == {tarfile.REGTYPE, tarfile.LNKTYPE}
    assert by_name["opt/xattr"].pax_headers["SCHILY.xattr.user.b"].encode("utf-8", "surrogateescape") == b"\xff\x00"
    for m in members:
        assert (m.uname, m.gname) == ("", "")
        assert not any(k.startswith("SCHILY.xattr.trusted.") for k in m.pax_headers)
        parent = m.name.rpartition("/")[0]
        if parent:
            assert parent in names[: names.index(m.name)], f"{m.name} before its parent"


def test_native_diff_is_deterministic_and_sorted(work: Path) -> None:
    lower, upper, raw = _native_diff(work)
    again = io.BytesIO()
    write_diff(lower, upper, again)
    assert again.getvalue() == raw
    names = [m.name for m in _members(raw) if not m.name.rpartition("/")[2].startswith(".wh.")]
    siblings: dict[str, list[bytes]] = {}
    for n in names:
        parent, _, base = n.rpartition("/")
        siblings.setdefault(parent, []).append(os.fsencode(base))
    for parent, bases in siblings.items():
        if parent != "opt":  # hard links to a name met earlier are appended later
            assert bases == sorted(bases), parent


def test_no_changes_is_an_empty_layer(work: Path) -> None:
    lower, upper = work / "lower", work / "upper"
    _apply(lower, build_tar(BASE_LAYER))
    _copy(lower, upper)
    out = io.BytesIO()
    write_diff(lower, upper, out)
    assert _members(out.getvalue()) == []


def test_missing_trees_are_not_found(work: Path) -> None:
    with pytest.raises(NotFound):
        write_diff(work / "nope", work, io.BytesIO())
    with pytest.raises(NotFound):
        write_overlay_diff(work / "nope", work, io.BytesIO())


# -- overlay -------------------------------------------------------------------------------------


def test_overlay_round_trip(work: Path) -> None:
    lower, upper, ovl_work, merged = (work / n for n in ("lower", "upper", "ovl-work", "merged"))
    for d in (upper, ovl_work, merged):
        d.mkdir()
    _apply(lower, build_tar(BASE_LAYER))
    mount_overlay([str(lower)], str(upper), str(ovl_work), str(merged), options="redirect_dir=off")
    _mutate(merged)
    # A deleted then recreated directory: overlayfs makes it opaque.
    (merged / "etc/conf.d").mkdir()
    (merged / "etc/conf.d/c").write_bytes(b"c")
    assert os.getxattr(upper / "etc/conf.d", "trusted.overlay.opaque") == b"y"

    out = io.BytesIO()
    write_overlay_diff(upper, lower, out)
    raw = out.getvalue()
    names = [m.name for m in _members(raw)]
    assert "etc/conf.d/.wh..wh..opq" in names
    assert {"usr/bin/.wh.ls", "dev/.wh.null"} <= set(names)
    assert "etc/conf.d/a" not in names

    result = work / "result"
    _copy(lower, result)
    _apply(result, raw)
    assert tree_state(result) == tree_state(merged)

    # The same layer applied in overlay mode gives the same merged view.
    umount(str(merged))
    upper2, work2 = work / "upper2", work / "ovl-work2"
    upper2.mkdir()
    work2.mkdir()
    _apply(upper2, raw, mode="overlay")
    expected = tree_state(result)
    mount_overlay([str(lower)], str(upper2), str(work2), str(merged))
    assert tree_state(merged) == expected


def test_overlay_redirect_dir_is_failed_precondition(work: Path) -> None:
    upper = work / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(FailedPrecondition, match="redirect_dir"):
        write_overlay_diff(upper, work, io.BytesIO())


def test_overlay_metacopy_reads_data_from_the_lower_view(work: Path) -> None:
    upper, lower = work / "upper", work / "lower"
    (upper / "d").mkdir(parents=True)
    (lower / "d").mkdir(parents=True)
    (lower / "d/big").write_bytes(b"lower bytes")
    with open(upper / "d/big", "wb") as f:
        f.truncate(len(b"lower bytes"))  # metadata-only copy-up: sparse, no data
    os.chmod(upper / "d/big", 0o600)
    os.setxattr(upper / "d/big", "trusted.overlay.metacopy", b"")
    out = io.BytesIO()
    write_overlay_diff(upper, lower, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        member = tf.getmember("d/big")
        assert member.mode == 0o600
        data = tf.extractfile(member)
        assert data is not None and data.read() == b"lower bytes"


def test_overlay_diff_of_an_upperdir_made_by_apply(work: Path) -> None:
    layer = build_tar(
        [
            directory("a", mode=0o700, mtime=1),
            file("a/f", b"1", mtime=2),
            hardlink("a/g", "a/f"),
            symlink("s", "a/f", mtime=3),
            fifo("p", mtime=4),
            block_device("b", 8, 1, mtime=5),
        ]
    )
    upper = work / "upper"
    _apply(upper, layer, mode="overlay")
    out = io.BytesIO()
    write_overlay_diff(upper, work, out)
    names = [(m.name, m.type) for m in _members(out.getvalue())]
    assert names == [
        ("a", tarfile.DIRTYPE),
        ("a/f", tarfile.REGTYPE),
        ("a/g", tarfile.LNKTYPE),
        ("b", tarfile.BLKTYPE),
        ("p", tarfile.FIFOTYPE),
        ("s", tarfile.SYMTYPE),
    ]
    again = work / "again"
    _apply(again, out.getvalue(), mode="overlay")
    assert tree_state(again, dir_mtimes=True) == tree_state(upper, dir_mtimes=True)
