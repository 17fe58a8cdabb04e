"""The build cache's records: which layer (and committed snapshot) a build step's key made.

    cache = BuildCacheStore(db)
    hit = await cache.get("default", key)          # a Record, or None
    await cache.put("default", Record(key, "overlayfs", chain_id, layer_descriptor, diff_id))
    removed = await cache.prune("default")         # every record of the namespace
    await cache.delete_keys("default", [key])      # some (supervisor/build/cacheprune.py chooses)

Words: a record's `key` is `supervisor.build.cachekey.step_key` of one step. A step that made a
layer records the layer blob (descriptor, diff ID) and the committed snapshot of the rootfs
after it (named by chain ID, as the unpacker names them); a config-only step records no layer
(it is still a hit: the builder reports the step "cached").

Garbage collection: the records are roots (`build_cache_roots`, in `gc.ROOT_PROVIDERS`): each
keeps its layer blob and its snapshot (and so the snapshot's parents), so a cached step's
result survives collections and daemon restarts until the record is pruned.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from dockyard_common.imagespec import Descriptor
from supervisor.metadata import gc_graph
from supervisor.metadata.db import Database
from supervisor.timeutil import now_iso

TABLE = "build_cache"


@dataclass(frozen=True)
class Record:
    key: str
    snapshotter: str = ""
    snapshot: str = ""  # the committed snapshot after the step ("" for a config-only step)
    layer: Descriptor | None = None
    diff_id: str = ""
    created_at: str = field(default="", compare=False)
    last_used: str = field(default="", compare=False)


def _record(row: sqlite3.Row) -> Record:
    layer = (Descriptor(row["layer_media_type"], row["layer_digest"], row["layer_size"])
             if row["layer_digest"] else None)
    return Record(row["key"], row["snapshotter"], row["snapshot"], layer, row["diff_id"], row["created_at"],
                  row["last_used"])


class BuildCacheStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, ns: str, key: str) -> Record | None:
        """The record of `key`, its use time moved to now (what a size-limited prune keeps)."""
        def tx(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(f"SELECT * FROM {TABLE} WHERE namespace=? AND key=?", (ns, key)).fetchone()
            if row is None:
                return None
            conn.execute(f"UPDATE {TABLE} SET last_used=? WHERE namespace=? AND key=?", (now_iso(), ns, key))
            return _record(row)

        return await self.db.write(tx)

    async def put(self, ns: str, record: Record) -> None:
        """Create or replace the record of `record.key`."""
        layer = record.layer

        def tx(conn: sqlite3.Connection) -> None:
            stamp = now_iso()
            conn.execute(
                f"INSERT OR REPLACE INTO {TABLE} (namespace, key, snapshotter, snapshot, layer_media_type, "
                "layer_digest, layer_size, diff_id, created_at, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ns, record.key, record.snapshotter, record.snapshot, layer.media_type if layer else "",
                 layer.digest if layer else "", layer.size if layer else 0, record.diff_id, stamp, stamp))

        await self.db.write(tx)

    async def delete(self, ns: str, key: str) -> None:
        await self.db.write(lambda conn: conn.execute(f"DELETE FROM {TABLE} WHERE namespace=? AND key=?", (ns, key)),
                            frees=True)

    async def list(self, ns: str) -> list[Record]:
        def tx(conn: sqlite3.Connection) -> list[Record]:
            rows = conn.execute(f"SELECT * FROM {TABLE} WHERE namespace=? ORDER BY last_used, key", (ns,))
            return [_record(r) for r in rows]

        return await self.db.read(tx)

    async def delete_keys(self, ns: str, keys: Sequence[str]) -> int:
        """Remove the records of `keys` (missing ones are no error); how many went. The collector
        (scheduled by the caller) then frees what only they kept."""
        def tx(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(f"DELETE FROM {TABLE} WHERE namespace=? AND key=?", (ns, key)).rowcount
                       for key in keys)

        return await self.db.write(tx, frees=True)

    async def prune(self, ns: str) -> int:
        """Remove every record of the namespace; how many went. The collector (scheduled by the
        caller) then frees what only they kept."""
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(f"DELETE FROM {TABLE} WHERE namespace=?", (ns,)).rowcount

        return await self.db.write(tx, frees=True)


def build_cache_roots(conn: sqlite3.Connection) -> Iterator[gc_graph.Node]:
    """A cache record keeps its layer blob and its committed snapshot."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is None:
        return
    for r in conn.execute(f"SELECT namespace, snapshotter, snapshot, layer_digest FROM {TABLE}"):
        if r[3]:
            yield gc_graph.content(r[0], r[3])
        if r[1] and r[2]:
            yield gc_graph.snapshot(r[0], r[1], r[2])
