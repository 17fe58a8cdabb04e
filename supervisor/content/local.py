"""The content store on a local filesystem, laid out like containerd's:

    <root>/blobs/sha256/<hex>          committed blobs, mode 0444, written once
    <root>/ingest/<sha256(ref)>/       one directory per ingest (see `ingest.py`)

Blobs appear only by link/rename from a verified, fsynced ingest, so a blob path always
holds complete content. Names starting with "." are deletes in progress and are ignored
(and swept on first use). The contract is `supervisor.content.store.ContentStore`.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from supervisor.content import ingest
from supervisor.content.cache import BlobCache, MemoryBlobReader, OpenBlobs
from supervisor.content.digest import format_digest, parse_digest
from supervisor.content.ingest import IngestPaths, disk_error, quote
from supervisor.content.local_writer import LocalWriter, open_writer, retry_while_locked
from supervisor.content.store import Info, ReaderBase, Status, read_blob

T = TypeVar("T")
_HEX64 = re.compile(r"[a-f0-9]{64}")
_WALK_BATCH = 256
INLINE_READ = 1 << 20  # the most a read on the event loop copies (~0.1 ms from the page cache)


class LocalBlobReader(ReaderBase):
    """An open blob; see `supervisor.content.store.BlobReader`."""

    def __init__(self, fd: int, size: int, digest: str, cache: BlobCache | None = None, epoch: int = 0) -> None:
        self._fd = fd
        self._size = size
        self._digest = digest
        self._release = weakref.finalize(self, os.close, fd)
        # Where a small blob's bytes go once read, with the cache's epoch from before the open.
        self._cache = cache if cache is not None and cache.fits(size) else None
        self._epoch = epoch

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, size: int) -> bytes:
        self.check_range(offset, size)
        if not self._release.alive:
            raise FailedPrecondition(f"reader of content {self._digest} is closed")
        if self._cache is None:
            data = _read_cached(self._fd, offset, size) if size <= INLINE_READ else None
            return data if data is not None else await asyncio.to_thread(self._pread, offset, size)
        # Small: read it whole in this hop and keep it, so later readers need no hop at all.
        data = await asyncio.to_thread(self._pread, 0, self._size)
        self._cache.put(self._digest, data, self._epoch)
        return data[offset:offset + size]

    def dup(self) -> int:
        return os.dup(self._fd)

    def _pread(self, offset: int, size: int) -> bytes:
        chunks: list[bytes] = []
        while size > 0:
            chunk = os.pread(self._fd, size, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        self._release()


def _read_cached(fd: int, offset: int, size: int) -> bytes | None:
    """The range when the page cache holds all of it, else None. RWF_NOWAIT makes the read
    fail rather than wait for the disk, so it may run on the event loop."""
    buf = bytearray(size)
    try:
        n = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
    except OSError:  # EAGAIN (not cached, or readahead due) or EOPNOTSUPP (no RWF_NOWAIT here)
        return None
    return bytes(buf) if n == size else None


class LocalContentStore:
    """Blobs and ingests under `root`. Constructing it touches no disk; first use prepares it.

    Several instances (or processes) may share a root: ref locks are flocks on the ingest's
    data file, and blobs are published with link(), which never replaces a name.

    Small blobs (at most `cache.max_blob` bytes) are read whole by a reader's first `read_at`
    and their bytes kept (`cache`), so a later `reader` of one answers from memory without a
    thread hop. Larger ones keep an open descriptor (`open_blobs`): a later `reader` dups it,
    and reads that the page cache can answer run without a hop too. `delete` drops a blob from
    both; a blob removed by another instance or process stays readable from this one's caches
    (still the right bytes: content is immutable).
    """

    def __init__(self, root: Path | str, cache: BlobCache | None = None) -> None:
        self.root = Path(root)
        self.cache = cache if cache is not None else BlobCache()
        self.open_blobs = OpenBlobs()
        self._blobs = self.root / "blobs" / "sha256"
        self._ingests = self.root / "ingest"
        self._prepared = False
        self._prepare_mu = threading.Lock()

    # -- blobs ----------------------------------------------------------------------------

    async def info(self, digest: str) -> Info:
        path = self._blob_path(digest)
        return await self._run(self._info, digest, path)

    async def exists(self, digest: str) -> bool:
        path = self._blob_path(digest)
        return await self._run(os.path.lexists, path)

    async def reader(self, digest: str) -> LocalBlobReader | MemoryBlobReader:
        data = self.cache.get(digest)  # only well-formed digests are ever in it
        if data is not None:
            return MemoryBlobReader(data, digest)
        held = self.open_blobs.get(digest)
        if held is not None:
            return LocalBlobReader(os.dup(held[0]), held[1], digest)
        path = self._blob_path(digest)
        epoch = self.open_blobs.epoch
        reader = await self._run(self._open_reader, digest, path, self.cache.epoch)
        if not self.cache.fits(reader.size):
            self.open_blobs.put(digest, reader.dup(), reader.size, epoch)
        return reader

    async def read_all(self, digest: str, max_size: int) -> bytes:
        return await read_blob(self, digest, max_size)

    async def delete(self, digest: str) -> None:
        path = self._blob_path(digest)
        self.cache.discard(digest)
        self.open_blobs.discard(digest)
        try:
            await self._run(self._delete, digest, path)
        finally:
            # Again: a fill whose thread hop began after the first discard may have just landed.
            self.cache.discard(digest)
            self.open_blobs.discard(digest)

    async def walk(self) -> AsyncIterator[Info]:
        names = await self._run(self._blob_names)
        for start in range(0, len(names), _WALK_BATCH):
            for info in await self._run(self._infos, names[start : start + _WALK_BATCH]):
                yield info

    # -- ingests --------------------------------------------------------------------------

    async def status(self, ref: str) -> Status:
        _check_ref(ref)
        return await self._run(self._status, ref)

    async def list_statuses(self, prefix: str = "") -> list[Status]:
        if not isinstance(prefix, str):
            raise InvalidArgument(f"ref prefix must be a string, not {type(prefix).__name__}")
        return await self._run(self._list_statuses, prefix)

    async def abort(self, ref: str) -> None:
        _check_ref(ref)
        await self._run(self._abort, ref)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> LocalWriter:
        _check_ref(ref)
        if not isinstance(total, int) or total < 0:
            raise InvalidArgument(f"total {total!r} must be a non-negative size (0 = unknown)")
        if expected:
            parse_digest(expected)
        paths = IngestPaths.of(self._ingests, ref)
        return await retry_while_locked(lambda: self._run(
            lambda: open_writer(ref=ref, paths=paths, blobs=self._blobs, total=total, expected=expected)
        ))

    # -- worker-thread side ---------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        def call() -> T:
            self._prepare()
            return fn(*args)

        return await asyncio.to_thread(call)

    def _prepare(self) -> None:
        if self._prepared:
            return
        with self._prepare_mu:
            if self._prepared:
                return
            try:
                os.makedirs(self._ingests, exist_ok=True)
            except OSError as exc:
                raise disk_error(exc, f"content store at {self.root}") from exc
            # Deletes and aborts interrupted by a crash left hidden names; finish them.
            ingest.sweep_hidden(self._blobs)
            ingest.sweep_hidden(self._ingests)
            self._prepared = True

    def _blob_path(self, digest: str) -> Path:
        _, hexdigest = parse_digest(digest)
        return self._blobs / hexdigest

    def _info(self, digest: str, path: Path) -> Info:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFound(f"content digest {digest}") from None
        return _info(digest, st)

    def _open_reader(self, digest: str, path: Path, epoch: int) -> LocalBlobReader:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"content digest {digest}") from None
        return LocalBlobReader(fd, os.fstat(fd).st_size, digest, self.cache, epoch)

    def _delete(self, digest: str, path: Path) -> None:
        # Rename first: the blob is gone for everyone at once, even if the unlink is cut short.
        hidden = path.with_name(f".{path.name}.deleting-{secrets.token_hex(4)}")
        try:
            os.rename(path, hidden)
        except FileNotFoundError:
            raise NotFound(f"content digest {digest}") from None
        os.unlink(hidden)

    def _blob_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._blobs) if _HEX64.fullmatch(n))
        except FileNotFoundError:
            return []

    def _infos(self, names: list[str]) -> list[Info]:
        out = []
        for name in names:
            try:
                st = os.stat(self._blobs / name)
            except FileNotFoundError:
                continue  # deleted since the listing
            out.append(_info(format_digest(name), st))
        return out

    def _status(self, ref: str) -> Status:
        status = ingest.read_status(IngestPaths.of(self._ingests, ref))
        if status is None or status.ref != ref:
            raise NotFound(f"ingest ref {quote(ref)}")
        return status

    def _list_statuses(self, prefix: str) -> list[Status]:
        try:
            names = os.listdir(self._ingests)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith("."):
                continue
            # A half-made or just-committed ingest reads as None; it does not exist (yet/now).
            status = ingest.read_status(IngestPaths(self._ingests / name))
            if status is not None and status.ref.startswith(prefix):
                out.append(status)
        return sorted(out, key=lambda s: s.ref)

    def _abort(self, ref: str) -> None:
        if not ingest.remove_dir(IngestPaths.of(self._ingests, ref).dir):
            raise NotFound(f"ingest ref {quote(ref)}")


def _info(digest: str, st: os.stat_result) -> Info:
    # Blobs never change after commit, whose time is the mtime: created and updated agree.
    t = ingest.mtime(st)
    return Info(digest=digest, size=st.st_size, created_at=t, updated_at=t, labels={})


def _check_ref(ref: object) -> None:
    if not isinstance(ref, str):
        raise InvalidArgument(f"ref must be a string, not {type(ref).__name__}")
    if not ref:
        raise InvalidArgument("ref must not be empty")
