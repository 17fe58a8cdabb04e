"""MetaStore: the SQLite records behind the directory snapshotters (synchronous API)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import Info, Kind, Usage
from supervisor.snapshotter.storage import SCHEMA_VERSION, MetaStore, check_key, check_labels


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "metadata.db")


@pytest.fixture
def store(db_path: str) -> Iterator[MetaStore]:
    s = MetaStore(db_path)
    yield s
    s.close()


def committed(store: MetaStore, name: str, parent: str = "") -> int:
    with store.write():
        rec = store.create(Kind.ACTIVE, name + "-tmp", parent, {})
        store.commit(name + "-tmp", name, Usage(10, 2), {}, rec.id)
    return rec.id


def test_wal_and_schema_version(store: MetaStore, db_path: str) -> None:
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


def test_newer_schema_is_refused(db_path: str) -> None:
    MetaStore(db_path).close()
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(FailedPrecondition, match="newer"):
        MetaStore(db_path)


def test_parent_chain_follows_commit_renames(store: MetaStore) -> None:
    a = committed(store, "a")
    b = committed(store, "b", "a")
    with store.write():
        rec = store.create(Kind.ACTIVE, "top", "b", {"x": "1"})
    assert rec.parent_ids == (b, a)
    with store.read():
        assert store.record("top") == rec
        sid, info, usage = store.info("b")
    assert (sid, info.parent, info.kind, usage) == (b, "a", Kind.COMMITTED, Usage(10, 2))


def test_ids_are_never_reused(store: MetaStore) -> None:
    with store.write():
        first = store.create(Kind.ACTIVE, "k", "", {}).id
    with store.write():
        assert store.remove("k") == first
    with store.write():
        second = store.create(Kind.ACTIVE, "k", "", {}).id
    assert second > first


def test_failed_write_rolls_back(store: MetaStore) -> None:
    with pytest.raises(RuntimeError), store.write():
        store.create(Kind.ACTIVE, "k", "", {"a": "b"})
        raise RuntimeError("boom")
    with store.read():
        assert store.infos() == []
        assert store.ids() == set()


def test_create_errors(store: MetaStore) -> None:
    committed(store, "c")
    with store.write():
        store.create(Kind.VIEW, "v", "c", {})
    with pytest.raises(NotFound, match="parent snapshot missing does not exist"), store.write():
        store.create(Kind.ACTIVE, "x", "missing", {})
    with pytest.raises(InvalidArgument, match='parent "v" is not committed snapshot'), store.write():
        store.create(Kind.ACTIVE, "x", "v", {})
    with pytest.raises(AlreadyExists), store.write():
        store.create(Kind.ACTIVE, "c", "", {})
    with pytest.raises(InvalidArgument), store.write():
        store.create(Kind.COMMITTED, "x", "", {})


def test_commit_errors(store: MetaStore) -> None:
    with store.write():
        active = store.create(Kind.ACTIVE, "a", "", {}).id
        view = store.create(Kind.VIEW, "v", "", {}).id
    committed(store, "c")
    with pytest.raises(FailedPrecondition, match="not active"), store.write():
        store.commit("v", "x", Usage(), {}, view)
    with pytest.raises(AlreadyExists), store.write():
        store.commit("a", "c", Usage(), {}, active)
    with pytest.raises(FailedPrecondition, match="changed"), store.write():
        store.commit("a", "x", Usage(), {}, active + 100)
    with pytest.raises(NotFound, match="snapshot nope does not exist"), store.write():
        store.commit("nope", "x", Usage(), {}, 1)


def test_remove_refuses_parents(store: MetaStore) -> None:
    committed(store, "c")
    with store.write():
        store.create(Kind.VIEW, "v", "c", {})
    with pytest.raises(FailedPrecondition, match="cannot remove snapshot with child"), store.write():
        store.remove("c")
    with store.write():
        store.remove("v")
        store.remove("c")


def test_update_semantics(store: MetaStore) -> None:
    with store.write():
        store.create(Kind.ACTIVE, "a", "", {"keep": "1", "drop": "2"})
    with store.write():
        info = store.update(Info(name="a", labels={"drop": "", "new": "3"}), ["labels.drop", "labels.new"])
    assert info.labels == {"keep": "1", "new": "3"}
    assert info.updated_at > info.created_at
    with store.write():
        assert store.update(Info(name="a", labels={"only": "x"}), None).labels == {"only": "x"}
    with pytest.raises(InvalidArgument, match='cannot update "kind" field'), store.write():
        store.update(Info(name="a"), ["kind"])
    with pytest.raises(InvalidArgument), store.write():
        store.update(Info(name="a"), ["labels."])


def test_labels_with_empty_values_are_not_stored(store: MetaStore) -> None:
    with store.write():
        store.create(Kind.ACTIVE, "a", "", check_labels({"a": "", "b": "c"}))
    with store.read():
        assert store.info("a")[1].labels == {"b": "c"}


@pytest.mark.parametrize("bad", ["", "nul\x00byte", 3, None])
def test_check_key_rejects(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        check_key(bad)


@pytest.mark.parametrize("bad", [{"": "x"}, {"a": 1}, ["a"]])
def test_check_labels_rejects(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        check_labels(bad)  # type: ignore[arg-type]


def test_records_survive_reopen(db_path: str) -> None:
    s = MetaStore(db_path)
    committed(s, "c")
    with s.read():
        before = s.infos()
    s.close()
    s = MetaStore(db_path)
    try:
        with s.read():
            assert s.infos() == before
    finally:
        s.close()
