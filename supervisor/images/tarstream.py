"""Tar archives as async streams: read entries from chunks as they arrive, write them as chunks.

Reading never holds more than one entry's current chunk: `TarReader.next()` parses headers
(ustar, GNU long names, PAX records) and `TarReader.read(n)` hands out the entry's data piece
by piece. Names are checked as they are read (`clean_name`): absolute paths, `..` and NUL are
InvalidArgument naming the entry. A stream that ends inside an entry, or without the tar
end-of-archive marker, is InvalidArgument ("truncated"); a header whose checksum is wrong is
InvalidArgument ("corrupt").

    reader = TarReader(ByteSource(chunks))          # chunks: AsyncIterator[bytes]
    while (entry := await reader.next()) is not None:
        while data := await reader.read(1 << 20):
            ...

Writing (`header`, `padding`, `END`) produces the blocks of a deterministic ustar/PAX
archive: owner root, mtime 0, the given mode.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument

BLOCK = 512
END = b"\0" * (2 * BLOCK)
MAX_HEADER_DATA = 1 << 20  # PAX records and GNU long names: plenty for any real name

REGULAR_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})
_PAX_TYPES = frozenset({tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE})
_COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
               (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ\x00", "xz", "unxz"))


class ByteSource:
    """Sequential reads over an async iterator of byte chunks."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self._eof = False
        self.consumed = 0

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes (never across a chunk boundary: no copying); b"" only at the end."""
        while self._pos >= len(self._chunk):
            if self._eof:
                return b""
            try:
                nxt = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                return b""
            self._chunk, self._pos = bytes(nxt), 0
        end = min(len(self._chunk), self._pos + n)
        out = self._chunk if self._pos == 0 and end == len(self._chunk) else self._chunk[self._pos:end]
        self._pos = end
        self.consumed += len(out)
        return out

    async def read_exactly(self, n: int) -> bytes:
        """`n` bytes, or fewer only if the stream ends first."""
        first = await self.read(n)
        if len(first) == n or not first:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            more = await self.read(n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    async def drain(self) -> None:
        while await self.read(1 << 20):
            pass


@dataclass
class Entry:
    name: str  # cleaned: relative, no ".", "..", or empty components
    raw_name: str
    type: bytes
    size: int
    linkname: str
    mode: int

    @property
    def is_regular(self) -> bool:
        return self.type in REGULAR_TYPES

    @property
    def is_dir(self) -> bool:
        return self.type == tarfile.DIRTYPE

    @property
    def is_symlink(self) -> bool:
        return self.type == tarfile.SYMTYPE

    @property
    def is_hardlink(self) -> bool:
        return self.type == tarfile.LNKTYPE


def clean_name(name: str, what: str = "archive entry") -> str:
    """A member name as a relative path inside the archive; InvalidArgument if it leaves it."""
    if "\0" in name:
        raise InvalidArgument(f"{what} {name!r}: name contains NUL")
    if name.startswith("/"):
        raise InvalidArgument(f"{what} {name!r}: absolute paths are not allowed in an image archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"{what} {name!r}: '..' is not allowed in an image archive path")
    return "/".join(parts)


def link_target(name: str, linkname: str) -> str:
    """Where a symlink entry `name` -> `linkname` points, as an archive path; InvalidArgument if
    it is absolute or climbs out of the archive."""
    if linkname.startswith("/"):
        raise InvalidArgument(f"archive entry {name!r}: symlink to absolute path {linkname!r}")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
    if joined == ".." or joined.startswith("../") or joined in ("", "."):
        raise InvalidArgument(f"archive entry {name!r}: symlink target {linkname!r} is outside the archive")
    return joined


def _parse_pax(data: bytes) -> dict[str, str]:
    """PAX extended header records: `<len> <key>=<value>\\n`."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding some writers leave
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[pos:pos + length]
        if length <= 0 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise InvalidArgument("archive: corrupt PAX extended header")
        key, _, value = record[space - pos + 1:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarReader:
    """Entries of a tar stream, one at a time (see the module docstring)."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self._remaining = 0
        self._padding = 0
        self._current = ""
        self._done = False

    async def _block(self) -> bytes:
        first = self.source.consumed == 0
        block = await self.source.read_exactly(BLOCK)
        if first:
            for magic, kind, tool in _COMPRESSED:
                if block.startswith(magic):
                    raise InvalidArgument(f"archive is {kind}-compressed, not a tar: decompress it first "
                                          f"(e.g. with {tool})")
        if not block:
            raise InvalidArgument(f"archive is truncated: it ends after {self.source.consumed} bytes "
                                  "without the tar end-of-archive marker")
        if len(block) != BLOCK:
            raise InvalidArgument(f"archive is truncated: it ends inside a tar header at byte {self.source.consumed}")
        return block

    async def _skip(self, n: int) -> None:
        while n > 0:
            got = await self.source.read(min(n, 1 << 20))
            if not got:
                raise InvalidArgument(f"archive is truncated: entry {self._current!r} is cut short")
            n -= len(got)

    async def _small(self, size: int, what: str) -> bytes:
        if size > MAX_HEADER_DATA:
            raise InvalidArgument(f"archive: {what} of {size} bytes is larger than the limit of {MAX_HEADER_DATA}")
        data = await self.source.read_exactly(size)
        if len(data) != size:
            raise InvalidArgument(f"archive is truncated: {what} is cut short")
        await self._skip(-size % BLOCK)
        return data

    async def next(self) -> Entry | None:
        """The next entry (its data unread), or None at the end-of-archive marker."""
        if self._done:
            return None
        await self._skip(self._remaining + self._padding)
        self._remaining = self._padding = 0
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            offset = self.source.consumed
            block = await self._block()
            if block.count(0) == BLOCK:
                self._done = True
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise InvalidArgument(f"archive: corrupt tar header at byte {offset}: {exc}") from None
            if info.type in _PAX_TYPES:
                pax.update(_parse_pax(await self._small(info.size, "PAX header")))
                continue
            if info.type == tarfile.XGLTYPE:
                await self._small(info.size, "PAX global header")  # defaults we do not need
                continue
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = (await self._small(info.size, "GNU long name")).split(b"\0", 1)[0]
                continue
            if info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = (await self._small(info.size, "GNU long link")).split(b"\0", 1)[0]
                continue
            break
        if info.type == tarfile.GNUTYPE_SPARSE or "GNU.sparse.map" in pax or "GNU.sparse.size" in pax:
            raise InvalidArgument(f"archive entry {info.name!r}: sparse files are not supported in image archives")
        name = pax.get("path") or (long_name.decode("utf-8", "surrogateescape") if long_name else info.name)
        linkname = pax.get("linkpath") or (long_link.decode("utf-8", "surrogateescape") if long_link
                                           else info.linkname)
        size = info.size
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise InvalidArgument(f"archive entry {name!r}: bad PAX size {pax['size']!r}") from None
        if size < 0:
            raise InvalidArgument(f"archive entry {name!r}: negative size")
        entry = Entry(clean_name(name), name, info.type, size, linkname, info.mode)
        self._current = name
        self._remaining = size
        self._padding = -size % BLOCK
        return entry

    async def read(self, n: int = 1 << 20) -> bytes:
        """Up to `n` bytes of the current entry's data; b"" once it is all read."""
        if self._remaining <= 0:
            return b""
        data = await self.source.read(min(n, self._remaining))
        if not data:
            raise InvalidArgument(f"archive is truncated: entry {self._current!r} ends after "
                                  f"{self.source.consumed} bytes of the stream, {self._remaining} bytes short")
        self._remaining -= len(data)
        return data

    async def read_all(self, limit: int) -> bytes:
        if self._remaining > limit:
            raise InvalidArgument(f"archive entry {self._current!r}: {self._remaining} bytes is larger than the "
                                  f"limit of {limit}")
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)


# -- writing -------------------------------------------------------------------------------------


def header(name: str, size: int, *, mode: int = 0o644, directory: bool = False) -> bytes:
    """The header block(s) of one entry, deterministic (owner 0:0, mtime 0)."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mode = mode
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)
