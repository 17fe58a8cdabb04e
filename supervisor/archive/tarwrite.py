"""A tar writer whose bytes equal those of Go's archive/tar (the writer containerd's diffs use).

Contract
--------
- `TarWriter(out)`: `add(header, data=None)` writes one entry; `data` (a readable stream)
  must supply exactly `header.size` bytes for a regular file. `close()` pads the last entry
  and writes the two 512-byte zero blocks that end the archive; nothing more (Go does not
  pad to a 10240-byte record as Python's tarfile and GNU tar do).
- `TarHeader`: the fields containerd fills. Names and link targets are bytes (file names
  are bytes; Go strings are too). `mtime` is whole seconds: Go truncates or rounds it (and
  drops access and change times) before this point, as the caller must too.

Format choice follows Go's `Header.allowedFormats`: USTAR when every field fits (a long
ASCII name may be split into prefix and name), else PAX with the records needed, sorted by
key. PAX records of the header itself (`pax`, e.g. SCHILY.xattr.*) force PAX. The PAX
extended header is named `<dir>/PaxHeaders.0/<base>` with mode, owner and mtime 0; in the
header after it, fields that do not fit are 0 and names keep only their ASCII bytes.
A header Go could write only as GNU (a device number beyond 7 octal digits, which Linux
cannot produce) is refused with InvalidArgument.

Example::

    w = TarWriter(out)
    w.add(TarHeader(b"etc/", TYPE_DIR, mode=0o755, mtime=1_600_000_000))
    w.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from dockyard_common.errors import InvalidArgument
from supervisor.archive import tarformat
from supervisor.archive.tarformat import BLOCK

TYPE_REG = tarformat.REGULAR.encode()
TYPE_LINK = tarformat.HARDLINK.encode()
TYPE_SYMLINK = tarformat.SYMLINK.encode()
TYPE_CHAR = tarformat.CHAR.encode()
TYPE_BLOCK = tarformat.BLOCKDEV.encode()
TYPE_DIR = tarformat.DIRECTORY.encode()
TYPE_FIFO = tarformat.FIFO.encode()
_TYPE_PAX = tarformat.PAX.encode()
_HEADER_ONLY = {TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO}

# Go's zero time.Time (year 1): "unset", written as 0.
_GO_ZERO_TIME = -62135596800
_NAME_SIZE = 100
_PREFIX_SIZE = 155
# PAX keys Go derives from the header fields; a header's own records never override them.
_BASIC_KEYS = {"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime"}
_COPY_CHUNK = 1 << 20


@dataclass
class TarHeader:
    name: bytes
    typeflag: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, bytes] = field(default_factory=dict)


class TarWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pad = 0

    def add(self, h: TarHeader, data: BinaryIO | None = None) -> None:
        """Write `h`, then `h.size` bytes of `data` for a regular file."""
        self._flush_pad()
        use_ustar, records = _choose_format(h)
        if use_ustar:
            self._out.write(_ustar_block(h))
        else:
            if records:
                self._raw_file(_pax_header_name(h.name), b"".join(_pax_record(k, v) for k, v in records))
                self._flush_pad()
            self._out.write(_pax_block(h))
        size = 0 if h.typeflag in _HEADER_ONLY else h.size
        if size:
            if data is None:
                raise InvalidArgument(f"tar entry {h.name!r}: {size} bytes of data missing")
            _copy_exactly(data, self._out, size, h.name)
        self._pad = -size % BLOCK

    def close(self) -> None:
        self._flush_pad()
        self._out.write(bytes(2 * BLOCK))

    def _flush_pad(self) -> None:
        if self._pad:
            self._out.write(bytes(self._pad))
            self._pad = 0

    def _raw_file(self, name: bytes, data: bytes) -> None:
        """A PAX extended header entry, with Go's defaults for every other field."""
        blk = bytearray(BLOCK)
        name = _to_ascii(name)[:_NAME_SIZE].rstrip(b"/")
        _put_string(blk, 0, 100, name)
        _put_octal(blk, 100, 8, 0)
        _put_octal(blk, 108, 8, 0)
        _put_octal(blk, 116, 8, 0)
        _put_octal(blk, 124, 12, len(data))
        _put_octal(blk, 136, 12, 0)
        blk[156:157] = _TYPE_PAX
        self._out.write(_finish(blk))
        self._out.write(data)
        self._pad = -len(data) % BLOCK


def _copy_exactly(src: BinaryIO, dst: BinaryIO, size: int, name: bytes) -> None:
    left = size
    while left:
        chunk = src.read(min(left, _COPY_CHUNK))
        if not chunk:
            raise InvalidArgument(f"tar entry {name!r}: file shrank while it was read ({size - left} of {size} bytes)")
        dst.write(chunk)
        left -= len(chunk)
    if src.read(1):
        raise InvalidArgument(f"tar entry {name!r}: file grew while it was read (more than {size} bytes)")


# -- format choice (Go's Header.allowedFormats, for the fields containerd sets) ---------------


def _choose_format(h: TarHeader) -> tuple[bool, list[tuple[bytes, bytes]]]:
    """(USTAR?, the PAX records to write otherwise, sorted)."""
    ustar = pax = True
    records: dict[bytes, bytes] = {}

    def string(value: bytes, key: bytes) -> None:
        nonlocal ustar
        if not _is_ascii(value) or len(value) > _NAME_SIZE:
            if key != b"path" or _split_ustar(value) is None:
                ustar = False
            records[key] = value

    def numeric(value: int, size: int, key: bytes | None) -> None:
        nonlocal ustar, pax
        if not _fits_octal(size, value):
            ustar = False
            if key is None:
                pax = False
            else:
                records[key] = str(value).encode()

    string(h.name, b"path")
    string(h.linkname, b"linkpath")
    numeric(h.mode, 8, None)
    numeric(h.uid, 8, b"uid")
    numeric(h.gid, 8, b"gid")
    numeric(h.size, 12, b"size")
    numeric(h.devmajor, 8, None)
    numeric(h.devminor, 8, None)
    if h.mtime != _GO_ZERO_TIME and not _fits_octal(12, h.mtime):
        ustar = False
        records[b"mtime"] = str(h.mtime).encode()
    if h.typeflag not in _HEADER_ONLY and h.typeflag != TYPE_REG:
        raise InvalidArgument(f"tar entry {h.name!r}: unsupported type {h.typeflag!r}")
    if h.typeflag == TYPE_REG and h.name.endswith(b"/"):
        raise InvalidArgument(f"tar entry {h.name!r}: a file name may not end in a slash")
    if h.pax:
        ustar = False  # only PAX carries records
        for key, value in h.pax.items():
            k = key.encode("utf-8", "surrogateescape")
            if k not in records and key not in _BASIC_KEYS:
                records[k] = value
    for k, v in records.items():
        if not k or b"=" in k or (b"\0" in v if k in (b"path", b"linkpath") else b"\0" in k):
            raise InvalidArgument(f"tar entry {h.name!r}: PAX record {k!r} cannot be encoded")
    if ustar:
        return True, []
    if pax:
        return False, sorted(records.items())
    raise InvalidArgument(f"tar entry {h.name!r}: a device number too large for the tar header")


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    length = len(name)
    if length <= _NAME_SIZE or not _is_ascii(name):
        return None
    if length > _PREFIX_SIZE + 1:
        length = _PREFIX_SIZE + 1
    elif name[length - 1 : length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix_len = len(name) - i - 1
    if i <= 0 or suffix_len > _NAME_SIZE or suffix_len == 0 or i > _PREFIX_SIZE:
        return None
    return name[:i], name[i + 1 :]


# -- blocks -----------------------------------------------------------------------------------


def _ustar_block(h: TarHeader) -> bytes:
    name, prefix = h.name, b""
    split = _split_ustar(h.name)
    if split is not None:
        prefix, name = split
    blk = _template(h, name, h.linkname)
    _put_string(blk, 345, 155, prefix)
    return _finish(blk)


def _pax_block(h: TarHeader) -> bytes:
    return _finish(_template(h, _to_ascii(h.name), _to_ascii(h.linkname)))


def _template(h: TarHeader, name: bytes, linkname: bytes) -> bytearray:
    """Go's templateV7Plus with octal numbers; a number that does not fit is written as 0."""
    blk = bytearray(BLOCK)
    _put_string(blk, 0, 100, name)
    _put_octal(blk, 100, 8, h.mode)
    _put_octal(blk, 108, 8, h.uid)
    _put_octal(blk, 116, 8, h.gid)
    _put_octal(blk, 124, 12, h.size)
    _put_octal(blk, 136, 12, 0 if h.mtime == _GO_ZERO_TIME else h.mtime)
    blk[156:157] = h.typeflag
    _put_string(blk, 157, 100, linkname)
    # uname and gname (265, 297) stay empty: containerd never looks names up.
    _put_octal(blk, 329, 8, h.devmajor)
    _put_octal(blk, 337, 8, h.devminor)
    return blk


def _finish(blk: bytearray) -> bytes:
    """Magic "ustar\\0" "00" (USTAR and PAX alike), then the checksum: 6 octal digits, NUL, space."""
    blk[257:265] = b"ustar\x0000"
    blk[148:156] = b" " * 8
    _put_octal(blk, 148, 7, sum(blk))
    blk[155] = 0x20
    return bytes(blk)


def _put_string(blk: bytearray, off: int, size: int, s: bytes) -> None:
    blk[off : off + min(len(s), size)] = s[:size]
    if len(s) < size:
        blk[off + len(s)] = 0
    elif len(s) > size and blk[off + size - 1] == 0x2F:
        # A name cut inside trailing slashes: Go ends it with NUL where the slashes start.
        blk[off + len(s[:size].rstrip(b"/"))] = 0


def _put_octal(blk: bytearray, off: int, size: int, value: int) -> None:
    if not _fits_octal(size, value):
        value = 0
    digits = b"%o" % value
    _put_string(blk, off, size, digits.rjust(size - 1, b"0"))


def _fits_octal(size: int, value: int) -> bool:
    return value >= 0 and (size >= 22 or value < 1 << ((size - 1) * 3))


def _is_ascii(s: bytes) -> bool:
    return s.isascii() and b"\0" not in s


def _to_ascii(s: bytes) -> bytes:
    return bytes(c for c in s if 0 < c < 0x80) if not _is_ascii(s) else s


def _pax_header_name(name: bytes) -> bytes:
    """Go's path.Join(dir, "PaxHeaders.0", base) of path.Split(name)."""
    directory, _, base = name.rpartition(b"/")
    parts = [p for p in (*directory.split(b"/"), b"PaxHeaders.0", base) if p]
    return b"/".join(parts)


def _pax_record(key: bytes, value: bytes) -> bytes:
    """`<len> <key>=<value>\\n`, where <len> counts the whole record including itself."""
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        record = b"%d %s=%s\n" % (len(record), key, value)
    return record
