"""A lean streaming reader of layer tars: 512-byte headers parsed by hand, data as buffer views.

Why not `tarfile`: applying a layer of many small files spent as much time in tarfile's
per-member machinery (TarInfo objects, 10 KiB stream reads, file objects per member) as in
the kernel. This reader pulls the stream in 1 MiB reads and hands file data out as views of
those reads, so a file's bytes go from the decompressor to `os.write` without more copies.

Formats: ustar (with its name prefix), POSIX pax (`x` per entry; `g` global records apply
to every later entry, as tarfile does), GNU long names and link names (`L`, `K`), old V7
headers, octal and base-256 numbers, signed or unsigned header checksums. Sparse files are
reported as type `S` (the applier refuses them).

Strictness, as Go's archive/tar: the archive ends at a zero block or at a clean end of the
stream on a header boundary; a short header, short data or a bad header mid-archive raises
`TarFormatError` (the applier turns it into InvalidArgument).

    reader = TarReader(stream.read)
    while (entry := reader.next()) is not None:
        for piece in reader.data():     # memoryviews, valid until the next call on reader
            ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from supervisor.archive.tarformat import (
    BLOCK,
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    PAX,
    PAX_GLOBAL,
    REGULAR,
    SYMLINK,
    XATTR_PREFIX,
)

CHUNK = 1 << 20
# Extended headers (pax records, GNU long names) are read into memory: cap them (Go's
# archive/tar allows 1 MiB as well).
MAX_EXTENDED = 1 << 20

_ZERO_BLOCK = bytes(BLOCK)
_USTAR_MAGIC = b"ustar\x00"
_NS = 1_000_000_000
_MAX_PAX_SECONDS = 1 << 63

_REGULAR_ALIASES = {"\0": REGULAR, "7": REGULAR}  # old "regular", contiguous file
_PAX = PAX
_PAX_GLOBAL = PAX_GLOBAL
_GNU_LONGNAME = "L"
_GNU_LONGLINK = "K"
_SPECIAL = {_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK}


class TarFormatError(Exception):
    """The bytes are not a well-formed tar (or end too early)."""


@dataclass(slots=True)
class Entry:
    """One member: what the applier needs, with pax and GNU extensions already merged."""

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int | None
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]


class TarReader:
    """Entries of the tar that `read(n)` yields; see the module docstring."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current entry not handed out yet
        self._pad = 0  # padding after them
        self._offset = 0  # stream offset of the next unread byte, for messages
        self._global: dict[str, bytes] = {}

    # -- entries -----------------------------------------------------------------------

    def next(self) -> Entry | None:
        """The next entry, or None at the end of the archive (the rest is left unread)."""
        self._skip_data()
        pax: dict[str, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            at = self._offset
            block = self._take(BLOCK)
            if len(block) < BLOCK:
                if not block and not pax and long_name is None and long_link is None:
                    return None  # a clean end on a header boundary
                raise TarFormatError("unexpected end of data in a header")
            if block == _ZERO_BLOCK:
                if pax or long_name is not None or long_link is not None:
                    raise TarFormatError(f"bad header at offset {at}: extended header without an entry")
                return None
            _check_sum(block, at)
            typeflag = chr(block[156])
            size = _number(block[124:136], at)
            if size < 0:
                raise TarFormatError(f"bad header at offset {at}: negative size")
            if typeflag in _SPECIAL:
                data = self._extended(size, at)
                if typeflag == _PAX:
                    pax.update(_pax_records(data, at))
                elif typeflag == _PAX_GLOBAL:
                    self._global.update(_pax_records(data, at))
                elif typeflag == _GNU_LONGNAME:
                    long_name = data.split(b"\0", 1)[0]
                else:
                    long_link = data.split(b"\0", 1)[0]
                continue
            if self._global:
                pax = {**self._global, **pax}
            if pax:
                pax = {k: v for k, v in pax.items() if v}  # an empty value deletes a record
            return self._entry(block, typeflag, size, at, pax, long_name, long_link)

    def data(self) -> Iterator[memoryview]:
        """The current entry's data, in pieces; each is valid until the reader moves on."""
        while self._left:
            avail = len(self._buf) - self._pos
            if not avail:
                self._buf = self._read(CHUNK)
                self._pos = 0
                avail = len(self._buf)
                if not avail:
                    raise TarFormatError("unexpected end of data in a file")
            take = avail if avail < self._left else self._left
            start = self._pos
            self._pos += take
            self._left -= take
            self._offset += take
            yield memoryview(self._buf)[start : start + take]

    def _entry(self, block: bytes, typeflag: str, size: int, at: int, pax: dict[str, bytes],
               long_name: bytes | None, long_link: bytes | None) -> Entry:
        if long_name is not None:
            raw_name = long_name
        else:
            raw_name = _field(block, 0, 100)
            if block[257:263] == _USTAR_MAGIC and block[345]:
                raw_name = _field(block, 345, 155) + b"/" + raw_name
        raw_link = long_link if long_link is not None else _field(block, 157, 100)
        if typeflag == "\0" and raw_name.endswith(b"/"):
            typeflag = DIRECTORY  # pre-POSIX tars mark directories by the trailing slash only
        typeflag = _REGULAR_ALIASES.get(typeflag, typeflag)
        mode = _number(block[100:108], at)
        uid = _number(block[108:116], at)
        gid = _number(block[116:124], at)
        mtime_ns = _number(block[136:148], at) * _NS
        devmajor = devminor = 0
        if typeflag in (CHAR, BLOCKDEV):
            devmajor = _number(block[329:337], at)
            devminor = _number(block[337:345], at)
        atime_ns: int | None = None
        xattrs: dict[str, bytes] = {}
        if pax:
            for key, value in pax.items():
                if key == "path":
                    raw_name = value
                elif key == "linkpath":
                    raw_link = value
                elif key == "size":
                    size = _pax_int(key, value, at)
                elif key == "uid":
                    uid = _pax_int(key, value, at)
                elif key == "gid":
                    gid = _pax_int(key, value, at)
                elif key == "mtime":
                    mtime_ns = _pax_time(key, value, at)
                elif key == "atime":
                    atime_ns = _pax_time(key, value, at)
                elif key.startswith(XATTR_PREFIX):
                    xattrs[key[len(XATTR_PREFIX) :]] = value
                elif key.startswith("GNU.sparse."):
                    typeflag = "S"
        if size < 0:
            raise TarFormatError(f"bad header at offset {at}: negative size")
        if typeflag == DIRECTORY:
            raw_name = raw_name.rstrip(b"/")  # as tarfile reports directory names
        name = raw_name.decode("utf-8", "surrogateescape")
        if typeflag in (HARDLINK, SYMLINK, DIRECTORY, CHAR, BLOCKDEV, FIFO):
            # Only regular files carry data; a link's size field means nothing (as in Go).
            data_size = 0
        else:
            data_size = size
        self._left = data_size
        self._pad = -data_size % BLOCK
        return Entry(name, typeflag, mode, uid, gid, size, mtime_ns, atime_ns,
                     raw_link.decode("utf-8", "surrogateescape"), devmajor, devminor, xattrs)

    # -- bytes -------------------------------------------------------------------------

    def _extended(self, size: int, at: int) -> bytes:
        if size > MAX_EXTENDED:
            raise TarFormatError(f"bad header at offset {at}: extended header of {size} bytes")
        data = self._take(size)
        if len(data) < size:
            raise TarFormatError("unexpected end of data in an extended header")
        pad = -size % BLOCK
        if len(self._take(pad)) < pad:
            raise TarFormatError("unexpected end of data in an extended header")
        return data

    def _skip_data(self) -> None:
        for _ in self.data():
            pass
        if self._pad:
            pad, self._pad = self._pad, 0
            if len(self._take(pad)) < pad:
                raise TarFormatError("unexpected end of data in a file's padding")

    def _take(self, n: int) -> bytes:
        """The next `n` bytes, or fewer at the end of the stream (small n: headers, padding)."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            self._offset += n
            return out
        parts = [self._buf[self._pos :]]
        got = len(parts[0])
        self._buf, self._pos = b"", 0
        while got < n:
            chunk = self._read(CHUNK if n - got <= CHUNK else n - got)
            if not chunk:
                break
            need = n - got
            parts.append(chunk[:need])
            used = need if need < len(chunk) else len(chunk)
            got += used
            self._buf, self._pos = chunk, used
        self._offset += got
        return b"".join(parts)


# -- header fields -----------------------------------------------------------------------


def _field(block: bytes, start: int, length: int) -> bytes:
    end = block.find(b"\0", start, start + length)
    return block[start : end if end >= 0 else start + length]


def _number(raw: bytes, at: int) -> int:
    """An octal field, or GNU's base-256 (first byte 0x80, or 0xff for negative numbers)."""
    first = raw[0]
    if first == 0x80 or first == 0xFF:
        n = int.from_bytes(raw[1:], "big")
        return n - (1 << (8 * (len(raw) - 1))) if first == 0xFF else n
    try:
        return int(raw.rstrip(b"\0 "), 8)  # the usual "0000644\0"
    except ValueError:
        pass
    text = raw.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad header at offset {at}: invalid number {raw!r}") from None


def _check_sum(block: bytes, at: int) -> None:
    want = _number(block[148:156], at)
    # The checksum field counts as eight spaces; some old tars summed signed bytes.
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    if want == unsigned:
        return
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 8 * 32
    if want != signed:
        raise TarFormatError(f"bad header at offset {at}: checksum mismatch")


def _pax_records(data: bytes, at: int) -> dict[str, bytes]:
    """`<length> <key>=<value>\\n` records; values stay bytes (xattrs are binary)."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break  # NUL padding after the last record
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else -1
        except ValueError:
            length = -1
        record = data[pos : pos + length]
        if length <= 0 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError(f"bad header at offset {at}: malformed pax record")
        key, _, value = record[space - pos + 1 : -1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return out


def _pax_int(key: str, value: bytes, at: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise TarFormatError(f"bad header at offset {at}: pax {key} {value[:64]!r}") from None


def _pax_time(key: str, value: bytes, at: int) -> int:
    """Seconds with an optional fraction, to ns, exactly."""
    try:
        seconds = Decimal(value.decode("ascii"))
        # Bounded before int(): 1e999999 would be a million-digit integer (seconds of CPU).
        # Go's archive/tar refuses what does not fit an int64 of seconds as well.
        if not seconds.is_finite() or abs(seconds) >= _MAX_PAX_SECONDS:
            raise ValueError(value)
        return int(seconds * _NS)
    except (ArithmeticError, UnicodeDecodeError, ValueError):  # decimal's errors are ArithmeticErrors
        raise TarFormatError(f"bad header at offset {at}: pax {key} {value[:64]!r}") from None
