"""A reader and a writer that digest and count what passes through them.

The diff ID of a layer is the sha256 of its *uncompressed* tar, padding included, so the
applier wraps the decompressed stream in a reader and drains it after the last entry, and
a differ wraps the compressor's input in a writer.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

_DRAIN_CHUNK = 1 << 20


class DigestingReader:
    """Wrap a binary stream; `size` and `digest` cover every byte read so far."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        """Read (and digest) the rest of the stream, e.g. the tar's trailing padding."""
        while self.read(_DRAIN_CHUNK):
            pass

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the bytes read so far."""
        return "sha256:" + self._hash.hexdigest()


class DigestingWriter:
    """Wrap a binary sink; `size` and `digest` cover every byte written so far.

    For Diff.Diff: `write_diff(lower, upper, DigestingWriter(compressor))` yields the diff ID
    (uncompressed digest) while the compressed bytes go on to the content store.
    """

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._inner.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._inner.flush()

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the bytes written so far."""
        return "sha256:" + self._hash.hexdigest()
