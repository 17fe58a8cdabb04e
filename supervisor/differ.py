"""Applying layers to snapshots and computing layers from them (Diff.Apply, Diff.Diff).

Apply takes the fast path containerd takes: an overlay snapshot's layer is written straight
into its upperdir (whiteouts as overlay whiteouts, the lowers consulted), a bind mount's
source is written in place; anything else is mounted first. Both directions stream: the blob
is read from the content store in chunks and never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from dockyard_common.imagespec import (
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    Descriptor,
    compression_for_media_type,
)
from dockyard_common.mountopts import overlay_dirs
from dockyard_common.mounts import mounted, readonly_view
from dockyard_common.types import Mount
from supervisor.archive.apply import apply_layer
from supervisor.archive.compression import open_compressor, open_layer
from supervisor.archive.diff import write_diff
from supervisor.archive.hashing import DigestingReader, DigestingWriter
from supervisor.content.store import BlobReader
from supervisor.metadata.content import NamespacedContentStore

log = logging.getLogger("dockyard.differ")

UNCOMPRESSED_LABEL = "containerd.io/uncompressed"
_CHUNK = 1 << 20


class _BlockingBlob:
    """A sync, sequential file view of an async BlobReader, for code running in a thread.

    Decompressors read in small pieces (gzip: 8 KiB); each hop through the event loop costs far
    more than that, so it reads ahead in large chunks and serves small reads from a buffer."""

    READ_AHEAD = 4 << 20

    def __init__(self, reader: BlobReader, loop: asyncio.AbstractEventLoop) -> None:
        self._reader = reader
        self._loop = loop
        self._offset = 0  # of the blob, past what is buffered
        self._buffer = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # everything that is left
            return b"".join(iter(lambda: self.read(self.READ_AHEAD), b""))
        if not self._buffer:
            size = min(self._reader.size - self._offset, max(self.READ_AHEAD, n))
            if size <= 0:
                return b""
            data = asyncio.run_coroutine_threadsafe(self._reader.read_at(self._offset, size), self._loop).result()
            self._offset += len(data)
            self._buffer = memoryview(data)
        take = min(n, len(self._buffer))
        out, self._buffer = self._buffer[:take], self._buffer[take:]
        return bytes(out)

    def readable(self) -> bool:
        return True


class Differ:
    def __init__(self, content: NamespacedContentStore, tmp_root: Path, compress_helper: str | None = None) -> None:
        self.content = content
        self.tmp_root = tmp_root
        self.compress_helper = compress_helper  # containerd's encoders (archive/gocompress.py), or None

    async def apply(self, ns: str, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply the layer blob `desc` onto `mounts`; returns the uncompressed descriptor."""
        compression_for_media_type(desc.media_type)  # unknown media types fail before any work
        if not mounts:
            raise InvalidArgument("apply: no mounts given")
        reader = await self.content.reader(ns, desc.digest)
        try:
            if desc.size and reader.size != desc.size:
                raise FailedPrecondition(
                    f"content {desc.digest} has size {reader.size}, descriptor says {desc.size}")
            blob = DigestingReader(cast(BinaryIO, _BlockingBlob(reader, asyncio.get_running_loop())))
            started = time.monotonic()
            cancel = threading.Event()
            # cancelled: the thread stops at the next entry, and ends before anyone removes the snapshot
            result = await uninterrupted(asyncio.to_thread(self._apply, blob, desc.media_type, list(mounts), cancel),
                                         cancel.set)
            log.debug("applied %s (%d bytes, %d uncompressed) in %.3fs", desc.digest, reader.size, result.size,
                      time.monotonic() - started)
        finally:
            await reader.close()
        if blob.digest != desc.digest:  # the store verified it at commit; this guards the disk since
            raise FailedPrecondition(f"layer {desc.digest} read back as {blob.digest}")
        return Descriptor(MEDIA_TYPE_OCI_LAYER, result.digest, result.size)

    def _apply(self, blob: DigestingReader, media_type: str, mounts: list[Mount], cancel: threading.Event) -> Any:
        stream = open_layer(cast(BinaryIO, blob), media_type)
        if len(mounts) == 1 and mounts[0].type == "overlay":
            dirs = overlay_dirs(mounts[0].options)
            if dirs.upper is not None:
                result = apply_layer(stream, Path(dirs.upper), whiteout_mode="overlay",
                                     parents=[Path(p) for p in dirs.lowers], cancel=cancel)
                blob.drain()
                return result
        if len(mounts) == 1 and mounts[0].type == "bind" and "ro" not in mounts[0].options:
            result = apply_layer(stream, Path(mounts[0].source), whiteout_mode="delete", cancel=cancel)
            blob.drain()
            return result
        with mounted(mounts, self.tmp_root) as target:
            result = apply_layer(stream, target, whiteout_mode="delete", cancel=cancel)
        blob.drain()
        return result

    async def diff(self, ns: str, lower: Sequence[Mount], upper: Sequence[Mount], *, media_type: str = "",
                   ref: str = "", labels: Mapping[str, str] | None = None, lease: str = "",
                   mtime_clamp: int | None = None, from_upperdir: bool = False) -> Descriptor:
        """Write the changes from `lower` to `upper` as a new layer blob in the content store
        (`mtime_clamp`: no entry newer than it, see archive/diff.py). `from_upperdir`: when
        `upper` is an overlay on `lower`, walk only what its upperdir holds (our builds; the
        bytes then need not be containerd's, see archive/diff.py write_diff)."""
        media_type = media_type or MEDIA_TYPE_OCI_LAYER_GZIP
        compression = compression_for_media_type(media_type)
        if compression is None:
            raise InvalidArgument(f"diff: media type {media_type!r} does not say how to compress")
        if not upper:
            raise InvalidArgument("diff: no upper mounts given")
        self.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix="diff-", dir=self.tmp_root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                changed = _upperdir(upper) if from_upperdir else None
                diff_id, written = await asyncio.to_thread(
                    self._diff, list(lower), list(upper), out, compression, mtime_clamp, changed)
                out.seek(0)
                digest = await self._store(ns, out, written, ref or f"diff-{secrets.token_hex(8)}",
                                           {**(labels or {}), UNCOMPRESSED_LABEL: diff_id}, lease)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        return Descriptor(media_type, digest, written)

    def _diff(self, lower: list[Mount], upper: list[Mount], out: BinaryIO, compression: Any,
              mtime_clamp: int | None = None, changed: Path | None = None) -> tuple[str, int]:
        counted = DigestingWriter(out)
        with open_compressor(cast(BinaryIO, counted), compression, helper=self.compress_helper) as compressor:
            uncompressed = DigestingWriter(compressor)
            sink = cast(BinaryIO, uncompressed)
            # Both trees mounted and walked, as containerd's differ does: reading an overlay
            # upperdir alone would be faster but cannot give containerd's bytes (it never writes
            # opaque markers, and judges changes on the merged views).
            with mounted(lower, self.tmp_root, readonly=True) if lower else _EmptyDir(self.tmp_root) as low, \
                    mounted(readonly_view(upper), self.tmp_root) as up:
                write_diff(low, up, sink, mtime_clamp=mtime_clamp, changed=changed)
        out.flush()
        return uncompressed.digest, counted.size

    async def _store(self, ns: str, data: BinaryIO, size: int, ref: str, labels: Mapping[str, str],
                     lease: str) -> str:
        writer = await self.content.writer(ns, ref, total=size, lease=lease)
        try:
            offset = writer.status().offset  # a resumed ingest carries on where it stopped
            data.seek(offset)
            while chunk := await asyncio.to_thread(data.read, _CHUNK):
                offset = await writer.write(chunk, offset)
            digest = writer.digest()
            try:
                await writer.commit(size, digest, labels)
            except AlreadyExists:
                pass  # the same layer is already there: the descriptor is still right
            return digest
        except BaseException:
            with contextlib.suppress(Exception):
                await writer.close()
            raise


def _upperdir(mounts: Sequence[Mount]) -> Path | None:
    """The upperdir of `mounts` when they are one overlay (a snapshot on a parent), else None."""
    if len(mounts) != 1 or mounts[0].type != "overlay":
        return None
    upper = overlay_dirs(mounts[0].options).upper
    return Path(upper) if upper else None


class _EmptyDir:
    """An empty directory standing in for a missing lower (the first layer)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = Path(tempfile.mkdtemp(prefix="empty-", dir=root))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.rmdir(self.path)
