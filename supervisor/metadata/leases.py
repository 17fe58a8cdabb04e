"""Leases: named, optionally expiring holds that keep resources from garbage collection.

Other stores attach what a call creates to the call's lease with `attach`, inside their
own write transaction, so a resource and its lease reference land together or not at all.
Resource types are containerd's: "content", "ingests", "snapshots/<snapshotter>".
"""

from __future__ import annotations

import builtins
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from supervisor import identifiers
from supervisor import labels as labelrules
from supervisor.errors import AlreadyExists, InvalidArgument, NotFound
from supervisor.metadata import namespaces
from supervisor.metadata.db import Database
from supervisor.timeutil import now_iso, parse_iso

RESOURCE_TYPES = ("content", "ingests")
SNAPSHOT_PREFIX = "snapshots/"


@dataclass
class Lease:
    id: str
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    id: str
    type: str


def validate_resource(res: Resource) -> None:
    if res.type not in RESOURCE_TYPES and not (
        res.type.startswith(SNAPSHOT_PREFIX) and len(res.type) > len(SNAPSHOT_PREFIX)
    ):
        raise InvalidArgument(f"unsupported resource type {res.type}")
    if not res.id:
        raise InvalidArgument("resource id must not be empty")


def _exists(conn: sqlite3.Connection, ns: str, lease: str) -> bool:
    return conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lease)).fetchone() is not None


def attach(conn: sqlite3.Connection, ns: str, lease: str, res: Resource) -> None:
    """Hold `res` under `lease` (no-op for an empty lease id); call inside a write transaction."""
    if not lease:
        return
    if not _exists(conn, ns, lease):
        raise NotFound(f'lease "{lease}"')
    conn.execute("INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?)",
                 (ns, lease, res.type, res.id))


def detach_everywhere(conn: sqlite3.Connection, ns: str, res: Resource) -> None:
    """Forget `res` in every lease of `ns` (it was deleted)."""
    conn.execute("DELETE FROM lease_resources WHERE namespace=? AND type=? AND id=?", (ns, res.type, res.id))


def _load(conn: sqlite3.Connection, ns: str, row: sqlite3.Row) -> Lease:
    labels = {r["key"]: r["value"] for r in conn.execute(
        "SELECT key, value FROM lease_labels WHERE namespace=? AND lease=?", (ns, row["id"]))}
    return Lease(row["id"], parse_iso(row["created_at"]), labels)


class LeaseStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, ns: str, lease_id: str, labels: dict[str, str]) -> Lease:
        identifiers.validate(lease_id, what="lease id")
        labelrules.validate(labels)

        def tx(conn: sqlite3.Connection) -> Lease:
            namespaces.ensure(conn, ns)
            if _exists(conn, ns, lease_id):
                raise AlreadyExists(f'lease "{lease_id}"')
            conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES (?, ?, ?)",
                         (ns, lease_id, now_iso()))
            conn.executemany("INSERT INTO lease_labels (namespace, lease, key, value) VALUES (?, ?, ?, ?)",
                             [(ns, lease_id, k, v) for k, v in labels.items()])
            row = conn.execute("SELECT * FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).fetchone()
            return _load(conn, ns, row)

        return await self.db.write(tx)

    async def delete(self, ns: str, lease_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).rowcount == 0:
                raise NotFound(f'lease "{lease_id}"')

        await self.db.write(tx)

    async def list(self, ns: str) -> builtins.list[Lease]:
        def tx(conn: sqlite3.Connection) -> builtins.list[Lease]:
            rows = conn.execute("SELECT * FROM leases WHERE namespace=? ORDER BY id", (ns,)).fetchall()
            return [_load(conn, ns, r) for r in rows]

        return await self.db.read(tx)

    async def add_resource(self, ns: str, lease_id: str, res: Resource) -> None:
        validate_resource(res)
        await self.db.write(lambda conn: attach(conn, ns, lease_id, res))

    async def delete_resource(self, ns: str, lease_id: str, res: Resource) -> None:
        validate_resource(res)

        def tx(conn: sqlite3.Connection) -> None:
            if not _exists(conn, ns, lease_id):
                raise NotFound(f'lease "{lease_id}"')
            conn.execute("DELETE FROM lease_resources WHERE namespace=? AND lease=? AND type=? AND id=?",
                         (ns, lease_id, res.type, res.id))

        await self.db.write(tx)

    async def list_resources(self, ns: str, lease_id: str) -> builtins.list[Resource]:
        def tx(conn: sqlite3.Connection) -> builtins.list[Resource]:
            if not _exists(conn, ns, lease_id):
                raise NotFound(f'lease "{lease_id}"')
            rows = conn.execute("SELECT type, id FROM lease_resources WHERE namespace=? AND lease=? "
                                "ORDER BY type, id", (ns, lease_id))
            return [Resource(r["id"], r["type"]) for r in rows]

        return await self.db.read(tx)
