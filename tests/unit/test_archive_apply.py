"""apply_layer on the real filesystem: entry types, attributes, replacement, whiteouts, overlay."""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import Cancelled, InvalidArgument, NotFound
from supervisor.archive.apply import _CACHE_SIZE, ApplyResult, apply_layer
from tests.unit.archive_fixtures import (
    TarEntry,
    block_device,
    build_tar,
    char_device,
    directory,
    fifo,
    file,
    hardlink,
    mount_overlay,
    opaque,
    sha256_digest,
    symlink,
    tree_state,
    umount,
    whiteout,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted xattrs, mounts)"),
]


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dockyard-archive-"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _apply(target: Path, entries: list[TarEntry] | bytes, mode: str = "delete", **kw: object) -> ApplyResult:
    raw = entries if isinstance(entries, bytes) else build_tar(entries)
    target.mkdir(parents=True, exist_ok=True)
    return apply_layer(io.BytesIO(raw), target, whiteout_mode=mode, **kw)  # type: ignore[arg-type]


# -- entry types and attributes ------------------------------------------------------------


def test_regular_file_contents_owner_mode_and_mtime(work: Path) -> None:
    _apply(work / "t", [file("etc/hosts", b"127.0.0.1 box\n", mode=0o640, uid=1000, gid=1001, mtime=1234567890)])
    p = work / "t/etc/hosts"
    st = p.lstat()
    assert p.read_bytes() == b"127.0.0.1 box\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1000, 1001)
    assert st.st_mtime_ns == 1234567890 * 10**9
    # An implicit parent is a plain 0755 directory.
    assert stat.S_IMODE((work / "t/etc").lstat().st_mode) == 0o755


def test_setuid_setgid_sticky_survive_chown(work: Path) -> None:
    _apply(
        work / "t",
        [
            file("bin/su", b"x", mode=0o4755, uid=1000),
            file("bin/wall", b"y", mode=0o2755, gid=5),
            directory("tmp", mode=0o1777, uid=3),
        ],
    )
    assert stat.S_IMODE((work / "t/bin/su").lstat().st_mode) == 0o4755
    assert stat.S_IMODE((work / "t/bin/wall").lstat().st_mode) == 0o2755
    st = (work / "t/tmp").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o1777, 3)


def test_directory_times_are_set_after_their_children(work: Path) -> None:
    _apply(
        work / "t",
        [
            directory("d", mode=0o700, mtime=1000, pax={"atime": "2000"}),
            file("d/a", b"1"),
            directory("d/sub", mtime=3000),
            file("d/sub/b", b"2"),
            symlink("d/l", "a"),
        ],
    )
    st = (work / "t/d").lstat()
    assert (st.st_mtime_ns, st.st_atime_ns) == (1000 * 10**9, 2000 * 10**9)
    assert (work / "t/d/sub").lstat().st_mtime_ns == 3000 * 10**9
    assert stat.S_IMODE(st.st_mode) == 0o700


def test_pax_times_keep_their_fraction_and_atime_is_never_before_mtime(work: Path) -> None:
    _apply(
        work / "t",
        [
            file("f", b"x", pax={"mtime": "1600000000.5", "atime": "1700000000.25"}),
            file("g", b"x", pax={"mtime": "1600000000", "atime": "1"}),
        ],
    )
    f, g = (work / "t/f").lstat(), (work / "t/g").lstat()
    assert (f.st_mtime_ns, f.st_atime_ns) == (1600000000_500000000, 1700000000_250000000)
    assert g.st_atime_ns == g.st_mtime_ns == 1600000000 * 10**9


def test_symlink_keeps_owner_and_times_without_following(work: Path) -> None:
    before = os.stat("/etc/passwd")
    _apply(work / "t", [symlink("l", "/etc/passwd", uid=7, gid=8, mtime=5000)])
    st = (work / "t/l").lstat()
    assert stat.S_ISLNK(st.st_mode)
    assert os.readlink(work / "t/l") == "/etc/passwd"
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (7, 8, 5000 * 10**9)
    after = os.stat("/etc/passwd")
    assert (after.st_uid, after.st_mtime_ns, after.st_mode) == (before.st_uid, before.st_mtime_ns, before.st_mode)


def test_hardlinks_within_the_layer(work: Path) -> None:
    _apply(
        work / "t",
        [file("a/f", b"data", mode=0o600), hardlink("b/g", "a/f", mode=0o600), hardlink("h", "/a/f", mode=0o600)],
    )
    a, b, h = ((work / "t" / p).lstat() for p in ("a/f", "b/g", "h"))
    assert a.st_ino == b.st_ino == h.st_ino
    assert a.st_nlink == 3


def test_hardlink_to_a_symlink_links_the_symlink(work: Path) -> None:
    _apply(work / "t", [symlink("s", "/nowhere"), hardlink("h", "s")])
    assert (work / "t/h").is_symlink()
    assert (work / "t/h").lstat().st_ino == (work / "t/s").lstat().st_ino


def test_devices_and_fifos(work: Path) -> None:
    _apply(
        work / "t",
        [char_device("dev/null", 1, 3, mode=0o666), block_device("dev/loop0", 7, 0, mode=0o660, gid=6), fifo("run/p")],
    )
    null, loop, p = ((work / "t" / n).lstat() for n in ("dev/null", "dev/loop0", "run/p"))
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 0)
    assert loop.st_gid == 6
    assert stat.S_ISFIFO(p.st_mode)


def test_xattrs_from_pax_records(work: Path) -> None:
    # cap_net_bind_service+ep, set after chown (which would clear it) and before chmod.
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    _apply(
        work / "t",
        [
            directory("d", xattrs={"user.dir": b"yes"}),
            file("d/f", b"x", mode=0o4755, uid=1000, xattrs={"user.bin": b"\xff\x00\x01", "security.capability": cap}),
            symlink("d/l", "f", xattrs={"user.not-on-symlinks": b"1"}),
            file("d/t", b"x", xattrs={"trusted.overlay.opaque": b"y"}),
        ],
    )
    f = str(work / "t/d/f")
    assert os.getxattr(work / "t/d", "user.dir") == b"yes"
    assert os.getxattr(f, "user.bin") == b"\xff\x00\x01"
    assert os.getxattr(f, "security.capability") == cap
    assert stat.S_IMODE(os.lstat(f).st_mode) == 0o4755
    # trusted.* in an archive is never applied: the overlay driver trusts it.
    assert "trusted.overlay.opaque" not in os.listxattr(work / "t/d/t")


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_link_targets(work: Path, fmt: int) -> None:
    deep = "/".join(["a-rather-long-directory-name"] * 8)
    name = f"{deep}/{'f' * 200}"
    target = f"/{deep}/{'t' * 150}"
    _apply(work / "t", build_tar([file(name, b"long"), symlink("s", target), hardlink("h", name)], format=fmt))
    assert (work / "t" / name).read_bytes() == b"long"
    assert os.readlink(work / "t/s") == target
    assert (work / "t/h").lstat().st_ino == (work / "t" / name).lstat().st_ino


def test_non_utf8_names_are_kept_as_bytes(work: Path) -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    _apply(work / "t", [file(name, b"x")])
    assert os.listdir(os.fsencode(work / "t")) == [b"caf\xe9"]


def test_root_entry_is_ignored(work: Path) -> None:
    t = work / "t"
    t.mkdir(mode=0o755)
    before = t.lstat()
    _apply(t, [directory(".", mode=0o777, uid=99), directory("./", mode=0o777), file("./x", b"1")])
    after = t.lstat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid) == (stat.S_IMODE(before.st_mode), before.st_uid)
    assert (t / "x").read_bytes() == b"1"


# -- replacing what is there -----------------------------------------------------------------


def test_entries_replace_entries_of_another_type(work: Path) -> None:
    t = work / "t"
    (t / "y/deep").mkdir(parents=True)
    (t / "y/deep/f").write_bytes(b"old")
    (t / "x").write_bytes(b"old")
    (t / "s").symlink_to("x")
    _apply(t, [directory("x", mode=0o711), file("x/inside", b"1"), file("y", b"now a file"), directory("s")])
    assert stat.S_ISDIR((t / "x").lstat().st_mode) and (t / "x/inside").read_bytes() == b"1"
    assert (t / "y").read_bytes() == b"now a file"
    assert stat.S_ISDIR((t / "s").lstat().st_mode)
    assert (t / "x").lstat().st_mode & 0o777 == 0o711


def test_directory_over_directory_merges_and_takes_new_attributes(work: Path) -> None:
    t = work / "t"
    (t / "d").mkdir(parents=True, mode=0o755)
    (t / "d/keep").write_bytes(b"lower")
    _apply(t, [directory("d", mode=0o700, uid=5), file("d/new", b"upper")])
    assert (t / "d/keep").read_bytes() == b"lower"
    assert (t / "d/new").read_bytes() == b"upper"
    st = (t / "d").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 5)


def test_rewriting_a_hardlinked_lower_file_does_not_touch_its_other_name(work: Path) -> None:
    t = work / "t"
    t.mkdir()
    (t / "a").write_bytes(b"lower")
    os.link(t / "a", t / "b")
    _apply(t, [file("a", b"upper")])
    assert (t / "a").read_bytes() == b"upper"
    assert (t / "b").read_bytes() == b"lower"


def test_a_file_in_the_layer_twice_keeps_the_last(work: Path) -> None:
    _apply(work / "t", [file("f", b"first"), file("f", b"second", mode=0o600)])
    assert (work / "t/f").read_bytes() == b"second"


# -- whiteouts ---------------------------------------------------------------------------------


def _lower(t: Path) -> None:
    (t / "etc/conf.d").mkdir(parents=True)
    (t / "etc/passwd").write_bytes(b"root")
    (t / "etc/conf.d/a").write_bytes(b"a")
    (t / "etc/link").symlink_to("passwd")
    (t / "var/lib/db").mkdir(parents=True)
    (t / "var/lib/db/x").write_bytes(b"x")
    (t / "var/lib/keep").write_bytes(b"k")


def test_whiteouts_delete_in_delete_mode(work: Path) -> None:
    t = work / "t"
    _lower(t)
    _apply(
        t,
        [
            whiteout("etc/passwd"),
            whiteout("etc/conf.d"),
            whiteout("etc/link"),
            whiteout("etc/absent"),
            whiteout("nodir/x"),
        ],
    )
    assert sorted(os.listdir(t / "etc")) == []
    assert not (t / "nodir").exists()  # no parent is made just to delete nothing


def test_opaque_directory_in_delete_mode_keeps_what_this_layer_added(work: Path) -> None:
    t = work / "t"
    _lower(t)
    (t / "var/lib/db/nested").mkdir()
    (t / "var/lib/db/nested/old").write_bytes(b"old")
    _apply(
        t,
        [
            directory("var/lib"),
            file("var/lib/before", b"b"),  # written before the marker
            directory("var/lib/db"),  # merged into the lower dir: loses its lower contents
            file("var/lib/db/nested/new", b"n"),  # implicit parent of a new entry is kept
            opaque("var/lib"),
            file("var/lib/after", b"a"),
        ],
    )
    assert sorted(os.listdir(t / "var/lib")) == ["after", "before", "db"]
    assert sorted(os.listdir(t / "var/lib/db")) == ["nested"]
    assert os.listdir(t / "var/lib/db/nested") == ["new"]


def test_overlay_mode_writes_overlay_whiteouts_into_the_upperdir(work: Path) -> None:
    upper = work / "upper"
    _apply(
        upper,
        [directory("etc"), whiteout("etc/passwd"), directory("var/lib", uid=3), opaque("var/lib"), file("var/lib/n")],
        mode="overlay",
    )
    wh = (upper / "etc/passwd").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(upper / "var/lib", "trusted.overlay.opaque") == b"y"
    assert not (upper / "etc/.wh.passwd").exists()
    assert not (upper / "var/lib/.wh..wh..opq").exists()


def test_meta_whiteouts_are_ignored(work: Path) -> None:
    t = work / "t"
    (t / "d").mkdir(parents=True)
    _apply(t, [file("d/.wh..wh.plnk", b""), file("d/.wh..wh.aufs", b"")])
    assert os.listdir(t / "d") == []


@pytest.fixture
def overlay(work: Path) -> Iterator[dict[str, Path]]:
    """lower/upper/work/merged dirs; whatever is mounted on merged is unmounted afterwards."""
    dirs = {n: work / n for n in ("lower", "upper", "ovl-work", "merged", "expected")}
    for d in dirs.values():
        d.mkdir()
    try:
        yield dirs
    finally:
        while os.path.ismount(dirs["merged"]):
            umount(str(dirs["merged"]))


LAYER1 = [
    directory("etc", mode=0o755),
    file("etc/passwd", b"root:x:0:0\n"),
    file("etc/shadow", b"root:*:\n", mode=0o600),
    directory("etc/conf.d"),
    file("etc/conf.d/a", b"a"),
    file("etc/conf.d/b", b"b"),
    directory("usr/bin", mode=0o750, uid=5, gid=6, mtime=4242, xattrs={"user.origin": b"lower"}),
    file("usr/bin/sh", b"#!", mode=0o755),
    hardlink("usr/bin/ash", "usr/bin/sh", mode=0o755),
    symlink("bin", "usr/bin"),
    directory("var/cache/apt"),
    file("var/cache/apt/pkg", b"p"),
]
LAYER2 = [
    directory("etc"),
    whiteout("etc/shadow"),
    directory("etc/conf.d"),
    opaque("etc/conf.d"),
    file("etc/conf.d/c", b"c"),
    file("usr/bin/tool", b"new tool", mode=0o755),  # no entries for its parents
    whiteout("var/cache"),
    file("etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n"),
    char_device("dev/null", 1, 3, mode=0o666),
]


def test_overlay_mode_through_a_real_mount_matches_delete_mode(work: Path, overlay: dict[str, Path]) -> None:
    _apply(overlay["lower"], LAYER1)
    subprocess.run(["cp", "-a", f"{overlay['lower']}/.", str(overlay["expected"])], check=True)
    _apply(overlay["expected"], LAYER2, mode="delete")
    _apply(overlay["upper"], LAYER2, mode="overlay", parents=[overlay["lower"]])

    mount_overlay([str(overlay["lower"])], str(overlay["upper"]), str(overlay["ovl-work"]), str(overlay["merged"]))
    merged = tree_state(overlay["merged"])
    expected = tree_state(overlay["expected"])
    assert merged.keys() == expected.keys()
    for path in expected:
        assert merged[path] == expected[path], path
    assert "etc/shadow" not in merged and "var/cache" not in merged
    assert sorted(os.listdir(overlay["merged"] / "etc/conf.d")) == ["c"]
    # The implicit usr/ and usr/bin/ of the upperdir copied the lower's attributes.
    ub = (overlay["upper"] / "usr/bin").lstat()
    assert (stat.S_IMODE(ub.st_mode), ub.st_uid, ub.st_gid) == (0o750, 5, 6)
    assert ub.st_mtime_ns == 4242 * 10**9
    assert os.getxattr(overlay["upper"] / "usr/bin", "user.origin") == b"lower"


# -- the stream ----------------------------------------------------------------------------------


def test_digest_and_size_cover_the_whole_uncompressed_stream(work: Path) -> None:
    raw = build_tar([file("a", b"x" * 5000), directory("d")])
    raw += b"\0" * 4096  # extra padding after the end-of-archive blocks still counts
    result = _apply(work / "t", raw)
    assert result == ApplyResult(size=len(raw), digest=sha256_digest(raw))


def test_an_empty_stream_is_an_empty_layer(work: Path) -> None:
    result = _apply(work / "t", b"")
    assert result == ApplyResult(size=0, digest=sha256_digest(b""))
    assert os.listdir(work / "t") == []


def test_a_tar_without_end_blocks_ends_at_a_header_boundary(work: Path) -> None:
    raw = build_tar([file("a", b"x" * 600)])
    cut = raw[: 512 * 4]  # pax header + its data, header, 2 data blocks; no end blocks
    assert _apply(work / "t", cut).size == len(cut)
    assert (work / "t/a").read_bytes() == b"x" * 600


@pytest.mark.parametrize("cut", [100, 512 * 3 + 100, 512 * 4 + 300, 512 * 5 + 7])
def test_truncated_tar_is_invalid_argument(work: Path, cut: int) -> None:
    raw = build_tar([file("a", b"x" * 600), file("b", b"y" * 700)])
    with pytest.raises(InvalidArgument, match="invalid layer tar"):
        _apply(work / "t", raw[:cut])


def test_corrupt_header_is_invalid_argument(work: Path) -> None:
    raw = bytearray(build_tar([file("a", b"x"), file("b", b"y")], format=tarfile.USTAR_FORMAT))
    second = 1024  # a's header, a's data block, then b's header
    assert raw[second : second + 2] == b"b\0"
    raw[second + 148 : second + 156] = b"0000000\0"  # its checksum
    with pytest.raises(InvalidArgument, match="bad header"):
        _apply(work / "t", bytes(raw))


def test_garbage_is_invalid_argument(work: Path) -> None:
    with pytest.raises(InvalidArgument):
        _apply(work / "t", b"this is not a tar archive at all" * 40)


def test_unsupported_entry_type_is_invalid_argument(work: Path) -> None:
    raw = bytearray(build_tar([file("a", b"")], format=tarfile.USTAR_FORMAT))
    raw[156:157] = b"Z"
    raw[148:156] = b"        "
    raw[148:155] = f"{sum(raw[:512]):06o}\0".encode()
    with pytest.raises(InvalidArgument, match="unsupported type"):
        _apply(work / "t", bytes(raw))


@pytest.mark.parametrize(
    "entry",
    [file("big-uid", b"", pax={"uid": str(2**40)}), file("nul", pax={"path": "a\0b"})],
    ids=["uid", "nul"],
)
def test_out_of_range_fields_are_invalid_argument(work: Path, entry: TarEntry) -> None:
    with pytest.raises(InvalidArgument, match="tar entry"):
        _apply(work / "t", [entry])


def test_a_set_cancel_event_stops_the_apply(work: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    (work / "t").mkdir()
    with pytest.raises(Cancelled):
        apply_layer(io.BytesIO(build_tar([file("a")])), work / "t", whiteout_mode="delete", cancel=cancel)
    assert os.listdir(work / "t") == []


def test_missing_target_is_not_found(work: Path) -> None:
    with pytest.raises(NotFound):
        apply_layer(io.BytesIO(build_tar([file("a")])), work / "absent", whiteout_mode="delete")


def test_bad_whiteout_mode_is_invalid_argument(work: Path) -> None:
    with pytest.raises(InvalidArgument):
        apply_layer(io.BytesIO(b""), work, whiteout_mode="aufs")  # type: ignore[arg-type]


class _GeneratedTar(io.RawIOBase):
    """A tar with one big file whose bytes are produced on the fly, never held in memory."""

    def __init__(self, size: int) -> None:
        ti = tarfile.TarInfo("big")
        ti.size = size
        pad = (-size) % 512
        self._parts: list[tuple[bytes, int]] = [(ti.tobuf(tarfile.PAX_FORMAT), 1), (b"z" * 65536, size // 65536)]
        self._parts.append((b"\0" * (pad + 1024), 1))
        self._current = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self._current and self._parts:
            chunk, count = self._parts[0]
            self._current = chunk
            self._parts[0] = (chunk, count - 1)
            if count - 1 == 0:
                self._parts.pop(0)
        n = min(len(b), len(self._current))
        b[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


def test_apply_streams_without_holding_the_layer_in_memory(work: Path) -> None:
    size = 64 * 1024 * 1024
    (work / "t").mkdir()
    stream = io.BufferedReader(_GeneratedTar(size))  # type: ignore[type-var]
    tracemalloc.start()
    try:
        result = apply_layer(stream, work / "t", whiteout_mode="delete")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (work / "t/big").stat().st_size == size
    assert result.size >= size
    assert peak < 8 * 1024 * 1024, peak


# -- overlay mode against the merged view of the lowers ---------------------------------------


def _merged_equals_delete_mode(work: Path, lowers: list[list[TarEntry]], layer: list[TarEntry]) -> dict[str, Path]:
    """Apply `lowers` (bottom first) as separate lowerdirs and `layer` in overlay mode; check
    that the merged view equals applying everything in delete mode to one directory.
    Returns the dirs; the caller's fixture unmounts."""
    dirs = {n: work / n for n in ("upper", "ovl-work", "merged", "expected")}
    for d in dirs.values():
        d.mkdir()
    lowerdirs: list[Path] = []
    for i, entries in enumerate(lowers):
        lower = work / f"lower{i}"
        # Each lowerdir is an overlay upperdir of its own, over the ones below it.
        _apply(lower, entries, mode="overlay", parents=list(reversed(lowerdirs)))
        lowerdirs.append(lower)
        _apply(dirs["expected"], entries, mode="delete")
    top_first = list(reversed(lowerdirs))
    _apply(dirs["upper"], layer, mode="overlay", parents=top_first)
    _apply(dirs["expected"], layer, mode="delete")
    mount_overlay([str(p) for p in top_first], str(dirs["upper"]), str(dirs["ovl-work"]), str(dirs["merged"]))
    assert tree_state(dirs["merged"]) == tree_state(dirs["expected"])
    return dirs


@pytest.fixture
def unmount_merged(work: Path) -> Iterator[None]:
    try:
        yield
    finally:
        while os.path.ismount(work / "merged"):
            umount(str(work / "merged"))


@pytest.mark.usefixtures("unmount_merged")
def test_overlay_mode_follows_symlinks_of_the_lowers(work: Path) -> None:
    usrmerge = [
        directory("usr/lib", mode=0o755),
        file("usr/lib/existing", b"e"),
        file("usr/lib/keep", b"k"),
        symlink("lib", "usr/lib"),
        symlink("abs", "/usr"),
    ]
    layer = [
        file("lib/new", b"n"),
        whiteout("lib/existing"),
        hardlink("lib/hl", "lib/new"),
        file("abs/lib/via-abs", b"a"),
    ]
    dirs = _merged_equals_delete_mode(work, [usrmerge], layer)
    assert not os.path.lexists(dirs["upper"] / "lib")  # followed, not shadowed
    assert (dirs["merged"] / "lib").is_symlink()
    assert sorted(os.listdir(dirs["merged"] / "usr/lib")) == ["hl", "keep", "new", "via-abs"]


@pytest.mark.usefixtures("unmount_merged")
def test_overlay_mode_an_entry_over_a_lower_symlink_is_used_by_later_entries(work: Path) -> None:
    lower = [directory("usr/lib"), symlink("lib", "usr/lib")]
    layer = [file("lib/a", b"via link"), directory("lib", mode=0o700), file("lib/b", b"in the new dir")]
    dirs = _merged_equals_delete_mode(work, [lower], layer)
    assert (dirs["merged"] / "usr/lib/a").read_bytes() == b"via link"
    assert (dirs["merged"] / "lib/b").read_bytes() == b"in the new dir"


@pytest.mark.usefixtures("unmount_merged")
def test_overlay_mode_implicit_parents_respect_whiteouts_and_opaque_lowers(work: Path) -> None:
    bottom = [
        directory("a/b", mode=0o700, uid=7),
        directory("c", mode=0o711, uid=8),
        directory("d", mode=0o750, uid=9),
        directory("x/y", mode=0o705, uid=10),
    ]
    middle = [directory("a"), opaque("a"), whiteout("c"), directory("d/e", mode=0o701)]
    layer = [file("a/b/f"), file("c/f"), file("d/e/f"), file("x/y/f")]
    dirs = _merged_equals_delete_mode(work, [bottom, middle], layer)
    upper = dirs["upper"]
    ab, c, d, y = ((upper / p).lstat() for p in ("a/b", "c", "d", "x/y"))
    assert (stat.S_IMODE(ab.st_mode), ab.st_uid) == (0o755, 0)  # bottom's a/b is hidden by opaque a
    assert (stat.S_IMODE(c.st_mode), c.st_uid) == (0o755, 0)  # bottom's c is whited out
    assert (stat.S_IMODE(d.st_mode), d.st_uid) == (0o750, 9)  # d shows through from the bottom
    assert stat.S_IMODE((upper / "d/e").lstat().st_mode) == 0o701
    assert (stat.S_IMODE(y.st_mode), y.st_uid) == (0o705, 10)


def test_overlay_mode_missing_parent_dir_is_not_found(work: Path) -> None:
    with pytest.raises(NotFound):
        _apply(work / "t", [file("a")], mode="overlay", parents=[work / "absent"])


# -- shortcuts: skipped chown/chmod, the parent cache, walks from a cached parent ---------------


def _owner_mode(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_a_root_file_in_a_setgid_directory_still_gets_its_own_group(work: Path) -> None:
    # Lower layer: a setgid directory of group 50. A new file there would inherit group 50,
    # so "owned by 0:0 already" must not be assumed.
    _apply(work / "t", [directory("shared", mode=0o2775, gid=50)])
    _apply(work / "t", [file("shared/f", b"x", uid=0, gid=0, mode=0o644), file("shared/g", b"y", gid=50)])
    assert _owner_mode(work / "t/shared/f") == (0, 0, 0o644)
    assert _owner_mode(work / "t/shared/g") == (0, 50, 0o644)


def test_a_directory_made_setgid_later_in_the_layer_passes_its_group_on(work: Path) -> None:
    _apply(
        work / "t",
        [
            file("d/before", b"1", gid=0),  # d is implicit here: 0755, group 0, now cached
            directory("d", mode=0o2770, gid=60),  # merged into the implicit d: now setgid
            file("d/after", b"2", gid=0),
            file("d/inherits", b"3", gid=60),
        ],
    )
    assert _owner_mode(work / "t/d") == (0, 60, 0o2770)
    assert _owner_mode(work / "t/d/before")[1] == 0
    assert _owner_mode(work / "t/d/after")[1] == 0
    assert _owner_mode(work / "t/d/inherits")[1] == 60


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o777, 0o000, 0o4755, 0o2711, 0o1644])
def test_file_modes_are_exact_whatever_the_umask(work: Path, mode: int) -> None:
    old = os.umask(0o027)
    try:
        _apply(work / "t", [file("f", b"x", mode=mode)])
    finally:
        os.umask(old)
    assert _owner_mode(work / "t/f") == (0, 0, mode)


def test_many_directories_round_robin_beyond_the_cache(work: Path) -> None:
    n = _CACHE_SIZE + 20
    dirs = [f"top/d{i}" for i in range(n)]
    entries = [directory(d, mode=0o750) for d in dirs]
    entries += [file(f"{dirs[i % n]}/f{i}", str(i).encode()) for i in range(3 * n)]
    _apply(work / "t", entries)
    for i in range(3 * n):
        assert (work / "t" / dirs[i % n] / f"f{i}").read_bytes() == str(i).encode()
    assert _owner_mode(work / "t/top/d0") == (0, 0, 0o750)


@pytest.mark.parametrize("target", ["../../x", "/x", "../../../../x", "./../.././x"])
def test_symlinks_walked_from_a_cached_parent_stay_inside(work: Path, target: str) -> None:
    # a/b is cached by the first file; a/b/link/f then resolves link from that cached
    # parent, and the link's `..`s climb back through a and b (never above the root).
    _apply(
        work / "t",
        [file("a/b/seed", b"0"), symlink("a/b/link", target), directory("x"), file("a/b/link/f", b"in x")],
    )
    assert (work / "t/x/f").read_bytes() == b"in x"
    assert sorted(os.listdir(work)) == ["t"]


def test_a_symlink_through_a_cached_sibling_resolves_like_a_fresh_walk(work: Path) -> None:
    _apply(
        work / "t",
        [
            file("p/q/r/seed", b"0"),
            symlink("p/q/r/up", ".."),  # -> p/q
            file("p/q/r/up/r/up/f", b"deep"),  # p/q/r is cached; up -> p/q, r/up -> p/q again
            file("p/q/r/up/up/g", b"new"),  # p/q/up is no link: a new directory
        ],
    )
    assert (work / "t/p/q/f").read_bytes() == b"deep"
    assert (work / "t/p/q/up/g").read_bytes() == b"new"


def test_file_modes_are_exact_under_a_default_acl(work: Path) -> None:
    # A default ACL replaces the umask for files created in the directory (here: other
    # gets nothing), so "created with its mode" must be checked, not assumed.
    (work / "t/acl").mkdir(parents=True)
    undefined = 0xFFFFFFFF
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, undefined) for tag, perm in ((0x01, 7), (0x04, 5), (0x20, 0))
    )
    try:
        os.setxattr(work / "t/acl", "system.posix_acl_default", acl)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs here: {e.strerror}")
    _apply(work / "t", [file("acl/f", b"x", mode=0o644)])
    assert _owner_mode(work / "t/acl/f") == (0, 0, 0o644)
