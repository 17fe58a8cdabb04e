"""Room held back on the daemon's filesystems, so that freeing space works on a full disk.

Removing things needs a little space first: SQLite appends the deletion to its write-ahead
log before the rows are gone, and a database opened at start-up needs its shared-memory
index (`-shm`, 32 KiB). On a filesystem that a failed unpack or ingest filled to the last
block, those writes fail with SQLITE_FULL and nothing could ever be freed.

So the daemon keeps one reserve file of preallocated blocks (`RESERVE_NAME`, `DEFAULT_SIZE`)
on each filesystem that holds one of its databases. A write that frees space (a lease delete,
a snapshot or ingest removal, the collector's sweep) that fails because the disk is full
calls `release(path)`: the reserve on that filesystem is deleted and the write is retried in
the room it leaves. Once space has come back (at least two reserves' worth free: refilling
must not itself fill the disk), `refill` preallocates it again; `run` polls for that while a
reserve is out. At start-up `prepare` releases a reserve at once where the filesystem has less
than a reserve's worth free, so opening the databases and start-up's own small writes work.

The room a release gives is the reserve's, not new room for other writes: left free, a client
creating records (or a container's log) would take it within moments, and the next deletion,
with no reserve left to release, would fail like the first; nothing could then be removed
through the daemon. So it is taken back, up to the reserve's size, as soon as the write that
asked for it is done: by that write's thread (`retake_released`, which the metadata database
calls after its retry), else by `run` RETAKE_AFTER seconds after the release, and
RECHECK_SECONDS after a start-up release. SLACK is left free for writes in flight: start-up's
own, and deletions running at the same time in other threads (a failed build's cleanup removes
a lease and a snapshot at once), which would otherwise find the disk full and the reserve just
released by the other. A reserve short of its size is grown to it once two reserves' worth is
free; what others take of the slack each time is the most it shrinks by.
A reserve never made (a filesystem that had little room at the first start) is still only made
with that much free.

All methods but `run` block (statvfs, fallocate, unlink): call them from worker threads.
`release` is thread-safe: database threads call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("dockyard.reserve")
_here = threading.local()  # .released: {(id(reserve), dev): (reserve, dev)} this thread released

RESERVE_NAME = ".dockyard-reserve"
DEFAULT_SIZE = 8 << 20
RECHECK_SECONDS = 0.5
MAX_RECHECK_SECONDS = 4.0
RETAKE_AFTER = 0.1  # seconds after a release until the rest of its room is taken back
SLACK = 1 << 20  # bytes a taken-back reserve leaves free (for deletions in flight)
MIN_RETAKE = 64 << 10  # less than this free: nothing to take back

# SQLite's primary result codes for a full disk, and for an I/O error (a -shm file that cannot
# grow reports SQLITE_IOERR_SHMSIZE, whose primary code is SQLITE_IOERR).
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer could still allocate on the filesystem of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sqlite_disk_full(exc: BaseException, path: str | os.PathLike[str] | None = None) -> bool:
    """Whether `exc` is SQLite failing for want of disk space: SQLITE_FULL, or an I/O error
    while the filesystem of `path` has (almost) nothing left."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # raised by the module itself, not by SQLite
        return "database or disk is full" in str(exc)
    primary = code & 0xFF
    if primary == _SQLITE_FULL:
        return True
    if primary == _SQLITE_IOERR and path is not None:
        try:
            return free_bytes(path) < 1 << 20
        except OSError:
            return False
    return False


class DiskReserve:
    """One reserve file per filesystem among the directories given (see the module docstring)."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._files: dict[int, Path] = {}  # st_dev -> its reserve file
        self._released: set[int] = set()  # reserves not in place at their full size
        self._owed: set[int] = set()  # released by us: their room is taken back (`retake`)
        self._mu = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def released(self) -> list[Path]:
        """Reserve files not in place now (or short of their size)."""
        with self._mu:
            return sorted(self._files[dev] for dev in self._released)

    def prepare(self, directories: Iterable[str | os.PathLike[str]]) -> None:
        """Take charge of the filesystems of the existing `directories` (the first directory on
        each holds its reserve); release what a nearly full one holds, fill the others."""
        for directory in directories:
            try:
                dev = os.stat(directory).st_dev
            except FileNotFoundError:
                continue  # made later, on its parent's filesystem
            with self._mu:
                if dev in self._files:
                    continue
                self._files[dev] = Path(directory) / RESERVE_NAME
                self._released.add(dev)  # until refill (or the file found) says otherwise
        for dev, path in list(self._files.items()):
            have = _size_of(path)
            try:
                low = free_bytes(path.parent) < self.size
            except OSError:
                low = False
            if have and low:
                self._release_dev(dev, "the filesystem is full at start-up")
            elif have >= self.size:
                with self._mu:
                    self._released.discard(dev)
            elif have:  # one taken back short of its size by an earlier run
                with self._mu:
                    self._owed.add(dev)
        self.refill()

    def release(self, path: str | os.PathLike[str]) -> bool:
        """Give back the reserve on the filesystem of `path`; True if one was there to give."""
        try:
            dev = os.stat(path).st_dev
        except OSError:
            return False
        return self._release_dev(dev, f"{path}: disk full")

    def _release_dev(self, dev: int, why: str) -> bool:
        with self._mu:
            path = self._files.get(dev)
            if path is None:
                return False
            self._released.add(dev)
            have = _size_of(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.warning("cannot release the disk reserve %s: %s", path, exc)
                return False
            self._owed.add(dev)
        if not hasattr(_here, "released"):
            _here.released = {}
        _here.released[(id(self), dev)] = (self, dev)  # at most one entry each (a thread that never takes back)
        log.warning("released the disk reserve %s (%d bytes): %s", path, have, why)
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: the daemon is stopping
                pass
        return True

    def refill(self, retake: bool = False) -> None:
        """Preallocate the reserves that are out, where space has come back; with `retake`,
        also take back what is free (less SLACK) for those released by us (see the module
        docstring). Holds the lock: a release waits for it, so never unlinks a file half-made."""
        with self._mu:
            for dev in list(self._released):
                self._refill_dev(dev, SLACK if retake else None)

    def _refill_dev(self, dev: int, slack: int | None) -> None:
        """Under the lock: refill the reserve of `dev`, or take back what is free of it, less
        `slack` (None: only a refill)."""
        path = self._files[dev]
        try:
            free = free_bytes(path.parent)
        except OSError:
            return
        have = _size_of(path)
        if free + have >= 2 * self.size and _allocate(path, self.size):
            self._released.discard(dev)
            self._owed.discard(dev)
            log.info("disk reserve %s in place (%d bytes)", path, self.size)
        elif slack is not None and dev in self._owed and free - slack >= MIN_RETAKE:
            target = min(self.size, have + free - slack) // 4096 * 4096
            if target > have and _grow(path, target):
                log.info("disk reserve %s taken back: %d bytes of %d", path, _size_of(path), self.size)

    def _retake(self, dev: int) -> None:
        with self._mu:
            if dev in self._released:
                self._refill_dev(dev, SLACK)

    async def run(self) -> None:
        """Until cancelled: RETAKE_AFTER seconds after a release, take its room back; refill
        released reserves once space comes back, checked RECHECK_SECONDS after a release (or
        start-up), then less and less often (up to MAX_RECHECK_SECONDS) while the disk stays
        full, so a filesystem that never has room costs a statvfs every few seconds."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        pause = RECHECK_SECONDS
        while True:
            if not self.released:
                self._wake.clear()
                await self._wake.wait()
            if self._wake.is_set():  # a release: its write has the room; the rest goes back
                self._wake.clear()
                pause = RECHECK_SECONDS
                await asyncio.sleep(RETAKE_AFTER)
                await asyncio.to_thread(self.refill, True)
                continue  # released again meanwhile: take that back too
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
                continue
            await asyncio.to_thread(self.refill, True)
            pause = min(pause * 2, MAX_RECHECK_SECONDS)


def retake_released() -> None:
    """Called by a thread whose write asked for room (`DiskReserve.release`) once that write is
    done: the reserves it released take back what is free, up to their size, before any other
    write can take it."""
    released, _here.released = getattr(_here, "released", {}), {}
    for reserve, dev in released.values():
        reserve._retake(dev)


def _size_of(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def _grow(path: Path, size: int) -> bool:
    """Preallocate the reserve file at `path` (made if missing) to `size` bytes in place: only
    the blocks it lacks are taken. False if there is no room."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            log.warning("cannot take back the disk reserve %s: %s", path, exc)
        return False


def _allocate(path: Path, size: int) -> bool:
    """Preallocate `size` bytes at `path` (staged under another name); False if there is no room."""
    tmp = path.with_name(path.name + ".new")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # real blocks: a sparse file would give nothing back
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            log.warning("cannot create the disk reserve %s: %s", path, exc)
        return False
