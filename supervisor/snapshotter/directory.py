"""The lifecycle shared by snapshotters that keep one directory per snapshot.

Layout under the snapshotter's root::

    metadata.db            records (storage.MetaStore), SQLite in WAL mode
    snapshots/<id>/fs      the snapshot's files (overlay: its upper dir)
    snapshots/<id>/work    overlay's work dir (active snapshots only)
    snapshots/.new-*       a snapshot being staged, renamed to <id> on success
    snapshots/.rm-*        a directory being deleted

Concurrency: one thread owns the database, so transactions never interleave;
file work (copies, measuring, deleting) runs in other worker threads so a long
copy does not hold up `stat`. Nothing blocking runs on the event loop.

A full disk: creations fail with ResourceExhausted and leave nothing staged. Removal
must work all the same, since it is what gives the space back: when its record
deletion finds the disk full (SQLite cannot append to its log), `on_full(root)` is
asked for room (the daemon releases its disk reserve there) and the deletion is
retried once. Directories are deleted through directory descriptors (`remove_tree`),
so trees of any depth the kernel let us build go too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Self, TypeVar

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import (
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    unexpected,
)
from dockyard_common.types import Info, Kind, Mount, Usage
from supervisor.diskreserve import free_bytes, retake_released, sqlite_disk_full

from .base import WalkFilter
from .storage import MetaStore, Record, check_key, check_labels
from .tree import disk_usage, remove_tree

log = logging.getLogger(__name__)

T = TypeVar("T")

_STAGING_PREFIX = ".new-"
_REMOVING_PREFIX = ".rm-"
# SQLite's unix VFS refuses longer paths (mxPathname); keep room for "-wal".
_SQLITE_MAX_PATH = 500


def _os_error(e: OSError, what: str) -> DockyardError:
    err = unexpected(e)  # ResourceExhausted when out of space, files or memory, else Internal
    return type(err)(f"{what}: {err.message}")


async def _finish(executor: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn` in `executor`; if cancelled, wait for it before re-raising.

    A thread cannot be interrupted, so a caller's cleanup after cancellation must
    see the work's final effect (a renamed directory, a committed record).
    """
    return await uninterrupted(asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args)))


class DirectorySnapshotter:
    """Records, staging, removal and cleanup; subclasses decide contents and mounts."""

    name: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike[str], *, on_full: Callable[[str], bool] | None = None) -> None:
        """Open (creating if needed) the snapshotter rooted at `root`. Blocks: see `open`.

        `on_full(root)`, called from the database thread when a removal finds the disk full,
        should make room there and say whether it did (see the module docstring)."""
        self.root = os.path.abspath(os.fspath(root))
        self._snapshots_dir = os.path.join(self.root, "snapshots")
        db_path = os.path.join(self.root, "metadata.db")
        if len(os.fsencode(db_path)) > _SQLITE_MAX_PATH:
            raise InvalidArgument(
                f"snapshotter root {self.root!r} is too long: SQLite opens paths of at most 512 bytes"
            )
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.makedirs(self._snapshots_dir, mode=0o700, exist_ok=True)
        self.on_full = on_full
        try:
            self._store = MetaStore(db_path)
        except sqlite3.Error as e:
            raise self._sqlite_error(e) from None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"snapshotter-{self.name}-db")
        self._staging: set[str] = set()
        self._closed = False

    @classmethod
    async def open(cls, root: str | os.PathLike[str], **kwargs: Any) -> Self:
        """Construct off the event loop (the constructor touches the disk)."""
        return await _finish(None, functools.partial(cls, root, **kwargs))

    # -- hooks for subclasses (called in worker threads) -----------------------

    def _populate(self, staged: str, kind: Kind, parent_ids: tuple[int, ...], labels: dict[str, str]) -> None:
        """Fill a freshly staged `<staged>/fs` (and any sibling dirs) for a new snapshot."""

    def _mounts_for(self, rec: Record) -> list[Mount]:
        """Mounts of an active snapshot or view; may raise ResourceExhausted."""
        raise NotImplementedError

    def _measure(self, rec: Record) -> Usage:
        """Usage of an active snapshot's own changes, excluding its parents."""
        return disk_usage(self._fs(rec.id))

    def _release(self) -> None:
        """Release subclass resources at close."""

    # -- paths -------------------------------------------------------------------

    def _dir(self, sid: int) -> str:
        return os.path.join(self._snapshots_dir, str(sid))

    def _fs(self, sid: int) -> str:
        return os.path.join(self._snapshots_dir, str(sid), "fs")

    def _hidden(self, label: str) -> str:
        return os.path.join(self._snapshots_dir, f"{_REMOVING_PREFIX}{label}-{secrets.token_hex(4)}")

    # -- plumbing ------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise FailedPrecondition(f"{self.name} snapshotter at {self.root} is closed")
        try:
            return await _finish(self._pool, fn, *args)
        except sqlite3.Error as e:
            raise self._sqlite_error(e) from None
        except OSError as e:
            raise _os_error(e, f"{self.name} snapshotter {self.root}") from e

    def _sqlite_error(self, e: sqlite3.Error) -> DockyardError:
        if sqlite_disk_full(e, self.root):
            return ResourceExhausted(f"snapshot metadata {self.root}: no space left on device")
        return Internal(f"snapshot metadata {self.root}: {e}")

    def _freeing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write that frees space; on a full disk, once more in the room `on_full` makes."""
        try:
            return fn(*args)
        except sqlite3.Error as e:
            # No reserve to release, but room another thread's release left: worth the retry too.
            if not (sqlite_disk_full(e, self.root) and self.on_full is not None
                    and (self.on_full(self.root) or free_bytes(self.root) >= 256 << 10)):
                raise
        log.warning("%s snapshotter %s: disk full; retrying a removal in the reserved room", self.name, self.root)
        try:
            return fn(*args)
        finally:
            retake_released()  # the room was for this removal: back into the reserve at once

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self._store.read():
            return fn(*args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        with self._store.write():
            return fn(*args)

    def _delete(self, path: str) -> None:
        try:
            remove_tree(path)
        except OSError as e:
            # The record is gone already; a later cleanup() retries the hidden dir.
            log.warning("failed to remove snapshot directory %s: %s", path, e)

    # -- the Snapshotter protocol --------------------------------------------------

    async def stat(self, key: str) -> Info:
        check_key(key)
        _, info, _ = await self._db(self._read, self._store.info, key)
        return info

    async def update(self, info: Info, fieldpaths: list[str] | None = None) -> Info:
        check_key(info.name)
        return await self._db(self._write, self._store.update, info, list(fieldpaths or ()))

    async def kind_of_id(self, sid: int) -> Kind | None:
        """The kind of the snapshot kept in `<root>/snapshots/<sid>` (the Differ asks before it
        writes there); None when no snapshot has that directory."""
        return await self._db(self._read, self._store.kind_of, sid)

    async def usage(self, key: str) -> Usage:
        check_key(key)
        rec, usage = await self._db(self._read, self._recorded_usage, key)
        if rec.kind != Kind.ACTIVE:
            return usage
        try:
            return await _finish(None, self._measure, rec)
        except OSError as e:
            raise _os_error(e, f"usage of snapshot {key}") from e

    def _recorded_usage(self, key: str) -> tuple[Record, Usage]:
        return self._store.record(key), self._store.info(key)[2]

    async def mounts(self, key: str) -> list[Mount]:
        check_key(key)
        return await self._db(self._read_mounts, key)

    def _read_mounts(self, key: str) -> list[Mount]:
        with self._store.read():
            rec = self._store.active_record(key)
        return self._mounts_for(rec)

    async def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return await self._create(Kind.VIEW, key, parent, labels)

    async def _create(self, kind: Kind, key: str, parent: str, labels: dict[str, str] | None) -> list[Mount]:
        check_key(key)
        if parent:
            check_key(parent, "parent")
        labels = check_labels(labels)
        # Fail fast, before any copying, on what the insert would refuse anyway.
        parent_ids = await self._db(self._read, self._precheck, key, parent)
        staged = os.path.join(self._snapshots_dir, _STAGING_PREFIX + secrets.token_hex(8))
        self._staging.add(staged)
        try:
            try:
                await _finish(None, self._stage, staged, kind, parent_ids, labels)
            except OSError as e:
                raise _os_error(e, f"failed to create snapshot {key}") from e
            return await self._db(self._insert, kind, key, parent, labels, staged)
        except BaseException:
            await _finish(None, self._delete, staged)
            raise
        finally:
            self._staging.discard(staged)

    def _precheck(self, key: str, parent: str) -> tuple[int, ...]:
        parent_ids = self._store.parent_chain(parent)
        self._store.check_free(key)
        return parent_ids

    def _stage(self, staged: str, kind: Kind, parent_ids: tuple[int, ...], labels: dict[str, str]) -> None:
        os.mkdir(staged, 0o700)
        fs = os.path.join(staged, "fs")
        os.mkdir(fs)
        os.chmod(fs, 0o755)  # not left to the umask: a container's / is 0755
        self._populate(staged, kind, parent_ids, labels)

    def _insert(self, kind: Kind, key: str, parent: str, labels: dict[str, str], staged: str) -> list[Mount]:
        final: str | None = None
        try:
            with self._store.write():
                rec = self._store.create(kind, key, parent, labels)
                final = self._dir(rec.id)
                if os.path.lexists(final):
                    # Left by a crash after a rename whose transaction never committed;
                    # no record owns it, so it is an orphan.
                    os.rename(final, self._hidden(f"orphan-{rec.id}"))
                os.rename(staged, final)
                mounts = self._mounts_for(rec)  # in place: they may depend on what _populate wrote
        except BaseException:
            if final is not None and os.path.lexists(final) and not os.path.lexists(staged):
                os.rename(final, staged)  # back to staging: the caller discards it
            raise
        return mounts

    async def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        check_key(name, "name")
        check_key(key)
        labels = check_labels(labels)
        rec = await self._db(self._read, self._commit_precheck, name, key)
        try:
            usage = await _finish(None, self._measure, rec)
        except OSError as e:
            raise _os_error(e, f"usage of snapshot {key}") from e
        await self._db(self._write, self._store.commit, key, name, usage, labels, rec.id)

    def _commit_precheck(self, name: str, key: str) -> Record:
        rec = self._store.record(key)
        if rec.kind != Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key!r} is not active")
        self._store.check_free(name)
        return rec

    async def remove(self, key: str) -> None:
        check_key(key)
        hidden = await self._db(self._freeing, self._remove_record, key)
        if hidden is not None:
            await _finish(None, self._delete, hidden)

    def _remove_record(self, key: str) -> str | None:
        moved: tuple[str, str] | None = None
        try:
            with self._store.write():
                sid = self._store.remove(key)
                path = self._dir(sid)
                if os.path.lexists(path):
                    # Hide first, inside the transaction: if the commit fails the
                    # directory comes back; once it succeeds no id names it.
                    moved = (path, self._hidden(str(sid)))
                    os.rename(*moved)
        except BaseException:
            if moved is not None:
                os.rename(moved[1], moved[0])
            raise
        return None if moved is None else moved[1]

    async def walk(self, filter_fn: WalkFilter | None = None) -> AsyncIterator[Info]:
        infos = await self._db(self._read, self._store.infos)
        for info in infos:
            if filter_fn is None or filter_fn(info):
                yield info

    async def cleanup(self) -> None:
        doomed = await self._db(self._collect_orphans, frozenset(self._staging))
        for path in doomed:
            await _finish(None, self._delete, path)

    def _collect_orphans(self, staging: frozenset[str]) -> list[str]:
        with self._store.read():
            ids = self._store.ids()
        doomed = []
        for entry in os.listdir(self._snapshots_dir):
            path = os.path.join(self._snapshots_dir, entry)
            if path in staging or (entry.isdigit() and int(entry) in ids):
                continue
            if entry.startswith(_REMOVING_PREFIX):
                doomed.append(path)
                continue
            hidden = self._hidden(f"orphan-{entry}")
            os.rename(path, hidden)
            doomed.append(hidden)
        return doomed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Queued after every call already submitted, so those finish first.
        await loop.run_in_executor(self._pool, self._close_sync)
        self._pool.shutdown(wait=False)

    def _close_sync(self) -> None:
        try:
            self._release()
        finally:
            self._store.close()
