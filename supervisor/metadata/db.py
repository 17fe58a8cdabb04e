"""SQLite metadata database, run off the event loop.

One connection, owned by one worker thread: SQLite serialises writers anyway, and a
single thread means no connection is ever shared between threads. Every call runs in
a transaction; writes use BEGIN IMMEDIATE so a reader-turned-writer cannot deadlock.
"""

from __future__ import annotations

import asyncio
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


class Database:
    """The daemon's metadata.db. Open with `await Database.open(path)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-db")
        self._conn: sqlite3.Connection | None = None
        # Bumped by every committed write (in the db thread, before the caller resumes): an
        # in-memory copy read at generation g is current while `generation == g`.
        self.generation = 0

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
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if write:
            self.generation += 1
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
