"""Containers: the stored description of what to run (spec, runtime, snapshot, image).

Opaque protobuf payloads (the spec, runtime options, extensions) are kept as type URL +
bytes exactly as the client sent them: the daemon passes them on, it does not reinterpret.
One label is read: `dockyard.name`, a Docker-style name kept unique per namespace (names.py).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from base64 import b64decode, b64encode
from collections.abc import Callable
from dataclasses import replace

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.types import AnyValue, Container
from supervisor import filters, identifiers
from supervisor import labels as labelrules
from supervisor.metadata import names, namespaces
from supervisor.metadata.db import Database, ReadCache
from supervisor.timeutil import now, parse_iso

UPDATABLE = ("labels", "spec", "extensions", "image", "snapshotkey")


def validate(c: Container) -> None:
    identifiers.validate(c.id, what="container.ID")
    if any(k == "" for k in c.extensions):
        raise InvalidArgument("container.Extension keys must not be zero-length")
    labelrules.validate(c.labels)
    if not c.runtime_name:
        raise InvalidArgument("container.Runtime.Name must be set")
    if c.spec is None:
        raise InvalidArgument("container.Spec must be set")
    if c.snapshot_key and not c.snapshotter:
        raise InvalidArgument("container.Snapshotter must be set if container.SnapshotKey is set")


def apply_mask(current: Container, new: Container, paths: list[str]) -> Container:
    """containerd's update rules: no paths replaces the mutable fields; runtime and
    snapshotter are immutable."""
    if not paths:
        if current.snapshotter != new.snapshotter:
            raise InvalidArgument("container.Snapshotter field is immutable")
        if current.runtime_name != new.runtime_name:
            raise InvalidArgument("container.Runtime.Name field is immutable")
        paths = list(UPDATABLE)
    out = replace(current, labels=dict(current.labels), extensions=dict(current.extensions))
    for path in paths:
        if path.startswith("labels."):
            key = path.split(".", 1)[1]
            if new.labels.get(key):
                out.labels[key] = new.labels[key]
            else:
                out.labels.pop(key, None)
        elif path.startswith("extensions."):
            key = path.split(".", 1)[1]
            if key in new.extensions:
                out.extensions[key] = new.extensions[key]
            else:
                out.extensions.pop(key, None)
        elif path == "labels":
            out.labels = dict(new.labels)
        elif path == "spec":
            out.spec = new.spec
        elif path == "extensions":
            out.extensions = dict(new.extensions)
        elif path == "image":
            out.image = new.image
        elif path == "snapshotkey":
            out.snapshot_key = new.snapshot_key
        else:
            raise InvalidArgument(f'cannot update "{path}" field on "{current.id}"')
    return out


def adaptor(c: Container) -> filters.Adaptor:
    return filters.adaptor_from({"id": c.id, "image": c.image, "labels": c.labels,
                                 "runtime": {"name": c.runtime_name}})


def _row(ns: str, c: Container) -> tuple[object, ...]:
    ext = {k: [v.type_url, b64encode(v.value).decode()] for k, v in c.extensions.items()}
    opts = c.runtime_options
    assert c.spec is not None and c.created_at is not None and c.updated_at is not None
    return (ns, c.id, json.dumps(c.labels, sort_keys=True), c.image, c.runtime_name,
            opts.type_url if opts else "", opts.value if opts else None, c.spec.type_url, c.spec.value,
            c.snapshotter, c.snapshot_key, json.dumps(ext, sort_keys=True),
            c.created_at.isoformat(), c.updated_at.isoformat())


def _load(r: sqlite3.Row) -> Container:
    ext = {k: AnyValue(t, b64decode(v)) for k, (t, v) in json.loads(r["extensions"]).items()}
    opts = AnyValue(r["runtime_options_type"], r["runtime_options"] or b"") if r["runtime_options_type"] else None
    return Container(
        id=r["id"], runtime_name=r["runtime_name"], spec=AnyValue(r["spec_type"], r["spec"]),
        labels=json.loads(r["labels"]), image=r["image"], runtime_options=opts,
        snapshotter=r["snapshotter"], snapshot_key=r["snapshot_key"], extensions=ext,
        created_at=parse_iso(r["created_at"]), updated_at=parse_iso(r["updated_at"]),
    )


def _get(conn: sqlite3.Connection, ns: str, cid: str) -> Container:
    r = conn.execute("SELECT * FROM containers WHERE namespace=? AND id=?", (ns, cid)).fetchone()
    if r is None:
        raise NotFound(f'container "{cid}" in namespace "{ns}"')
    return _load(r)


_INSERT = "INSERT OR REPLACE INTO containers VALUES (" + ", ".join("?" * 14) + ")"


class ContainerStore:
    def __init__(self, db: Database, on_delete: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.on_delete = on_delete
        self._listed: ReadCache[str, tuple[Container, ...]] = ReadCache(db, db.watch("containers"))

    async def get(self, ns: str, cid: str) -> Container:
        return await self.db.read(lambda conn: _get(conn, ns, cid))

    async def list(self, ns: str, filter_texts: builtins.list[str] | None = None) -> builtins.list[Container]:
        """Containers of `ns` matching any of the filters, by id. Shared with other callers
        (a cached read): do not modify them."""
        match = filters.parse_all(filter_texts or [])

        def tx(conn: sqlite3.Connection) -> tuple[Container, ...]:
            return tuple(map(_load, conn.execute("SELECT * FROM containers WHERE namespace=? ORDER BY id", (ns,))))

        found = await self._listed.get(ns, tx)
        if match is filters.ALWAYS:
            return builtins.list(found)
        return [c for c in found if match.match(adaptor(c))]

    async def create(self, ns: str, c: Container) -> Container:
        validate(c)
        stamp = now()
        c = replace(c, created_at=stamp, updated_at=stamp)

        def tx(conn: sqlite3.Connection) -> Container:
            namespaces.ensure(conn, ns)
            if conn.execute("SELECT 1 FROM containers WHERE namespace=? AND id=?", (ns, c.id)).fetchone():
                raise AlreadyExists(f'container "{c.id}"')
            names.check_free(conn, ns, c)
            conn.execute(_INSERT, _row(ns, c))
            return c

        return await self.db.write(tx)

    async def update(self, ns: str, c: Container, paths: builtins.list[str]) -> Container:
        if not c.id:
            raise InvalidArgument("must specify a container id")

        def tx(conn: sqlite3.Connection) -> Container:
            current = _get(conn, ns, c.id)
            updated = apply_mask(current, c, paths)
            try:
                validate(updated)
            except InvalidArgument as exc:
                raise InvalidArgument(f"update failed validation: {exc.message}") from None
            names.check_free(conn, ns, updated, current)
            updated.updated_at = now()
            conn.execute(_INSERT, _row(ns, updated))
            return updated

        return await self.db.write(tx)

    async def delete(self, ns: str, cid: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM containers WHERE namespace=? AND id=?", (ns, cid)).rowcount == 0:
                raise NotFound(f'container "{cid}" in namespace "{ns}"')

        await self.db.write(tx, frees=True)
        self.on_delete()
