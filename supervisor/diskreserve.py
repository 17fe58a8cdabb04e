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

RESERVE_NAME = ".dockyard-reserve"
DEFAULT_SIZE = 8 << 20
RECHECK_SECONDS = 0.5
MAX_RECHECK_SECONDS = 4.0

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
        self._released: set[int] = set()
        self._mu = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def released(self) -> list[Path]:
        """Reserve files not in place now."""
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
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                log.warning("cannot release the disk reserve %s: %s", path, exc)
                return False
        log.warning("released the disk reserve %s (%d bytes): %s", path, self.size, why)
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: the daemon is stopping
                pass
        return True

    def refill(self) -> None:
        """Preallocate the reserves that are out, where space has come back."""
        with self._mu:
            pending = [(dev, self._files[dev]) for dev in self._released]
        for dev, path in pending:
            try:
                if free_bytes(path.parent) < 2 * self.size:
                    continue
            except OSError:
                continue
            if _allocate(path, self.size):
                with self._mu:
                    self._released.discard(dev)
                log.info("disk reserve %s in place (%d bytes)", path, self.size)

    async def run(self) -> None:
        """Refill released reserves once space comes back, until cancelled: checked RECHECK_SECONDS
        after a release, then less and less often (up to MAX_RECHECK_SECONDS) while the disk
        stays full, so a filesystem that never has room costs a statvfs every few seconds."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        pause = RECHECK_SECONDS
        while True:
            if not self.released:
                self._wake.clear()
                await self._wake.wait()
                pause = RECHECK_SECONDS
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # a new release starts the short pauses again
                await asyncio.wait_for(self._wake.wait(), pause)
                pause = RECHECK_SECONDS
            await asyncio.to_thread(self.refill)
            pause = min(pause * 2, MAX_RECHECK_SECONDS)


def _size_of(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


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
