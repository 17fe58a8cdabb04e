"""write_diff: the exact bytes containerd writes for the same trees, and apply(diff(lower, upper)) == upper."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from dockyard_common.errors import InvalidArgument, NotFound
from supervisor.archive import diff as diff_module
from supervisor.archive.apply import apply_layer
from supervisor.archive.diff import write_diff
from supervisor.archive.tarwrite import TYPE_REG, TarHeader, TarWriter, _pax_record
from tests.diff_cases import BASE_TIME, CAPABILITY, CASES, CHANGE_TIME, DiffCase, settle
from tests.unit.archive_fixtures import mount_overlay, tree_state, umount

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, security xattrs, overlay mounts)"),
]

# (length, whiteout mtime, sha256) of what containerd 1.6.20's archive.WriteDiff (Go 1.19's
# archive/tar) wrote for each case of tests/diff_cases.py; its whiteouts carry the time the
# diff ran, recorded here so ours can be asked for the same one. To regenerate: a Go main that
# calls archive.WriteDiff(ctx, os.Stdout, lower, upper), built with GO111MODULE=off
# GOPATH=/usr/share/gocode (Debian's golang-go and golang-github-containerd-containerd-dev), run
# on the trees `_trees` makes; the whiteout mtime is read back from its output.
GOLDEN: dict[str, tuple[int, int | None, str]] = {
    "empty": (1024, None, "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"),
    "adds": (6144, None, "28a358ec637a210a33b080864730dd25244e5422bd0334f3a5b6a52abe248c4c"),
    "edits": (7680, None, "cbdd34e37db87de340c60bb026eae292de85c84703b33c499fd3fd426dcd90b4"),
    "deletions": (4096, 1796489949, "6609cef63905c5d0d954d56a28d58cabf4662b5710827eac007b468308d86e4c"),
    "opaque": (4608, 1796489950, "86c1aecd24bc19610ac511930341b649fe53cab42283a6b7b7413ca9d81a455a"),
    "hardlinks": (8192, 1796489950, "64ad21ff3799cc1c2b179c518f1d65a19584e85c17a2b9e895b12ef60d75cdcb"),
    "symlinks": (5120, None, "71726884724a650ab292f9f7ad0ec1d023e317f15dd4430b5727a8cb35946415"),
    "xattrs": (6656, None, "dea3e20c0798bf11391ae5fc7074d9531d039be08955866ed02a739ebbe9e418"),
    "devices": (4608, 1796489950, "74c1ae677aa30420d842f85fa586da2c58f591e156739ca2a0f5b76626e61e32"),
    "long-names": (26112, 1796489950, "498717c7f7262f60c30f270eb06f5498844d80cd29f23033d3d827672f9b0049"),
    "sparse-empty": (4196864, None, "7efea2c207975cccaf8318a6d28167fd66d6816c21869976b8df2880fbf0c1da"),
    "types": (3584, None, "12b749f66cdb5e84488baa9a58c6d0b69d0298179fe888dea0b1b33a67b1795d"),
    "special": (8704, None, "f2a3aff25fd5662521b2c1a6e51206d4d3705c3c1b696efc80cd273d31044b27"),
    "large": (4938240, None, "c2add1812b2481c721467fb4fdb0f00505203450084ccfe6ab01951a43e7b97e"),
}


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dockyard-diff-"))
    try:
        yield d
    finally:
        while os.path.ismount(d / "merged"):
            umount(str(d / "merged"))
        shutil.rmtree(d)


def _trees(work: Path, case: DiffCase) -> tuple[Path, Path]:
    """The case's base in `lower`, and a copy of it with the change in `upper`."""
    lower, upper = work / "lower", work / "upper"
    lower.mkdir()
    case.base(lower)
    settle(lower, BASE_TIME)
    _copy(lower, upper)
    case.change(upper)
    settle(upper, CHANGE_TIME)
    return lower, upper


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)


def _diff(lower: Path, upper: Path, whiteout_mtime: int | None = 0) -> bytes:
    out = io.BytesIO()
    write_diff(lower, upper, out, whiteout_mtime=whiteout_mtime)
    return out.getvalue()


def _members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        return tf.getmembers()


@pytest.mark.parametrize("name", list(CASES))
def test_bytes_equal_containerds(work: Path, name: str) -> None:
    size, whiteout_mtime, digest = GOLDEN[name]
    raw = _diff(*_trees(work, CASES[name]), whiteout_mtime=whiteout_mtime or 0)
    assert (len(raw), hashlib.sha256(raw).hexdigest()) == (size, digest)


def test_empty_change_is_two_zero_blocks(work: Path) -> None:
    assert _diff(*_trees(work, CASES["empty"])) == bytes(1024)


def _state(root: Path) -> dict[str, tuple[object, ...]]:
    """tree_state without xattrs other than security.capability (containerd carries no others)."""
    out = {}
    for rel, info in tree_state(root).items():
        xattrs = cast(tuple[tuple[str, bytes], ...], info[6])
        out[rel] = (*info[:6], tuple(x for x in xattrs if x[0] == "security.capability"), *info[7:])
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_applying_the_diff_gives_the_upper_tree(work: Path, name: str) -> None:
    lower, upper = _trees(work, CASES[name])
    result = work / "result"
    _copy(lower, result)
    apply_layer(io.BytesIO(_diff(lower, upper)), result, whiteout_mode="delete")  # type: ignore[arg-type]
    assert _state(result) == _state(upper)


def test_whiteout_header(work: Path) -> None:
    raw = _diff(*_trees(work, CASES["deletions"]), whiteout_mtime=CHANGE_TIME)
    blocks = {raw[i : i + 100].rstrip(b"\0"): raw[i : i + 512] for i in range(0, len(raw), 512)}
    wh = blocks[b"etc/.wh.gone"]
    assert wh[100:108] == b"0000000\0"  # mode 0
    assert wh[108:124] == b"0000000\0" * 2  # uid, gid 0
    assert wh[124:136] == b"00000000000\0"  # empty
    assert wh[136:148] == b"%011o\0" % CHANGE_TIME
    assert wh[156:157] == TYPE_REG and wh[157:257] == bytes(100)  # regular file, no link
    assert wh[257:265] == b"ustar\x0000" and wh[265:329] == bytes(64)  # USTAR, no user or group names
    assert wh[329:345] == b"0000000\0" * 2 and wh[345:] == bytes(167)  # device 0/0, no prefix
    assert int(wh[148:154], 8) == sum(wh[:148]) + 8 * 0x20 + sum(wh[156:]) and wh[154:156] == b"\0 "
    # the parent comes first: a directory entry with a trailing slash
    assert raw.index(b"etc/\0") < raw.index(b"etc/.wh.gone")


def test_default_whiteout_time_is_now_rounded(work: Path) -> None:
    lower, upper = _trees(work, CASES["deletions"])
    before = round(time.time())
    raw = _diff(lower, upper, whiteout_mtime=None)
    after = round(time.time())
    whiteouts = [m for m in _members(raw) if m.name.rpartition("/")[2].startswith(".wh.")]
    assert whiteouts and {m.mtime for m in whiteouts} <= set(range(before, after + 1))
    assert len({m.mtime for m in whiteouts}) == 1


def test_what_containerd_carries_of_xattrs(work: Path) -> None:
    by_name = {m.name: m for m in _members(_diff(*_trees(work, CASES["xattrs"])))}
    assert "f1" not in by_name  # a user xattr change alone is no change
    for name in ("f2", "f3"):
        assert by_name[name].pax_headers == {
            "SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape")}
    assert by_name["f4"].pax_headers == {} and by_name["dcap"].pax_headers == {}


def test_opaque_directory_through_overlayfs(work: Path) -> None:
    """An overlayfs upper: the diff of the merged view has per-name whiteouts, no opaque marker,
    and is the same layer as from two plain trees."""
    lower, upper, ovl_work, merged = (work / n for n in ("lower", "upper", "ovl-work", "merged"))
    for d in (lower, upper, ovl_work, merged):
        d.mkdir()
    case = CASES["opaque"]
    case.base(lower)
    settle(lower, BASE_TIME)
    mount_overlay([str(lower)], str(upper), str(ovl_work), str(merged))
    case.change(merged)
    settle(merged, CHANGE_TIME)
    assert os.getxattr(upper / "d", "trusted.overlay.opaque") == b"y"
    size, whiteout_mtime, digest = GOLDEN["opaque"]
    raw = _diff(lower, merged, whiteout_mtime=whiteout_mtime)
    names = [m.name for m in _members(raw)]
    assert names == ["d", "d/a", "d/.wh.b", "d/c", "d/.wh.sub"]
    assert (len(raw), hashlib.sha256(raw).hexdigest()) == (size, digest)


def test_missing_trees_are_not_found(work: Path) -> None:
    with pytest.raises(NotFound):
        write_diff(work / "nope", work, io.BytesIO())
    with pytest.raises(NotFound):
        write_diff(work, work / "nope", io.BytesIO())


# -- the tar writer ---------------------------------------------------------------------------


def test_a_file_changing_size_while_read_is_invalid_argument() -> None:
    for data in (b"short", b"longer than said"):
        with pytest.raises(InvalidArgument, match="while it was read"):
            TarWriter(io.BytesIO()).add(TarHeader(b"f", TYPE_REG, size=10), io.BytesIO(data))


def test_pax_record_length_counts_its_own_digits() -> None:
    for n in range(85, 100):  # around the 2 -> 3 digit step
        record = _pax_record(b"path", b"a" * n)
        length, _, rest = record.partition(b" ")
        assert int(length) == len(record) and rest == b"path=" + b"a" * n + b"\n"


def _overlay_change(work: Path, case: DiffCase) -> tuple[Path, Path, Path]:
    """The case's base in `lower`, its change made through an overlay on it: (lower, upperdir, merged)."""
    lower, upper, ovl_work, merged = (work / n for n in ("lower", "upper", "ovl-work", "merged"))
    for d in (lower, upper, ovl_work, merged):
        d.mkdir()
    case.base(lower)
    settle(lower, BASE_TIME)
    mount_overlay([str(lower)], str(upper), str(ovl_work), str(merged))
    case.change(merged)
    settle(merged, CHANGE_TIME)
    return lower, upper, merged


def _entries(raw: bytes) -> dict[str, tuple[object, ...]]:
    return {m.name: (m.type, m.mode, m.uid, m.gid, m.size, m.linkname) for m in _members(raw)}


@pytest.mark.parametrize("name", list(CASES))
def test_walking_the_upperdir_only_gives_the_same_change(work: Path, name: str) -> None:
    """Builds walk only what the step's upperdir holds (write_diff's `changed`): applied, the
    layer makes the same tree as the full walk's; it holds every entry the full walk writes,
    plus at most directories the step copied up without changing them."""
    lower, upperdir, merged = _overlay_change(work, CASES[name])
    full = io.BytesIO()
    write_diff(lower, merged, full, whiteout_mtime=CHANGE_TIME)
    pruned = io.BytesIO()
    write_diff(lower, merged, pruned, whiteout_mtime=CHANGE_TIME, changed=upperdir)
    ours, theirs = _entries(pruned.getvalue()), _entries(full.getvalue())
    assert {n: e for n, e in ours.items() if n in theirs} == theirs
    assert all(ours[n][0] == tarfile.DIRTYPE for n in set(ours) - set(theirs)), set(ours) - set(theirs)
    results = []
    for i, raw in enumerate((full.getvalue(), pruned.getvalue())):
        result = work / f"result-{i}"
        _copy(lower, result)
        apply_layer(io.BytesIO(raw), result, whiteout_mode="delete")  # type: ignore[arg-type]
        results.append(_state(result))
    assert results[1] == results[0] == _state(merged)


def test_walking_the_upperdir_skips_untouched_trees(work: Path) -> None:
    """A step that adds one file next to a big untouched tree reads nothing of that tree."""
    lower, upper, ovl_work, merged = (work / n for n in ("lower", "upper", "ovl-work", "merged"))
    for d in (lower, upper, ovl_work, merged):
        d.mkdir()
    (lower / "big").mkdir()
    for i in range(50):
        (lower / "big" / f"f{i}").write_text("x")
    mount_overlay([str(lower)], str(upper), str(ovl_work), str(merged))
    (merged / "new").write_text("n")
    seen: list[bytes] = []
    real_names = diff_module._names  # the walk lists a directory through its descriptor

    def names(fd: int) -> list[bytes]:
        seen.append(os.fsencode(os.readlink(f"/proc/self/fd/{fd}")))
        return real_names(fd)

    out = io.BytesIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(diff_module, "_names", names)
        write_diff(lower, merged, out, changed=upper)
    assert seen, "the walk listed nothing: the hook no longer sees its listings"
    assert [m.name for m in _members(out.getvalue())] == ["new"]
    assert not any(p.endswith(b"/big") for p in seen), seen
