"""SQLite metadata database, run off the event loop.

One connection, owned by one worker thread: SQLite serialises writers anyway, and a
single thread means no connection is ever shared between threads. Every call runs in
a transaction; writes use BEGIN IMMEDIATE so a reader-turned-writer cannot deadlock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from supervisor.errors import Internal
from supervisor.metadata.schema import MIGRATIONS

T = TypeVar("T")
log = logging.getLogger(__name__)


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


class Database:
    """The daemon's metadata.db. Open with `await Database.open(path)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
    async def open(cls, path: Path) -> Database:
        db = cls(path)
        await db._call(db._open)
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
                conn.execute("ROLLBACK")
                raise
            log.info("metadata schema migrated to version %d", version)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _transact(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._conn
        assert conn is not None, "database is closed"
        while self._unwatched:
            self._unwatched.pop()._install(conn)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in a read transaction."""
        return await self._call(lambda: self._transact(fn, write=False))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in a write transaction: all of it lands, or none of it."""
        return await self._call(lambda: self._transact(fn, write=True))

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._call(_close)
        self._executor.shutdown(wait=True)
