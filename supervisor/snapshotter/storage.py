"""Snapshot records in SQLite: keys, internal ids, parents, kinds, labels, usage.

Synchronous by design: a snapshotter calls it from its one database thread, so
every transaction is serialised without locks. Keys are only ever column values;
directories on disk are named by the numeric `id`, which AUTOINCREMENT never
reuses once committed (a half-deleted directory can never be mistaken for a new
snapshot's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import EPOCH, Info, Kind, Usage

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT    NOT NULL UNIQUE,
    parent_id  INTEGER REFERENCES snapshots(id),
    kind       INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    inodes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (snapshot_id, name)
);
"""


@dataclass(slots=True, frozen=True)
class Record:
    """The storage view of a snapshot: its id and its ancestors' ids, nearest first."""

    id: int
    kind: Kind
    parent_ids: tuple[int, ...]


def _now_us() -> int:
    delta = datetime.now(EPOCH.tzinfo) - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def check_key(key: object, what: str = "key") -> str:
    """Reject what no snapshot may be called; any other string is acceptable."""
    if not isinstance(key, str):
        raise InvalidArgument(f"snapshot {what} must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidArgument(f"snapshot {what} must not be empty")
    if "\x00" in key:
        raise InvalidArgument(f"snapshot {what} {key!r} contains a NUL byte")
    return key


def check_labels(labels: dict[str, str] | None) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise InvalidArgument(f"labels must be a mapping, not {type(labels).__name__}")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise InvalidArgument(f"label {k!r}={v!r}: labels map non-empty strings to strings")
    # An empty value means "no label", as in containerd's bolt storage.
    return {k: v for k, v in labels.items() if v}


class MetaStore:
    """The records of one snapshotter, in `<root>/metadata.db`."""

    def __init__(self, path: str) -> None:
        # check_same_thread=False: opened by whichever thread constructs the
        # snapshotter, then used only from its database thread.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise FailedPrecondition(
                f"snapshot metadata {path} has schema version {version}, newer than {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            return  # nothing to write: opening must work on a full disk
        with self.write():
            # Statement by statement: executescript() would commit this transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction: committed on success, rolled back on any error."""
        # IMMEDIATE takes the write lock up front, so reads inside see what commits.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[None]:
        """One consistent read snapshot."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")

    # -- lookups (call inside read() or write()) ------------------------------

    def _row(self, key: str) -> tuple[int, int | None, int, int, int, int, int]:
        row = self._db.execute(
            "SELECT id, parent_id, kind, created_us, updated_us, size, inodes FROM snapshots WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise NotFound(f"snapshot {key} does not exist")
        return row

    def _key_of(self, sid: int | None) -> str:
        if sid is None:
            return ""
        row = self._db.execute("SELECT key FROM snapshots WHERE id = ?", (sid,)).fetchone()
        return "" if row is None else row[0]

    def _labels(self, sid: int) -> dict[str, str]:
        rows = self._db.execute("SELECT name, value FROM labels WHERE snapshot_id = ?", (sid,))
        return dict(rows.fetchall())

    def _put_labels(self, sid: int, labels: dict[str, str]) -> None:
        self._db.execute("DELETE FROM labels WHERE snapshot_id = ?", (sid,))
        self._db.executemany(
            "INSERT INTO labels (snapshot_id, name, value) VALUES (?, ?, ?)",
            [(sid, k, v) for k, v in labels.items() if v],
        )

    def _chain(self, sid: int | None) -> tuple[int, ...]:
        """`sid` and its ancestors, nearest first."""
        if sid is None:
            return ()
        rows = self._db.execute(
            """WITH RECURSIVE chain(id, parent_id, depth) AS (
                   SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
                   UNION ALL
                   SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.parent_id)
               SELECT id FROM chain ORDER BY depth""",
            (sid,),
        ).fetchall()
        return tuple(r[0] for r in rows)

    def info(self, key: str) -> tuple[int, Info, Usage]:
        sid, parent_id, kind, created, updated, size, inodes = self._row(key)
        info = Info(
            name=key,
            parent=self._key_of(parent_id),
            kind=Kind(kind),
            created_at=_to_datetime(created),
            updated_at=_to_datetime(updated),
            labels=self._labels(sid),
        )
        return sid, info, Usage(size=size, inodes=inodes)

    def record(self, key: str) -> Record:
        sid, parent_id, kind, *_ = self._row(key)
        return Record(id=sid, kind=Kind(kind), parent_ids=self._chain(parent_id))

    def active_record(self, key: str) -> Record:
        """The record of an active snapshot or view: what mounts can be made of."""
        rec = self.record(key)
        if rec.kind not in (Kind.ACTIVE, Kind.VIEW):
            raise FailedPrecondition(f"requested snapshot {key} not active or view")
        return rec

    def parent_chain(self, parent: str) -> tuple[int, ...]:
        """Ids of committed `parent` and its ancestors; () for the empty parent."""
        if not parent:
            return ()
        row = self._db.execute("SELECT id, kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
        if row is None:
            raise NotFound(f"parent snapshot {parent} does not exist")
        if row[1] != Kind.COMMITTED:
            raise InvalidArgument(f'parent "{parent}" is not committed snapshot')
        return self._chain(row[0])

    def check_free(self, key: str) -> None:
        if self._db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise AlreadyExists(f"snapshot {key!r}")

    def infos(self) -> list[Info]:
        rows = self._db.execute(
            """SELECT s.id, s.key, COALESCE(p.key, ''), s.kind, s.created_us, s.updated_us
               FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.id"""
        ).fetchall()
        labels: dict[int, dict[str, str]] = {}
        for sid, name, value in self._db.execute("SELECT snapshot_id, name, value FROM labels"):
            labels.setdefault(sid, {})[name] = value
        return [
            Info(
                name=key,
                parent=parent,
                kind=Kind(kind),
                created_at=_to_datetime(created),
                updated_at=_to_datetime(updated),
                labels=labels.get(sid, {}),
            )
            for sid, key, parent, kind, created, updated in rows
        ]

    def kind_of(self, sid: int) -> Kind | None:
        """The kind of the snapshot whose directory is `sid`; None for no snapshot."""
        row = self._db.execute("SELECT kind FROM snapshots WHERE id = ?", (sid,)).fetchone()
        return None if row is None else Kind(row[0])

    def ids(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}

    # -- changes (call inside write()) -----------------------------------------

    def create(self, kind: Kind, key: str, parent: str, labels: dict[str, str]) -> Record:
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            raise InvalidArgument(f"snapshot kind {kind} invalid; only Active or View can be created")
        parent_ids = self.parent_chain(parent)
        self.check_free(key)
        now = _now_us()
        cur = self._db.execute(
            "INSERT INTO snapshots (key, parent_id, kind, created_us, updated_us) VALUES (?, ?, ?, ?, ?)",
            (key, parent_ids[0] if parent_ids else None, int(kind), now, now),
        )
        sid = cur.lastrowid
        assert sid is not None
        self._put_labels(sid, labels)
        return Record(id=sid, kind=kind, parent_ids=parent_ids)

    def commit(self, key: str, name: str, usage: Usage, labels: dict[str, str], expect_id: int) -> None:
        sid, _, kind, *_ = self._row(key)
        if sid != expect_id:
            # The key was removed and re-created while its usage was measured.
            raise FailedPrecondition(f"snapshot {key!r} changed while being committed")
        if kind != Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key!r} is not active")
        self.check_free(name)
        now = _now_us()
        # Same id, so children-to-be and the directory follow without a rename.
        self._db.execute(
            "UPDATE snapshots SET key = ?, kind = ?, created_us = ?, updated_us = ?, size = ?, inodes = ?"
            " WHERE id = ?",
            (name, int(Kind.COMMITTED), now, now, usage.size, usage.inodes, sid),
        )
        self._put_labels(sid, labels)

    def remove(self, key: str) -> int:
        sid = self._row(key)[0]
        if self._db.execute("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (sid,)).fetchone():
            raise FailedPrecondition("cannot remove snapshot with child")
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
        return sid

    def update(self, info: Info, fieldpaths: list[str] | None) -> Info:
        sid, current, _ = self.info(info.name)
        new_labels = check_labels(info.labels)
        labels = dict(current.labels)
        if not fieldpaths:
            labels = new_labels
        for path in fieldpaths or ():
            if path == "labels":
                labels = dict(new_labels)
            elif path.startswith("labels.") and len(path) > len("labels."):
                name = path[len("labels.") :]
                if name in new_labels:
                    labels[name] = new_labels[name]
                else:
                    labels.pop(name, None)
            else:
                raise InvalidArgument(f'cannot update "{path}" field on snapshot "{info.name}"')
        now = _now_us()
        self._db.execute("UPDATE snapshots SET updated_us = ? WHERE id = ?", (now, sid))
        self._put_labels(sid, labels)
        current.labels = labels
        current.updated_at = _to_datetime(now)
        return current
