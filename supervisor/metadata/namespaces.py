"""Namespaces: the tenancy boundary every other record lives in.

A namespace exists once it is created explicitly or once the first object is created
in it (`ensure`, called inside the object's own write transaction), as in containerd.
"""

from __future__ import annotations

import builtins
import sqlite3
from dataclasses import dataclass, field

from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from supervisor import identifiers
from supervisor import labels as labelrules
from supervisor.metadata.db import Database
from supervisor.timeutil import now_iso


# What keeps a namespace from being deleted: each entry names what it finds in a
# namespace (in containerd's words). Add a table here with the migration that creates it.
def _occupants(conn: sqlite3.Connection, name: str) -> list[str]:
    found = []
    for what, table in (("images", "images"), ("blobs", "content"), ("containers", "containers"),
                        ("leases", "leases")):
        if conn.execute(f"SELECT 1 FROM {table} WHERE namespace=? LIMIT 1", (name,)).fetchone():
            found.append(what)
    rows = conn.execute("SELECT DISTINCT snapshotter FROM snapshots WHERE namespace=? ORDER BY snapshotter",
                        (name,))
    found += [f'snapshots on "{r[0]}" snapshotter' for r in rows]
    return found


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


def ensure(conn: sqlite3.Connection, name: str) -> None:
    """Create `name` if it does not exist yet; call inside a write transaction."""
    conn.execute(
        "INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?, ?)", (name, now_iso())
    )


def _labels(conn: sqlite3.Connection, name: str) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM namespace_labels WHERE namespace=?", (name,))
    return {r["key"]: r["value"] for r in rows}


def _exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM namespaces WHERE name=?", (name,)).fetchone() is not None


def _set_labels(conn: sqlite3.Connection, name: str, values: dict[str, str]) -> None:
    conn.execute("DELETE FROM namespace_labels WHERE namespace=?", (name,))
    conn.executemany(
        "INSERT INTO namespace_labels (namespace, key, value) VALUES (?, ?, ?)",
        [(name, k, v) for k, v in values.items() if v != ""],
    )


class NamespaceStore:
    """Namespaces, read from an in-memory copy of the (small) tables that any change to them
    invalidates: Get and List are the hottest calls and need no db thread hop."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._watch = db.watch("namespaces", "namespace_labels")
        self._cached: tuple[int, dict[str, Namespace]] | None = None

    async def _all(self) -> dict[str, Namespace]:
        cached = self._cached
        if cached is not None and cached[0] == self._watch.generation:
            return cached[1]

        def tx(conn: sqlite3.Connection) -> tuple[int, dict[str, Namespace]]:
            # read in the db thread, the only writer, so this generation matches these rows
            generation = self._watch.generation
            names = [r["name"] for r in conn.execute("SELECT name FROM namespaces ORDER BY name")]
            return generation, {n: Namespace(n, _labels(conn, n)) for n in names}

        self._cached = await self.db.read(tx)
        return self._cached[1]

    async def get(self, name: str) -> Namespace:
        identifiers.validate_namespace(name)
        ns = (await self._all()).get(name)
        if ns is None:
            raise NotFound(f'namespace "{name}"')
        return Namespace(ns.name, dict(ns.labels))

    async def list(self) -> builtins.list[Namespace]:
        return [Namespace(ns.name, dict(ns.labels)) for ns in (await self._all()).values()]

    async def create(self, ns: Namespace) -> Namespace:
        identifiers.validate_namespace(ns.name)
        labelrules.validate(ns.labels)

        def tx(conn: sqlite3.Connection) -> Namespace:
            if _exists(conn, ns.name):
                raise AlreadyExists(f'namespace "{ns.name}"')
            ensure(conn, ns.name)
            _set_labels(conn, ns.name, ns.labels)
            return Namespace(ns.name, _labels(conn, ns.name))

        return await self.db.write(tx)

    async def update(self, ns: Namespace, paths: builtins.list[str]) -> Namespace:
        """Replace all labels (no paths, or the path `labels`) or the `labels.<key>` ones named."""
        identifiers.validate_namespace(ns.name)
        labelrules.validate(ns.labels)
        for path in paths:
            if path != "labels" and not path.startswith("labels."):
                raise InvalidArgument(f'cannot update "{path}" field on namespace "{ns.name}"')

        def tx(conn: sqlite3.Connection) -> Namespace:
            if not _exists(conn, ns.name):
                raise NotFound(f'namespace "{ns.name}"')
            current = _labels(conn, ns.name)
            if not paths or "labels" in paths:
                current = dict(ns.labels)
            for path in paths:
                if path.startswith("labels."):
                    key = path.split(".", 1)[1]
                    if ns.labels.get(key, ""):
                        current[key] = ns.labels[key]
                    else:
                        current.pop(key, None)
            _set_labels(conn, ns.name, current)
            return Namespace(ns.name, _labels(conn, ns.name))

        return await self.db.write(tx)

    async def delete(self, name: str) -> None:
        identifiers.validate_namespace(name)

        def tx(conn: sqlite3.Connection) -> None:
            if not _exists(conn, name):
                raise NotFound(f'namespace "{name}"')
            held = _occupants(conn, name)
            if held:
                raise FailedPrecondition(
                    f'namespace "{name}" must be empty, but it still has {", ".join(held)}'
                )
            # unfinished ingests go with the namespace, as in containerd (the collector
            # removes their data once no record names it)
            conn.execute("DELETE FROM ingests WHERE namespace=?", (name,))
            conn.execute("DELETE FROM namespaces WHERE name=?", (name,))

        await self.db.write(tx, frees=True)
