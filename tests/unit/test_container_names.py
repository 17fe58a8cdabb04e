"""The daemon's rule for the label `dockyard.name` (supervisor/metadata/names.py), on a real
metadata.db: one holder per name and namespace, checked in the writing transaction."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists
from dockyard_common.types import AnyValue, Container
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.db import Database
from supervisor.metadata.names import NAME_LABEL

NS = "default"
PATHS = [f"labels.{NAME_LABEL}"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ContainerStore]:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        yield ContainerStore(db)
    finally:
        await db.close()


def record(cid: str, **labels: str) -> Container:
    return Container(id=cid, runtime_name="io.containerd.runc.v2", spec=AnyValue("spec", b"{}"), labels=labels)


def named(cid: str, name: str) -> Container:
    return Container(id=cid, runtime_name="", spec=None, labels={NAME_LABEL: name})


async def test_create_and_update_refuse_a_name_in_use(store: ContainerStore) -> None:
    await store.create(NS, record("a", **{NAME_LABEL: "web"}))
    await store.create(NS, record("b"))
    with pytest.raises(AlreadyExists, match='container name "web" is already in use by container "a"'):
        await store.create(NS, record("c", **{NAME_LABEL: "web"}))
    with pytest.raises(AlreadyExists, match='in use by container "a"'):
        await store.update(NS, named("b", "web"), PATHS)
    with pytest.raises(AlreadyExists, match='in use by container "a"'):  # a full replace too
        await store.update(NS, record("b", **{NAME_LABEL: "web"}), [])
    # another container's id is its name: taken as well
    with pytest.raises(AlreadyExists, match='container name "a" is already in use by container "a"'):
        await store.update(NS, named("b", "a"), PATHS)
    # its own id, its own name, another namespace: free
    await store.update(NS, named("b", "b"), PATHS)
    await store.update(NS, named("a", "web"), PATHS)
    await store.create("other", record("c", **{NAME_LABEL: "web"}))
    # a plain label write of another key, and a label without our key, are containerd's as ever
    await store.create(NS, record("d", role="web"))


async def test_delete_and_rename_free_the_name(store: ContainerStore) -> None:
    await store.create(NS, record("a", **{NAME_LABEL: "web"}))
    await store.create(NS, record("b"))
    await store.update(NS, named("a", "api"), PATHS)
    await store.update(NS, named("b", "web"), PATHS)  # "web" went with a's rename
    await store.delete(NS, "b")
    await store.create(NS, record("c", **{NAME_LABEL: "web"}))  # and with b's delete


async def test_updates_keeping_a_duplicate_name_still_work(store: ContainerStore) -> None:
    """Two holders of one name written before the rule (straight into the table): each can still
    be updated as long as the update leaves the name alone."""
    await store.create(NS, record("a", **{NAME_LABEL: "web"}))
    await store.create(NS, record("b"))

    def duplicate(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE containers SET labels=? WHERE id='b'", ('{"dockyard.name": "web"}',))

    await store.db.write(duplicate)
    patch = Container(id="b", runtime_name="", spec=None, labels={"dockyard.health.status": "healthy"})
    await store.update(NS, patch, ["labels.dockyard.health.status"])
    assert (await store.get(NS, "b")).labels[NAME_LABEL] == "web"


async def test_concurrent_claims_have_one_winner(store: ContainerStore) -> None:
    ids = [f"c{i}" for i in range(12)]
    for cid in ids:
        await store.create(NS, record(cid))
    renames = [store.update(NS, named(cid, "prize"), PATHS) for cid in ids]
    creates = [store.create(NS, record(f"new{i}", **{NAME_LABEL: "prize"})) for i in range(6)]
    results = await asyncio.gather(*renames, *creates, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))
    holders = [c.id for c in await store.list(NS) if c.labels.get(NAME_LABEL) == "prize"]
    assert len(holders) == 1


async def test_the_index_outlives_a_reopen(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    await ContainerStore(db).create(NS, record("a", **{NAME_LABEL: "web"}))
    await db.close()
    db = await Database.open(tmp_path / "metadata.db")
    try:
        with pytest.raises(AlreadyExists, match='in use by container "a"'):
            await ContainerStore(db).create(NS, record("b", **{NAME_LABEL: "web"}))

        def plan(conn: sqlite3.Connection) -> str:
            rows = conn.execute(
                """EXPLAIN QUERY PLAN SELECT id FROM containers WHERE namespace=?
                   AND json_extract(labels, '$."dockyard.name"')=?""", (NS, "web")).fetchall()
            return " ".join(str(r[-1]) for r in rows)

        assert "containers_by_name" in await db.read(plan)
    finally:
        await db.close()
