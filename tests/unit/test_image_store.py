"""ImageStore over a real metadata database (no daemon): semantics, GC hooks and GC roots."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor
from supervisor.content.local import LocalContentStore
from supervisor.metadata import gc_graph
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector, image_roots
from supervisor.metadata.images import Image, ImageStore
from supervisor.metadata.namespaces import ensure
from supervisor.timeutil import now

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "metadata.db")
    try:
        yield database
    finally:
        await database.close()


def image(name: str = "img", digest: str = D1, **labels: str) -> Image:
    return Image(name, Descriptor(MANIFEST, digest, 10), dict(labels))


async def test_client_timestamps_are_ignored(db: Database) -> None:
    zero = now().replace(year=1)
    made = await ImageStore(db).create("ns", Image("img", Descriptor(MANIFEST, D1, 10), {}, zero, zero))
    assert made.created_at is not None and made.created_at.year > 1
    again = Image("img", Descriptor(MANIFEST, D2, 10), {}, zero, zero)
    updated = await ImageStore(db).update("ns", again)
    assert updated.created_at == made.created_at
    assert updated.updated_at is not None and updated.updated_at >= made.created_at


async def test_empty_values_are_not_stored(db: Database) -> None:
    store = ImageStore(db)
    made = await store.create("ns", Image("img", Descriptor(MANIFEST, D1, 10, {"a": "", "b": "1"}),
                                          {"x": "", "y": "2"}))
    assert made.labels == {"y": "2"} and made.target.annotations == {"b": "1"}
    assert await store.get("ns", "img") == made


async def test_paths_apply_in_mask_order(db: Database) -> None:
    store = ImageStore(db)
    await store.create("ns", Image("img", Descriptor(MANIFEST, D1, 10, {"a": "1"})))
    new = Image("img", Descriptor(MANIFEST, D2, 20, {"t": "x"}))
    new.target.annotations["a"] = "2"
    # "annotations.a" after "target" edits the new target's annotations
    got = await store.update("ns", new, ["target", "annotations.a"])
    assert got.target == Descriptor(MANIFEST, D2, 20, {"t": "x", "a": "2"})
    # "target" after "annotations.a" replaces the target whole, annotations included
    new2 = Image("img", Descriptor(MANIFEST, D1, 30, {"only": "this"}))
    got = await store.update("ns", new2, ["annotations.a", "target"])
    assert got.target == Descriptor(MANIFEST, D1, 30, {"only": "this"})


async def test_update_checks_existence_before_the_mask(db: Database) -> None:
    with pytest.raises(NotFound):
        await ImageStore(db).update("ns", image(), ["nonsense"])
    with pytest.raises(InvalidArgument, match="image name is required for update"):
        await ImageStore(db).update("ns", image(""), ["labels"])


async def test_names_are_per_namespace(db: Database) -> None:
    store = ImageStore(db)
    await store.create("a", image(digest=D1))
    await store.create("b", image(digest=D2))
    with pytest.raises(AlreadyExists):
        await store.create("a", image())
    assert (await store.get("b", "img")).target.digest == D2
    await store.delete("a", "img")
    assert [i.name for i in await store.list("b")] == ["img"]
    assert await store.list("a") == []


async def test_delete_calls_the_gc_hooks(db: Database) -> None:
    calls: list[str] = []

    async def collect() -> None:
        calls.append("collect")

    store = ImageStore(db, collect=collect, on_delete=lambda: calls.append("schedule"))
    await store.create("ns", image("a"))
    await store.create("ns", image("b"))
    await store.delete("ns", "a")
    await store.delete("ns", "b", sync=True)
    assert calls == ["schedule", "collect"]
    with pytest.raises(NotFound):
        await store.delete("ns", "b")
    assert calls == ["schedule", "collect"]  # nothing deleted, nothing to collect


async def test_image_roots_name_targets_and_label_refs(db: Database) -> None:
    store = ImageStore(db)
    await store.create("a", image("x", D1, **{"containerd.io/gc.ref.content.extra": D2, "plain": "1"}))
    await store.create("b", image("y", D2, **{"containerd.io/gc.ref.snapshot.overlayfs": "chain"}))
    roots = set(await db.read(lambda conn: list(image_roots(conn))))
    assert roots == {
        gc_graph.content("a", D1), gc_graph.content("a", D2),
        gc_graph.content("b", D2), gc_graph.snapshot("b", "overlayfs", "chain"),
    }


async def test_collector_with_image_roots_keeps_image_content(db: Database, tmp_path: Path) -> None:
    """End to end with the real collector: what an image points at survives, the rest goes."""
    content = LocalContentStore(tmp_path / "content")

    async def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        w = await content.writer(f"w-{digest}", total=len(data), expected=digest)
        await w.write(data, 0)
        await w.commit(len(data), digest)

        def record(conn: sqlite3.Connection) -> None:
            ensure(conn, "ns")
            t = now().isoformat()
            conn.execute("INSERT INTO content (namespace, digest, size, created_at, updated_at) VALUES (?,?,?,?,?)",
                         ("ns", digest, len(data), t, t))

        await db.write(record)
        return digest

    target, by_label, stray = await blob(b"target"), await blob(b"by label"), await blob(b"stray")
    store = ImageStore(db)
    await store.create("ns", Image("img", Descriptor(MANIFEST, target, 6),
                                   {"containerd.io/gc.ref.content.x": by_label}))
    collector = Collector(db, content, {}, root_providers=[image_roots])
    await collector.collect()
    assert await content.exists(target) and await content.exists(by_label)
    assert not await content.exists(stray)
    await store.delete("ns", "img")
    await collector.collect()
    assert not await content.exists(target) and not await content.exists(by_label)
