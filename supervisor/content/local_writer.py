"""The local store's Writer: one flock-held ingest, hashed as it is written.

All disk work runs in worker threads under a threading lock, so a cancelled await can
never leave the offset, the hash and the file out of step with each other.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from supervisor.content import ingest
from supervisor.content.digest import format_digest, hash_fd, parse_digest
from supervisor.content.ingest import IngestPaths, disk_error, quote
from supervisor.content.store import Status
from supervisor.timeutil import now

log = logging.getLogger("dockyard.content")
T = TypeVar("T")

# How long opening a writer keeps trying a ref that another writer holds before Unavailable.
# containerd's client closes a writer by half-closing its Write stream and may open the next
# writer on the ref at once, before the daemon has seen the end of the old stream and released
# the lock; containerd's local store retries for up to about a second for the same reason.
LOCK_WAIT = 1.0
_FIRST_RETRY = 0.001  # seconds; doubled per attempt, so a lock released within ms is found within ms
_MAX_RETRY = 0.05


async def retry_while_locked(open_writer: Callable[[], Awaitable[T]], wait: float = LOCK_WAIT) -> T:
    """`open_writer()`, tried again while it raises Unavailable, for up to `wait` seconds.

    Polling, not a wake-up from the holder: the lock is a flock, which another process (or a
    writer dropped without close) may hold as well.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = _FIRST_RETRY
    while True:
        try:
            return await open_writer()
        except Unavailable:
            left = deadline - loop.time()
            if left <= 0:
                raise
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, _MAX_RETRY)


class LocalWriter:
    """Created by `LocalContentStore.writer`; see `supervisor.content.store.Writer`."""

    def __init__(
        self,
        *,
        ref: str,
        fd: int,
        paths: IngestPaths,
        blobs: Path,
        offset: int,
        hasher: hashlib._Hash,
        total: int,
        expected: str,
        started_at: datetime,
        updated_at: datetime,
    ) -> None:
        self._ref = ref
        self._fd = fd
        self._paths = paths
        self._blobs = blobs
        self._offset = offset
        self._hash = hasher
        self._total = total
        self._expected = expected
        self._started_at = started_at
        self._updated_at = updated_at
        self._mu = threading.Lock()
        # A writer dropped without close (a crashing caller) still closes its fd, which
        # releases the flock: the next writer on the ref resumes instead of seeing it locked.
        self._release = weakref.finalize(self, os.close, fd)

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def closed(self) -> bool:
        return not self._release.alive

    def status(self) -> Status:
        return Status(
            self._ref, self._offset, self._total, self._expected, self._started_at, self._updated_at
        )

    def digest(self) -> str:
        return format_digest(self._hash.hexdigest())

    async def write(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"write data must be bytes, not {type(data).__name__}")
        return await asyncio.to_thread(self._write, data, offset)

    async def truncate(self, size: int) -> None:
        if size != 0:
            raise InvalidArgument(f"truncate to {size}: only truncate to 0 is supported")
        await asyncio.to_thread(self._locked, self._truncate)

    async def commit(self, size: int = 0, expected: str = "") -> str:
        return await asyncio.to_thread(self._commit, size, expected)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    # -- worker-thread side ------------------------------------------------------------

    def _locked(self, fn: Callable[[], None]) -> None:
        with self._mu:
            self._check_open()
            fn()

    def _check_open(self) -> None:
        if self.closed:
            raise FailedPrecondition(f"writer for ref {self._ref} is closed")

    def _truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        self._offset = 0
        self._hash = hashlib.sha256()
        self._updated_at = now()

    def _write(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        with self._mu:
            self._check_open()
            if offset == 0 and self._offset > 0:
                self._truncate()  # a client starting over, as containerd's Write allows
            elif offset != self._offset:
                raise InvalidArgument(f"write @{offset} must occur at current offset {self._offset}")
            view = memoryview(data).cast("B")
            written = 0
            try:
                while written < len(view):
                    written += os.pwrite(self._fd, view[written:], self._offset + written)
            except OSError as exc:
                # Cut the file back so it again matches the offset and the running hash.
                try:
                    os.ftruncate(self._fd, self._offset)
                except OSError:
                    log.warning("ref %s: could not cut back a failed write", self._ref)
                raise disk_error(exc, f"write to ingest ref {quote(self._ref)}") from exc
            self._hash.update(view)
            self._offset += written
            self._updated_at = now()
            return self._offset

    def _commit(self, size: int, expected: str) -> str:
        with self._mu:
            self._check_open()
            try:
                return self._publish(size, expected)
            finally:
                self._release()  # commit always closes the writer, as in containerd

    def _publish(self, size: int, expected: str) -> str:
        if size < 0:
            raise InvalidArgument(f"commit size {size} must not be negative")
        if expected:
            parse_digest(expected)
        size = size or self._total
        expected = expected or self._expected
        what = f"commit ingest ref {quote(self._ref)}"
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise disk_error(exc, what) from exc
        if size > 0 and size != self._offset:
            raise FailedPrecondition(f"unexpected commit size {self._offset}, expected {size}")
        dgst = self.digest()
        if expected and expected != dgst:
            raise FailedPrecondition(f"unexpected commit digest {dgst}, expected {expected}")
        if not ingest.still_ours(self._paths, self._fd):
            raise NotFound(f"ingest ref {quote(self._ref)} (aborted while writing)")

        target = self._blobs / dgst.partition(":")[2]
        try:
            created = not self._blobs.is_dir()
            os.makedirs(self._blobs, exist_ok=True)
            if created:  # make the new directories themselves durable
                ingest.fsync_dir(self._blobs.parent)
                ingest.fsync_dir(self._blobs.parent.parent)
        except OSError as exc:
            raise disk_error(exc, what) from exc
        if os.path.lexists(target):
            self._discard()
            raise AlreadyExists(f"content {dgst}")
        # Read-only before it becomes visible: a blob is never writable under its name.
        os.fchmod(self._fd, 0o444)
        try:
            self._link(target)
        except FileExistsError:
            self._discard()  # another writer published the same bytes first
            raise AlreadyExists(f"content {dgst}") from None
        except OSError as exc:
            os.fchmod(self._fd, 0o644)  # still an ingest: keep it writable for a resume
            raise disk_error(exc, what) from exc
        try:
            os.utime(target)  # created_at = commit time, not the time of the first write
            ingest.fsync_dir(self._blobs)
        except OSError:
            log.warning("blob %s committed but its times or directory entry may not be durable", dgst)
        self._discard()
        return dgst

    def _link(self, target: Path) -> None:
        # link() never replaces an existing name, so two racing commits of the same bytes
        # see exactly one winner; rename() is the fallback where hard links are refused.
        try:
            os.link(self._paths.data, target)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "blob exists", str(target)) from None
            os.rename(self._paths.data, target)

    def _discard(self) -> None:
        if not ingest.remove_dir(self._paths.dir):
            log.debug("ingest of ref %s was already gone", self._ref)

    def _close(self) -> None:
        with self._mu:
            if self.closed:
                return
            try:
                os.fsync(self._fd)
                if ingest.still_ours(self._paths, self._fd):
                    stamp = ingest.format_time(self._updated_at)
                    ingest.write_small_file(self._paths.meta("updatedat"), stamp)
            except OSError as exc:
                log.warning("closing ingest ref %s: %s (the data on disk is kept as is)", self._ref, exc)
            finally:
                self._release()


def open_writer(*, ref: str, paths: IngestPaths, blobs: Path, total: int, expected: str) -> LocalWriter:
    """Begin or resume the ingest at `paths` (blocking; the caller validated the arguments)."""
    if expected and os.path.lexists(blobs / expected.partition(":")[2]):
        raise AlreadyExists(f"content {expected}")
    fd = ingest.open_locked(paths, ref)
    fresh = False
    try:
        meta = ingest.read_meta(paths)
        resumable = (
            meta is not None
            and meta.ref == ref
            and not (total and meta.total and total != meta.total)
            and not (expected and meta.expected and expected != meta.expected)
        )
        if meta is not None and resumable:
            hasher = hashlib.sha256()
            # Resuming means re-hashing what is on disk: sha256 state cannot be saved.
            offset = hash_fd(fd, hasher)
            if (total and not meta.total) or (expected and not meta.expected):
                ingest.write_meta(paths, ref, total or meta.total, expected or meta.expected, meta.started_at)
            return LocalWriter(
                ref=ref,
                fd=fd,
                paths=paths,
                blobs=blobs,
                offset=offset,
                hasher=hasher,
                total=total or meta.total,
                expected=expected or meta.expected,
                started_at=meta.started_at,
                updated_at=max(meta.updated_at, ingest.mtime(os.fstat(fd))),
            )
        if meta is not None:
            log.info("ingest ref %s: total or expected digest changed, restarting it", ref)
        # New, half-made or contradicted ingest: start from zero bytes.
        fresh = True
        os.ftruncate(fd, 0)
        started = now()
        ingest.write_meta(paths, ref, total, expected, started)
        return LocalWriter(
            ref=ref,
            fd=fd,
            paths=paths,
            blobs=blobs,
            offset=0,
            hasher=hashlib.sha256(),
            total=total,
            expected=expected,
            started_at=started,
            updated_at=started,
        )
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            if fresh:  # a half-made ingest holds nothing worth resuming; free its space
                ingest.remove_dir(paths.dir)
            raise disk_error(exc, f"start ingest ref {quote(ref)}") from exc
        raise
