"""The async tar reader/writer behind image import and export (supervisor/images/tarstream.py)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.images.tarstream import END, ByteSource, TarReader, clean_name, header, link_target, padding
from tests.unit.archive_fixtures import build_tar, directory, file, hardlink, symlink


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(data: bytes, chunk: int = 7) -> list[tuple[str, bytes, bytes, str]]:
    reader = TarReader(ByteSource(chunks_of(data, chunk)))
    out = []
    while (entry := await reader.next()) is not None:
        body = b""
        while piece := await reader.read(5):
            body += piece
        out.append((entry.name, entry.type, body, entry.linkname))
    return out


@pytest.mark.parametrize("chunk", [3, 7, 512, 1 << 20])
async def test_reads_entries_across_any_chunking(chunk: int) -> None:
    data = build_tar([directory("blobs"), file("blobs/a", b"hello"), symlink("l", "blobs/a"),
                      hardlink("h", "blobs/a"), file("./y", b"")])
    got = await read_all(data, chunk)
    assert got == [("blobs", tarfile.DIRTYPE, b"", ""), ("blobs/a", tarfile.REGTYPE, b"hello", ""),
                   ("l", tarfile.SYMTYPE, b"", "blobs/a"), ("h", tarfile.LNKTYPE, b"", "blobs/a"),
                   ("y", tarfile.REGTYPE, b"", "")]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
async def test_long_names_in_every_format(fmt: int) -> None:
    name = "blobs/sha256/" + "a" * 64 if fmt == tarfile.USTAR_FORMAT else "d/" + "n" * 200
    data = build_tar([file(name, b"x" * 1000)], format=fmt)
    assert await read_all(data) == [(name, tarfile.REGTYPE, b"x" * 1000, "")]


async def test_unread_data_is_skipped() -> None:
    data = build_tar([file("a", b"1" * 3000), file("b", b"2")])
    reader = TarReader(ByteSource(chunks_of(data, 100)))
    assert (await reader.next()).name == "a"  # type: ignore[union-attr]
    entry = await reader.next()
    assert entry is not None and entry.name == "b"
    assert await reader.read() == b"2"
    assert await reader.next() is None


@pytest.mark.parametrize("cut", [100, 512, 700, 1536])
async def test_truncation_is_an_error(cut: int) -> None:
    data = build_tar([file("a", b"z" * 1000)])
    with pytest.raises(InvalidArgument, match="truncated"):
        await read_all(data[:cut])


async def test_corrupt_header_is_an_error() -> None:
    data = bytearray(build_tar([file("a", b"z")]))
    data[148:156] = b"0000000\0"  # the checksum field
    with pytest.raises(InvalidArgument, match="corrupt tar header"):
        await read_all(bytes(data))


async def test_empty_stream_is_truncated() -> None:
    with pytest.raises(InvalidArgument, match="end-of-archive"):
        await read_all(b"")


@pytest.mark.parametrize(("name", "words"), [
    ("/etc/passwd", "absolute"),
    ("../escape", r"'\.\.'"),
    ("blobs/../../x", r"'\.\.'"),
])
async def test_hostile_names(name: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        await read_all(build_tar([file(name, b"x")]))


def test_clean_name_and_link_target() -> None:
    assert clean_name("./blobs//sha256/./x") == "blobs/sha256/x"
    assert link_target("a/layer.tar", "../b/layer.tar") == "b/layer.tar"
    with pytest.raises(InvalidArgument, match="outside the archive"):
        link_target("a/layer.tar", "../../etc/passwd")
    with pytest.raises(InvalidArgument, match="absolute"):
        link_target("a", "/etc/passwd")


async def test_written_archive_reads_back_with_tarfile() -> None:
    out = io.BytesIO()
    for name, data in [("oci-layout", b"{}"), ("blobs/sha256/" + "f" * 64, b"x" * 513)]:
        out.write(header(name, len(data)) + data + padding(len(data)))
    out.write(header("blobs/", 0, mode=0o755, directory=True))
    out.write(END)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["oci-layout", "blobs/sha256/" + "f" * 64, "blobs"]
        assert members[1].mode == 0o644 and members[1].mtime == 0 and members[2].isdir()
        assert tf.extractfile(members[1]).read() == b"x" * 513  # type: ignore[union-attr]


async def test_compressed_archive_is_named() -> None:
    import gzip

    with pytest.raises(InvalidArgument, match="gzip-compressed, not a tar"):
        await read_all(gzip.compress(build_tar([file("a", b"x")])))
