"""SQLite metadata database, run off the event loop.

One connection, owned by one worker thread: SQLite serialises writers anyway, and a
single thread means no connection is ever shared between threads. Every call runs in
a transaction; writes use BEGIN IMMEDIATE so a reader-turned-writer cannot deadlock.

A full disk: SQLite then fails the write with SQLITE_FULL (usually at COMMIT, when the log
frames are appended). The transaction is rolled back and the call fails with
ResourceExhausted. A write that frees space (`write(..., frees=True)`: deletions) first asks
`on_full` for room (the daemon's `DiskReserve.release`) and, given some, runs again: so
removing things works on a disk that the failed operation filled. Once it ran, what is left of
that room goes back into the reserve (`retake_released`), so the next deletion finds one too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, TypeVar

from dockyard_common.errors import Internal, ResourceExhausted
from supervisor.diskreserve import free_bytes, retake_released, sqlite_disk_full
from supervisor.metadata.schema import MIGRATIONS

T = TypeVar("T")
K = TypeVar("K")
log = logging.getLogger(__name__)
ROOM_TO_RETRY = 256 << 10  # free bytes that make a deletion refused for want of room worth a retry


class Watch:
    """`generation`, moved by every change to some tables: an in-memory copy of them read at
    generation g (read in the db thread, inside the transaction) is current while
    `generation == g`. Temporary triggers on the daemon's one connection move it, inside the
    writing transaction, so it has moved before the writer resumes; cascaded deletes count."""

    def __init__(self, name: str, tables: tuple[str, ...]) -> None:
        self.name = name
        self.tables = tables
        self.generation = 0

    def _bump(self) -> None:  # called by SQLite, in the db thread
        self.generation += 1

    def _install(self, conn: sqlite3.Connection) -> None:
        name = self.name
        conn.create_function(name, 0, self._bump)
        for table in self.tables:
            for op in ("INSERT", "UPDATE", "DELETE"):
                conn.execute(f"CREATE TEMP TRIGGER {name}_{table}_{op.lower()} "
                             f"AFTER {op} ON {table} BEGIN SELECT {name}(); END")


class ReadCache(Generic[K, T]):
    """Results of a read per key (a namespace), reused while `watch` has not moved: List calls
    then cost no db thread hop and no row decoding. Why: with many concurrent clients every
    List queued behind the one db thread, and decoding rows there held the GIL against the
    event loop (bench/rpc.py --mixed). Values are shared between callers: read-only.
    At most `size` keys are kept (the oldest dropped)."""

    def __init__(self, db: Database, watch: Watch, size: int = 64) -> None:
        self.db = db
        self.watch = watch
        self.size = size
        self._entries: dict[K, tuple[int, T]] = {}

    async def get(self, key: K, fn: Callable[[sqlite3.Connection], T]) -> T:
        hit = self._entries.get(key)
        if hit is not None and hit[0] == self.watch.generation:
            return hit[1]

        def tx(conn: sqlite3.Connection) -> tuple[int, T]:
            # read in the db thread, the only writer: this generation matches these rows
            return self.watch.generation, fn(conn)

        generation, value = await self.db.read(tx)
        self._entries.pop(key, None)
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (generation, value)
        return value


class Database:
    """The daemon's metadata.db. Open with `await Database.open(path)`."""

    def __init__(self, path: Path, on_full: Callable[[Path], bool] | None = None) -> None:
        self.path = path
        # Called (in the db thread) when a freeing write finds the disk full; True: room was made.
        self.on_full = on_full
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-db")
        self._conn: sqlite3.Connection | None = None
        self._unwatched: list[Watch] = []  # installed by the next transaction, in the db thread
        self._watches = itertools.count()

    def watch(self, *tables: str) -> Watch:
        """A `Watch` on `tables`, in force from the next transaction on."""
        watch = Watch(f"dockyard_changed_{next(self._watches)}", tables)
        self._unwatched.append(watch)
        return watch

    @classmethod
    async def open(cls, path: Path, on_full: Callable[[Path], bool] | None = None) -> Database:
        db = cls(path, on_full)
        try:
            await db._call(db._open)
        except sqlite3.Error as exc:
            await db.close()
            if sqlite_disk_full(exc, path.parent):
                raise ResourceExhausted(f"metadata database {path}: no space left on device ({exc})") from None
            raise Internal(f"metadata database {path}: {exc}") from None
        return db

    def _open(self) -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every transaction
        # boundary is explicit and visible here.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):
            raise Internal(
                f"metadata schema version {current} at {self.path} is newer than this dockyardd "
                f"supports ({len(MIGRATIONS)}); upgrade dockyardd"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in script:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            log.info("metadata schema migrated to version %d", version)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _transact(self, fn: Callable[[sqlite3.Connection], T], write: bool, frees: bool = False) -> T:
        try:
            return self._once(fn, write)
        except sqlite3.Error as exc:
            if not sqlite_disk_full(exc, self.path.parent):
                raise
            if frees and self.on_full is not None and (self.on_full(self.path) or self._room_came()):
                log.warning("metadata database: disk full; retrying a deletion in the reserved room")
                try:
                    return self._once(fn, write)
                except sqlite3.Error as again:
                    if not sqlite_disk_full(again, self.path.parent):
                        raise
                finally:
                    # The room was for this deletion: what it left goes back into the reserve
                    # now, before other writes take it and the next deletion finds none.
                    retake_released()
            raise ResourceExhausted(f"metadata database {self.path}: no space left on device") from None

    def _room_came(self) -> bool:
        """Whether the disk has room now although no reserve was released for us: another
        thread's deletion released it a moment ago (its room is for deletions, ours too)."""
        try:
            return free_bytes(self.path.parent) >= ROOM_TO_RETRY
        except OSError:
            return False

    def _once(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn
        assert conn is not None, "database is closed"
        while self._unwatched:
            self._unwatched.pop()._install(conn)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
            # Inside the try: COMMIT is where a full disk shows, and a failed COMMIT may leave
            # the transaction open, which would make every later BEGIN fail.
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in a read transaction."""
        return await self._call(lambda: self._transact(fn, write=False))

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, frees: bool = False) -> T:
        """Run `fn(conn)` in a write transaction: all of it lands, or none of it.

        `frees`: the write deletes things, so it may use the disk reserve (see the module
        docstring); `fn` may then run twice (the first attempt rolled back).
        """
        return await self._call(lambda: self._transact(fn, write=True, frees=frees))

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._call(_close)
        self._executor.shutdown(wait=True)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open: SQLite ends some on its own after an error
    (SQLITE_FULL among them), and a ROLLBACK then would fail and hide the first error."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("metadata database: rollback failed: %s", exc)
