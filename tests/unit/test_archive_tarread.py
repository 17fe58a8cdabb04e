"""The lean tar reader against archives written by Python's tarfile (and hand-made corner cases)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest

from supervisor.archive.tarread import DIRECTORY, HARDLINK, REGULAR, SYMLINK, Entry, TarFormatError, TarReader
from tests.unit.archive_fixtures import build_tar, directory, file, hardlink, symlink


def _reader(raw: bytes, piece: int = 0) -> TarReader:
    """A reader over `raw`; `piece` > 0 hands the bytes out that many at a time."""
    src = io.BytesIO(raw)
    read: Callable[[int], bytes] = src.read if not piece else (lambda n: src.read(min(n, piece)))
    return TarReader(read)


def _all(raw: bytes, piece: int = 0) -> list[tuple[Entry, bytes]]:
    reader = _reader(raw, piece)
    out = []
    while (entry := reader.next()) is not None:
        out.append((entry, b"".join(bytes(p) for p in reader.data())))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("piece", [0, 1, 7, 511, 513])
def test_entries_and_data_in_every_format_and_read_size(fmt: int, piece: int) -> None:
    deep = "/".join(["dir"] * 30) + "/file"  # > 100 bytes: ustar prefix, GNU L, pax path
    entries = [
        directory("d/", mode=0o750, uid=3, gid=4, mtime=1234),
        file("d/a", b"x" * 1000, mode=0o640),
        file(deep, b"deep"),
        file("empty", b""),
        symlink("d/l", "a"),
        hardlink("d/h", "d/a"),
    ]
    got = _all(build_tar(entries, format=fmt), piece)
    assert [(e.name, e.type, data) for e, data in got] == [
        ("d", DIRECTORY, b""),
        ("d/a", REGULAR, b"x" * 1000),
        (deep, REGULAR, b"deep"),
        ("empty", REGULAR, b""),
        ("d/l", SYMLINK, b""),
        ("d/h", HARDLINK, b""),
    ]
    d = got[0][0]
    assert (d.mode, d.uid, d.gid, d.mtime_ns) == (0o750, 3, 4, 1234 * 10**9)
    assert got[4][0].linkname == "a" and got[5][0].linkname == "d/a"


def test_long_link_names_gnu_and_pax() -> None:
    target = "t" * 150
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        [(entry, _)] = _all(build_tar([symlink("l", target)], format=fmt))
        assert entry.linkname == target


def test_pax_records_xattrs_times_and_big_ids() -> None:
    raw = build_tar([file("f", b"x", uid=2**30, xattrs={"user.bin": b"\xff\x00\x01"},
                          pax={"mtime": "1600000000.5", "atime": "1700000000.25"})])
    [(entry, _)] = _all(raw)
    assert entry.xattrs == {"user.bin": b"\xff\x00\x01"}
    assert (entry.mtime_ns, entry.atime_ns, entry.uid) == (1600000000_500000000, 1700000000_250000000, 2**30)


def test_base256_numbers_of_gnu_headers() -> None:
    ti = tarfile.TarInfo("f")
    ti.uid = 2**40  # too big for octal: GNU writes base-256
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(ti)
    [(entry, _)] = _all(out.getvalue())
    assert entry.uid == 2**40


def test_global_pax_records_apply_to_later_entries() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "77"}) as tf:
        for name in ("a", "b"):
            tf.addfile(tarfile.TarInfo(name))
    assert [e.uid for e, _ in _all(out.getvalue())] == [77, 77]


def test_old_style_directory_by_trailing_slash() -> None:
    raw = bytearray(build_tar([file("old/", b"")], format=tarfile.USTAR_FORMAT))
    raw[156:157] = b"\0"  # AREGTYPE
    _fix_checksum(raw)
    [(entry, _)] = _all(bytes(raw))
    assert (entry.name, entry.type) == ("old", DIRECTORY)


def test_signed_checksums_are_accepted() -> None:
    raw = bytearray(build_tar([file("\xe9t\xe9", b"x")], format=tarfile.USTAR_FORMAT))
    signed = sum(b - 256 if b > 127 else b for b in raw[:148] + b" " * 8 + raw[156:512])
    raw[148:156] = f"{signed:06o}\0 ".encode()
    [(entry, data)] = _all(bytes(raw))
    assert (entry.name, data) == ("\xe9t\xe9", b"x")


def test_unread_data_is_skipped() -> None:
    reader = _reader(build_tar([file("a", b"1" * 5000), file("b", b"2")]), piece=100)
    assert reader.next() is not None
    b = reader.next()
    assert b is not None and b.name == "b"
    assert b"".join(bytes(p) for p in reader.data()) == b"2"
    assert reader.next() is None


@pytest.mark.parametrize("cut", [1, 511, 512 * 3 + 100, 512 * 4 + 300])
def test_truncation_is_an_error(cut: int) -> None:
    raw = build_tar([file("a", b"x" * 600), file("b", b"y" * 700)])
    with pytest.raises(TarFormatError, match="unexpected end"):
        _all(raw[:cut])


def test_a_clean_end_without_end_blocks() -> None:
    raw = build_tar([file("a", b"x" * 600)])
    assert [e.name for e, _ in _all(raw[: 512 * 4])] == ["a"]


def test_bad_checksum_and_bad_numbers_are_errors() -> None:
    raw = bytearray(build_tar([file("a", b"x")], format=tarfile.USTAR_FORMAT))
    raw[148:156] = b"0000000\0"
    with pytest.raises(TarFormatError, match="checksum"):
        _all(bytes(raw))
    raw = bytearray(build_tar([file("a", b"x")], format=tarfile.USTAR_FORMAT))
    raw[100:108] = b"09zz\0\0\0\0"  # the mode
    _fix_checksum(raw)
    with pytest.raises(TarFormatError, match="invalid number"):
        _all(bytes(raw))


@pytest.mark.parametrize("record", [b"5 a=b\n", b"x path=y\n", b"9 pathy\n\n\n"])
def test_malformed_pax_records_are_errors(record: bytes) -> None:
    with pytest.raises(TarFormatError, match="pax record"):
        _all(_with_pax_data(record))


def test_oversized_extended_headers_are_errors() -> None:
    with pytest.raises(TarFormatError, match="extended header of"):
        _all(_with_pax_data(b"", size=(1 << 20) + 1))


def _with_pax_data(data: bytes, size: int | None = None) -> bytes:
    header = bytearray(build_tar([file("x", b"")], format=tarfile.USTAR_FORMAT)[:512])
    header[156:157] = b"x"
    header[124:136] = f"{size if size is not None else len(data):011o}\0".encode()
    _fix_checksum(header)
    padded = data + bytes(-len(data) % 512)
    return bytes(header) + padded + build_tar([file("y", b"")], format=tarfile.USTAR_FORMAT)


def _fix_checksum(raw: bytearray) -> None:
    raw[148:156] = b" " * 8
    raw[148:156] = f"{sum(raw[:512]):06o}\0 ".encode()
