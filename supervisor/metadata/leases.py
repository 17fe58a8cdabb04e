"""Leases: named, optionally expiring holds that keep resources from garbage collection.

Words
    lease       a record in one namespace: an id, its creation time and labels. While it
                lives, everything it holds is a root for the garbage collector (`gc.py`).
    expiry      the label `containerd.io/gc.expire` (RFC 3339 time). Once that time has
                passed the lease no longer protects anything and the collector deletes it.
    resource    what a lease holds, typed as containerd types them: "content" (id: a
                digest), "ingests" (id: an ingest ref), "snapshots/<snapshotter>" (id: a
                snapshot key). Holding an id that does not exist (yet) is allowed.

Other stores attach what a call creates to the call's lease with `attach`, inside their
own write transaction, so a resource and its lease reference land together or not at all.

Lease ids are not identifiers: `ctr images mount` uses the mount directory (an absolute
path) as its lease id. Any non-empty text up to 4096 bytes without control characters
is accepted.

Errors: NotFound (unknown lease), AlreadyExists (create of an existing id),
InvalidArgument (bad id, labels, expiry, resource type or content digest),
NotImplementedYet (a resource type containerd does not know, as containerd answers).
"""

from __future__ import annotations

import base64
import builtins
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound, NotImplementedYet
from dockyard_common.goquote import go_quote
from supervisor import labels as labelrules
from supervisor.content.digest import parse_digest
from supervisor.metadata import namespaces
from supervisor.metadata.db import Database
from supervisor.timeutil import now_iso, parse_iso

EXPIRE_LABEL = "containerd.io/gc.expire"
# A lease with this label holds only what it names: references from labels are not followed.
FLAT_LABEL = "containerd.io/gc.flat"
CONTENT = "content"
INGESTS = "ingests"
SNAPSHOT_PREFIX = "snapshots/"
MAX_ID_BYTES = 4096

# Go's time.RFC3339 layout as it parses: fractional seconds optional, Z or a numeric offset.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z")


@dataclass
class Lease:
    id: str
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    id: str
    type: str


def new_id() -> str:
    """A fresh lease id in containerd's shape: `<unix nanoseconds>-<4 url-safe base64 chars>`."""
    return f"{time.time_ns()}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


def validate_id(lease_id: str) -> str:
    if not lease_id:
        raise InvalidArgument("lease id must not be empty")
    if len(lease_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidArgument(f"lease id greater than maximum length ({MAX_ID_BYTES} bytes)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in lease_id):
        raise InvalidArgument(f"lease id {go_quote(lease_id)} must not contain control characters")
    return lease_id


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 timestamp as Go's time.Parse(time.RFC3339) reads it; InvalidArgument if not."""
    m = _RFC3339.match(text)
    if m is None:
        raise InvalidArgument(f"{go_quote(text)} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micros = int((m.group(7) or "0").ljust(6, "0")[:6])
    if m.group(8):
        tz: timezone = UTC
    else:
        sign = -1 if m.group(9) == "-" else 1
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if offset >= timedelta(hours=24):
            raise InvalidArgument(f"{go_quote(text)} is not an RFC 3339 time: offset out of range")
        tz = UTC if not offset else timezone(sign * offset)
    try:
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError as exc:
        raise InvalidArgument(f"{go_quote(text)} is not an RFC 3339 time: {exc}") from None


def format_rfc3339(t: datetime) -> str:
    """`t` as containerd writes gc.expire: UTC, whole seconds, `Z`."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expires_at(labels: dict[str, str]) -> datetime | None:
    """The lease's expiry, or None when it has none (or an unreadable one, as containerd)."""
    value = labels.get(EXPIRE_LABEL)
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except InvalidArgument:
        return None


def validate_resource(res: Resource) -> Resource:
    """The resource in canonical form, or the error containerd gives for it."""
    parts = res.type.split("/")
    if parts[0] in (CONTENT, INGESTS):
        if len(parts) != 1:
            raise InvalidArgument(f"invalid resource type {res.type}")
        if parts[0] == CONTENT:
            try:
                parse_digest(res.id)
            except InvalidArgument as exc:
                raise InvalidArgument(f"invalid content resource id {res.id}: {exc.message}") from None
    elif parts[0] == "snapshots":
        if len(parts) != 2 or not parts[1]:
            raise InvalidArgument(f"invalid snapshot resource type {res.type}")
    else:
        raise NotImplementedYet(f"resource type {res.type} not supported yet")
    if not res.id:
        raise InvalidArgument(f"resource id must not be empty (type {res.type})")
    return res


def _exists(conn: sqlite3.Connection, ns: str, lease: str) -> bool:
    return conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lease)).fetchone() is not None


def _require(conn: sqlite3.Connection, ns: str, lease: str) -> None:
    if not _exists(conn, ns, lease):
        raise NotFound(f"lease {go_quote(lease)}")


def attach(conn: sqlite3.Connection, ns: str, lease: str, res: Resource) -> None:
    """Hold `res` under `lease` (no-op for an empty lease id); call inside a write transaction.

    NotFound when the lease does not exist, so a call made in a deleted lease fails rather
    than creating something nothing protects.
    """
    if not lease:
        return
    _require(conn, ns, lease)
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
        """Create a lease; an empty id gets a generated one."""
        lease_id = validate_id(lease_id or new_id())
        labelrules.validate(labels)
        if EXPIRE_LABEL in labels:
            try:
                parse_rfc3339(labels[EXPIRE_LABEL])
            except InvalidArgument as exc:
                raise InvalidArgument(f"label {EXPIRE_LABEL}: {exc.message}") from None

        def tx(conn: sqlite3.Connection) -> Lease:
            namespaces.ensure(conn, ns)
            if _exists(conn, ns, lease_id):
                raise AlreadyExists(f"lease {go_quote(lease_id)}")
            conn.execute("INSERT INTO leases (namespace, id, created_at) VALUES (?, ?, ?)",
                         (ns, lease_id, now_iso()))
            conn.executemany("INSERT INTO lease_labels (namespace, lease, key, value) VALUES (?, ?, ?, ?)",
                             [(ns, lease_id, k, v) for k, v in labels.items()])
            row = conn.execute("SELECT * FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).fetchone()
            return _load(conn, ns, row)

        return await self.db.write(tx)

    async def get(self, ns: str, lease_id: str) -> Lease:
        def tx(conn: sqlite3.Connection) -> Lease:
            row = conn.execute("SELECT * FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).fetchone()
            if row is None:
                raise NotFound(f"lease {go_quote(lease_id)}")
            return _load(conn, ns, row)

        return await self.db.read(tx)

    async def delete(self, ns: str, lease_id: str) -> None:
        """Delete the lease; what it held is left for the garbage collector."""
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM leases WHERE namespace=? AND id=?", (ns, lease_id)).rowcount == 0:
                raise NotFound(f"lease {go_quote(lease_id)}")

        await self.db.write(tx, frees=True)

    async def list(self, ns: str) -> builtins.list[Lease]:
        def tx(conn: sqlite3.Connection) -> builtins.list[Lease]:
            rows = conn.execute("SELECT * FROM leases WHERE namespace=? ORDER BY id", (ns,)).fetchall()
            return [_load(conn, ns, r) for r in rows]

        return await self.db.read(tx)

    async def labelled(self, key: str) -> builtins.list[tuple[str, str, str]]:
        """(namespace, lease id, label value) of every lease, in any namespace, labelled `key`."""
        def tx(conn: sqlite3.Connection) -> builtins.list[tuple[str, str, str]]:
            rows = conn.execute("SELECT namespace, lease, value FROM lease_labels WHERE key=? "
                                "ORDER BY namespace, lease", (key,))
            return [(r[0], r[1], r[2]) for r in rows]

        return await self.db.read(tx)

    async def add_resource(self, ns: str, lease_id: str, res: Resource) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _require(conn, ns, lease_id)  # containerd checks the lease before the resource
            attach(conn, ns, lease_id, validate_resource(res))

        await self.db.write(tx)

    async def delete_resource(self, ns: str, lease_id: str, res: Resource) -> None:
        """Stop holding `res`; not holding it already is no error (as containerd)."""
        def tx(conn: sqlite3.Connection) -> None:
            _require(conn, ns, lease_id)
            validate_resource(res)
            conn.execute("DELETE FROM lease_resources WHERE namespace=? AND lease=? AND type=? AND id=?",
                         (ns, lease_id, res.type, res.id))

        await self.db.write(tx, frees=True)

    async def list_resources(self, ns: str, lease_id: str) -> builtins.list[Resource]:
        def tx(conn: sqlite3.Connection) -> builtins.list[Resource]:
            _require(conn, ns, lease_id)
            rows = conn.execute("SELECT type, id FROM lease_resources WHERE namespace=? AND lease=? "
                                "ORDER BY type, id", (ns, lease_id))
            return [Resource(r["id"], r["type"]) for r in rows]

        return await self.db.read(tx)
