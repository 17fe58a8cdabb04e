"""Database.watch: a counter that moves with changes to some tables, and only those."""

from __future__ import annotations

from pathlib import Path

from supervisor.metadata.db import Database


async def test_watch_moves_with_its_tables_only(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        names = db.watch("namespaces", "namespace_labels")
        leases = db.watch("leases")
        await db.write(lambda c: c.execute("INSERT INTO namespaces (name, created_at) VALUES ('a', 'x')"))
        assert (names.generation, leases.generation) == (1, 0)
        await db.write(lambda c: c.execute("INSERT INTO namespace_labels (namespace, key, value) "
                                           "VALUES ('a', 'k', 'v')"))
        await db.write(lambda c: c.execute("INSERT INTO leases (namespace, id, created_at) "
                                           "VALUES ('a', 'l', '2026-01-01T00:00:00Z')"))
        assert (names.generation, leases.generation) == (2, 1)
        await db.read(lambda c: c.execute("SELECT * FROM namespaces").fetchall())
        assert names.generation == 2  # reads move nothing
        # a cascaded delete changes the labels table too: both changes count
        await db.write(lambda c: c.execute("DELETE FROM leases"))
        await db.write(lambda c: c.execute("DELETE FROM namespaces WHERE name='a'"))
        assert names.generation == 4 and leases.generation == 2
    finally:
        await db.close()
