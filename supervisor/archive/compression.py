"""Layer compression: magic-number detection, decompressing and compressing streams.

Contract
--------
- The layer media types and what compression each declares (`compression_for_media_type`,
  `media_type_for`) are image-spec facts: `dockyard_common.imagespec`.
- `detect_compression(head)` -> Compression from the first bytes (gzip `1f 8b 08`, zstd
  frame `28 b5 2f fd` or a skippable frame), else NONE.
- `open_layer(stream, media_type=None)` -> a readable binary stream of the *uncompressed*
  tar. The content decides (as containerd's DecompressStream does); a declared gzip/zstd
  whose bytes are something else is InvalidArgument. Corrupt or truncated compressed data
  raises InvalidArgument when read; errors of the underlying stream pass through.
- `open_compressor(out, compression, helper=None)` -> a writable stream compressing into
  `out` (deterministic gzip: no name, mtime 0); with `helper` (gocompress.find_helper()),
  through containerd's own encoders, for containerd's bytes. Closing it finishes the
  compressed stream but leaves `out` open; use it as a context manager so that an error
  ends the stream without finishing it.

zstd needs the `zstandard` package; without it zstd raises FailedPrecondition.

Example::

    with open(blob, "rb") as raw, open_layer(raw, desc.media_type) as tar_stream:
        apply_layer(tar_stream, target, whiteout_mode="delete")
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.imagespec import Compression, compression_for_media_type
from supervisor.archive.gocompress import PipedCompressor

try:  # optional dependency: only zstd layers need it
    import zstandard
except ImportError:  # pragma: no cover - exercised only where zstandard is missing
    zstandard = None  # type: ignore[assignment]


GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HEAD = 10
_READ_CHUNK = 1 << 20


def detect_compression(head: bytes) -> Compression:
    """Compression from the first bytes of a stream (10 are plenty)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    # zstd skippable frames: magic 0x184D2A50..0x184D2A5F, little endian.
    if len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        return Compression.ZSTD
    return Compression.NONE


def open_layer(stream: BinaryIO, media_type: str | None = None) -> io.BufferedReader:
    """A stream of the uncompressed tar inside `stream`; see the module docstring."""
    declared = compression_for_media_type(media_type) if media_type is not None else None
    head = _read_exactly(stream, _HEAD)
    found = detect_compression(head)
    if declared in (Compression.GZIP, Compression.ZSTD) and found is not declared:
        raise InvalidArgument(
            f"layer of media type {media_type!r} is not {declared.value}-compressed"
            f" (it looks {'uncompressed' if found is Compression.NONE else found.value})"
        )
    source = _Prefixed(head, stream)
    raw: io.RawIOBase
    if found is Compression.GZIP:
        raw = _Decompressing(gzip.GzipFile(fileobj=source, mode="rb"), "gzip")
    elif found is Compression.ZSTD:
        # The zstandard reader returns a clean EOF when the input stops mid-frame; the
        # framing checker notices, so truncation is an error as it is for gzip.
        checked = _ZstdFraming(source)
        dctx = _zstd().ZstdDecompressor()
        raw = _Decompressing(
            dctx.stream_reader(checked, read_across_frames=True, closefd=False), "zstd", checked.check_end
        )
    else:
        raw = source
    return io.BufferedReader(raw, _READ_CHUNK)


def open_compressor(out: BinaryIO, compression: Compression, *, level: int | None = None,
                    helper: str | None = None) -> BinaryIO:
    """A writer compressing into `out`; close it to finish the stream (`out` stays open)."""
    if helper is not None and level is None and compression in (Compression.GZIP, Compression.ZSTD):
        return PipedCompressor(out, compression.value, helper)  # type: ignore[return-value]
    if compression is Compression.GZIP:
        # mtime=0 and no file name: the same tar always gives the same blob digest.
        return gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level or 6, mtime=0)  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        cctx = _zstd().ZstdCompressor(level=level or 3)
        return cctx.stream_writer(out, closefd=False)  # type: ignore[no-any-return]
    return _Uncloseable(out)  # type: ignore[return-value]


def _zstd() -> Any:
    if zstandard is None:
        raise FailedPrecondition("zstd layers need the 'zstandard' Python package")
    return zstandard


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


class _Prefixed(io.RawIOBase):
    """`head` (already read for sniffing) followed by the rest of `stream`."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Decompressing(io.RawIOBase):
    """A decompressor whose format errors become InvalidArgument (not raw tracebacks)."""

    def __init__(self, inner: Any, kind: str, check_end: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._kind = kind
        self._check_end = check_end

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        try:
            data = self._inner.read(len(view))
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise InvalidArgument(f"corrupt or truncated {self._kind} layer: {e}") from None
        except Exception as e:
            if zstandard is not None and isinstance(e, zstandard.ZstdError):
                raise InvalidArgument(f"corrupt or truncated {self._kind} layer: {e}") from None
            raise
        if not data and len(view) and self._check_end is not None:
            self._check_end()
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


class _ZstdFraming:
    """Pass a zstd stream through while following its frame structure (RFC 8878 s3.1).

    Only headers are parsed: frame header, block headers (3 bytes: last flag, type, size),
    the optional checksum, skippable frames. Block contents are counted, not read.
    `check_end` raises InvalidArgument unless the stream ended between two frames.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self._state = "magic"
        self._need = 4
        self._buf = bytearray()
        self._skip = 0
        self._after_skip = "magic"
        self._checksum = False

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        if data:
            self._feed(memoryview(data))
        return data

    def check_end(self) -> None:
        if self.read(1):
            raise InvalidArgument("corrupt zstd layer: data after the end of the stream")
        if self._state != "magic" or self._buf or self._skip:
            raise InvalidArgument("corrupt or truncated zstd layer: stream ends inside a frame")

    def _feed(self, data: memoryview) -> None:
        i = 0
        while i < len(data):
            if self._skip:
                take = min(self._skip, len(data) - i)
                i += take
                self._skip -= take
                if not self._skip:
                    self._goto(self._after_skip)
                continue
            take = min(self._need - len(self._buf), len(data) - i)
            self._buf += data[i : i + take]
            i += take
            if len(self._buf) == self._need:
                header = bytes(self._buf)
                self._buf.clear()
                self._advance(header)

    def _goto(self, state: str, need: int = 0) -> None:
        self._state = state
        self._need = need or {"magic": 4, "descriptor": 1, "block": 3, "skippable": 4}.get(state, 0)

    def _skip_then(self, count: int, state: str) -> None:
        if count:
            self._skip, self._after_skip = count, state
            self._state = "skip"
        else:
            self._goto(state)

    def _advance(self, header: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(header, "little")
            if header == ZSTD_MAGIC:
                self._goto("descriptor")
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._goto("skippable")
            else:
                raise InvalidArgument("corrupt zstd layer: bad frame magic")
        elif self._state == "skippable":
            self._skip_then(int.from_bytes(header, "little"), "magic")
        elif self._state == "descriptor":
            d = header[0]
            single_segment = bool(d & 0x20)
            self._checksum = bool(d & 0x04)
            fcs = (1 if single_segment else 0, 2, 4, 8)[d >> 6]
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[d & 0x03] + fcs
            self._skip_then(rest, "block")
        elif self._state == "block":
            h = int.from_bytes(header, "little")
            last, kind, size = h & 1, (h >> 1) & 3, h >> 3
            if kind == 3:
                raise InvalidArgument("corrupt zstd layer: reserved block type")
            after = "block"
            if last:
                after = "checksum" if self._checksum else "magic"
            if after == "checksum":
                # Content, then 4 checksum bytes: one skip covers both.
                self._skip_then((1 if kind == 1 else size) + 4, "magic")
            else:
                self._skip_then(1 if kind == 1 else size, after)


class _Uncloseable(io.RawIOBase):
    """Pass writes through to `out`; closing does not close `out`."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()
