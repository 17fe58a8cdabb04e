"""The Collector over a real metadata database, content store and native snapshotter (no daemon)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from dockyard_common.errors import NotFound
from supervisor.content.local import LocalContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector, Stats
from supervisor.metadata.leases import LeaseStore, Resource
from supervisor.metadata.namespaces import ensure
from supervisor.snapshotter import NativeSnapshotter
from supervisor.timeutil import now
from tests.waiting import wait_until_async

T = TypeVar("T")
OLD = timedelta(days=30)


class Env:
    def __init__(self, db: Database, content: LocalContentStore, native: NativeSnapshotter) -> None:
        self.db = db
        self.content = content
        self.native = native
        self.leases = LeaseStore(db)

    def collector(self, **kwargs: object) -> Collector:
        kwargs.setdefault("orphan_grace", timedelta(0))
        return Collector(self.db, self.content, {"native": self.native}, **kwargs)  # type: ignore[arg-type]

    async def blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not await self.content.exists(digest):
            w = await self.content.writer(f"w-{digest}", total=len(data), expected=digest)
            await w.write(data, 0)
            await w.commit(len(data), digest)
        return digest

    async def record(self, ns: str, digest: str, labels: dict[str, str] | None = None) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            ensure(conn, ns)
            t = now().isoformat()
            conn.execute("INSERT INTO content (namespace, digest, size, created_at, updated_at) VALUES (?,?,?,?,?)",
                         (ns, digest, 1, t, t))
            conn.executemany("INSERT INTO content_labels VALUES (?,?,?,?)",
                             [(ns, digest, k, v) for k, v in (labels or {}).items()])

        await self.db.write(tx)

    async def snapshot_record(self, ns: str, key: str, backend: str, parent: str = "",
                              labels: dict[str, str] | None = None, snapshotter: str = "native") -> None:
        def tx(conn: sqlite3.Connection) -> None:
            ensure(conn, ns)
            t = now().isoformat()
            conn.execute("INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, created_at, "
                         "updated_at) VALUES (?,?,?,?,?,?,?)", (ns, snapshotter, key, backend, parent, t, t))
            conn.executemany("INSERT INTO snapshot_labels VALUES (?,?,?,?,?)",
                             [(ns, snapshotter, key, k, v) for k, v in (labels or {}).items()])

        await self.db.write(tx)

    async def ingest(self, ns: str, ref: str, age: timedelta, data: bytes = b"partial") -> str:
        bref = f"{ns}/{ref}"
        w = await self.content.writer(bref)
        await w.write(data, 0)
        await w.close()

        def tx(conn: sqlite3.Connection) -> None:
            ensure(conn, ns)
            conn.execute("INSERT INTO ingests (namespace, ref, backend_ref, created_at) VALUES (?,?,?,?)",
                         (ns, ref, bref, (now() - age).isoformat()))

        await self.db.write(tx)
        return bref

    async def rows(self, sql: str) -> list[tuple[object, ...]]:
        return await self.db.read(lambda conn: [tuple(r) for r in conn.execute(sql)])

    async def backend_snapshots(self) -> set[str]:
        return {i.name async for i in self.native.walk()}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    db = await Database.open(tmp_path / "metadata.db")
    native = await NativeSnapshotter.open(tmp_path / "native")
    e = Env(db, LocalContentStore(tmp_path / "content"), native)
    try:
        yield e
    finally:
        await native.close()
        await e.db.close()  # a test may have swapped the database


async def test_lease_holds_content_until_it_is_deleted(env: Env) -> None:
    digest = await env.blob(b"held")
    await env.record("ns", digest)
    await env.leases.create("ns", "l1", {})
    await env.leases.add_resource("ns", "l1", Resource(digest, "content"))
    gc = env.collector()
    assert (await gc.collect()).content_removed == 0
    assert await env.content.exists(digest)
    await env.leases.delete("ns", "l1")
    stats = await gc.collect()
    assert (stats.content_removed, stats.blobs_removed) == (1, 1)
    assert stats.duration > timedelta(0)
    assert not await env.content.exists(digest)
    assert await env.rows("SELECT * FROM content") == []


async def test_blob_shared_by_two_namespaces_goes_with_the_last_record(env: Env) -> None:
    digest = await env.blob(b"shared")
    await env.record("a", digest, {"containerd.io/gc.root": ""})
    await env.record("b", digest, {"containerd.io/gc.root": ""})
    gc = env.collector()
    await env.db.write(lambda c: c.execute("DELETE FROM content_labels WHERE namespace='a'"))
    stats = await gc.collect()
    assert (stats.content_removed, stats.blobs_removed) == (1, 0)
    assert await env.content.exists(digest)
    await env.db.write(lambda c: c.execute("DELETE FROM content_labels WHERE namespace='b'"))
    stats = await gc.collect()
    assert (stats.content_removed, stats.blobs_removed) == (1, 1)
    assert not await env.content.exists(digest)


async def test_an_ingest_expecting_a_blob_keeps_the_blob(env: Env) -> None:
    digest = await env.blob(b"expected elsewhere")
    await env.record("a", digest)
    await env.ingest("b", "shared-ingest", timedelta(minutes=1))
    await env.db.write(lambda c: c.execute("UPDATE ingests SET expected=?", (digest,)))
    stats = await env.collector().collect()
    assert stats.content_removed == 1 and stats.blobs_removed == 0
    assert await env.content.exists(digest)


async def test_gc_ref_labels_keep_children_and_snapshots(env: Env) -> None:
    layer = await env.blob(b"layer")
    config = await env.blob(b"config")
    manifest = await env.blob(b"manifest")
    stray = await env.blob(b"stray")
    base = await env.native.prepare("bk-base")
    assert base
    await env.native.commit("bn-base", "bk-base")
    await env.native.prepare("bk-top", "bn-base")
    await env.native.commit("bn-top", "bk-top")
    await env.native.prepare("bk-ctr", "bn-top")
    await env.native.view("bk-view", "bn-base")
    await env.snapshot_record("ns", "chain-base", "bn-base")
    await env.snapshot_record("ns", "chain-top", "bn-top", parent="chain-base")
    await env.snapshot_record("ns", "ctr", "bk-ctr", parent="chain-top")
    await env.snapshot_record("ns", "view", "bk-view", parent="chain-base")
    await env.record("ns", layer)
    await env.record("ns", config, {"containerd.io/gc.ref.snapshot.native": "chain-top"})
    await env.record("ns", manifest, {"containerd.io/gc.root": "", "containerd.io/gc.ref.content.config": config,
                                      "containerd.io/gc.ref.content.l.0": layer})
    await env.record("ns", stray)
    gc = env.collector()
    stats = await gc.collect()
    assert (stats.content_removed, stats.snapshots_removed, stats.blobs_removed) == (1, 2, 1)
    assert not await env.content.exists(stray)
    assert all([await env.content.exists(d) for d in (layer, config, manifest)])
    assert await env.backend_snapshots() == {"bn-base", "bn-top"}
    assert sorted(str(r[0]) for r in await env.rows("SELECT key FROM snapshots")) == ["chain-base", "chain-top"]
    # drop the root: the whole graph goes, backend snapshots child before parent
    await env.db.write(lambda c: c.execute("DELETE FROM content_labels WHERE key='containerd.io/gc.root'"))
    stats = await gc.collect()
    assert (stats.content_removed, stats.snapshots_removed, stats.blobs_removed) == (3, 2, 3)
    assert await env.backend_snapshots() == set()


async def test_records_of_an_unmanaged_snapshotter_are_kept(env: Env) -> None:
    digest = await env.blob(b"kept through zfs")
    await env.record("ns", digest)
    await env.snapshot_record("ns", "z", "z-1", snapshotter="zfs",
                              labels={"containerd.io/gc.ref.content": digest})
    stats = await env.collector().collect()
    assert stats.snapshots_removed == 0 and stats.content_removed == 0


async def test_lease_less_ingest_is_aborted_after_the_grace_period(env: Env) -> None:
    young = await env.ingest("ns", "young", timedelta(minutes=1))
    old = await env.ingest("ns", "old", timedelta(hours=25))
    leased = await env.ingest("ns", "leased", timedelta(hours=25))
    await env.leases.create("ns", "l", {})
    await env.leases.add_resource("ns", "l", Resource("leased", "ingests"))
    stats = await env.collector().collect()
    assert stats.ingests_removed == 1
    refs = {s.ref for s in await env.content.list_statuses()}
    assert refs == {young, leased} and old not in refs
    assert sorted(str(r[0]) for r in await env.rows("SELECT ref FROM ingests")) == ["leased", "young"]
    stats = await env.collector(ingest_grace=timedelta(0)).collect()
    assert stats.ingests_removed == 1
    assert {s.ref for s in await env.content.list_statuses()} == {leased}


async def test_expired_leases_are_deleted_and_stop_holding(env: Env) -> None:
    digest = await env.blob(b"briefly held")
    await env.record("ns", digest)
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await env.leases.create("ns", "old", {"containerd.io/gc.expire": past})
    await env.leases.add_resource("ns", "old", Resource(digest, "content"))
    await env.leases.create("ns", "new", {"containerd.io/gc.expire": future})
    stats = await env.collector().collect()
    assert (stats.leases_removed, stats.content_removed) == (1, 1)
    assert [le.id for le in await env.leases.list("ns")] == ["new"]


async def test_orphans_without_any_record_are_removed_once_old_enough(env: Env) -> None:
    orphan_blob = await env.blob(b"orphan blob")
    orphan_ingest = "nobody/ingest"
    w = await env.content.writer(orphan_ingest)
    await w.write(b"x", 0)
    await w.close()
    await env.native.prepare("orphan-a")
    await env.native.commit("orphan-b", "orphan-a")
    await env.native.prepare("orphan-c", "orphan-b")
    stats = await env.collector(orphan_grace=timedelta(hours=1)).collect()
    assert not stats.removed_anything()  # all younger than the grace period
    stats = await env.collector().collect()
    assert (stats.blobs_removed, stats.backend_ingests_aborted, stats.backend_snapshots_removed) == (1, 1, 2)
    assert not await env.content.exists(orphan_blob)
    assert await env.content.list_statuses() == []
    assert await env.backend_snapshots() == set()


async def test_a_write_between_mark_and_sweep_is_seen(env: Env, tmp_path: Path) -> None:
    """A resource that becomes reachable after marking must survive: the sweep re-marks."""
    digest = await env.blob(b"rescued")
    await env.record("ns", digest)
    await env.leases.create("ns", "late", {})

    class Racing(Database):
        raced = False

        async def write(self, fn: Callable[[sqlite3.Connection], T], *, frees: bool = False) -> T:
            if not self.raced:  # the first write after the mark is the sweep: a lease takes the blob first
                self.raced = True
                await super().write(lambda c: c.execute(
                    "INSERT INTO lease_resources VALUES ('ns', 'late', 'content', ?)", (digest,)))
            return await super().write(fn, frees=frees)

    await env.db.close()
    env.db = await Racing.open(tmp_path / "metadata.db")
    stats = await env.collector().collect()
    assert stats.content_removed == 0 and await env.content.exists(digest)


async def test_guards_are_held_exclusively_while_backends_are_swept(env: Env) -> None:
    events: list[str] = []

    class Guard:
        @asynccontextmanager
        async def exclusive(self) -> AsyncIterator[None]:
            events.append("in")
            yield
            events.append("out")

    digest = await env.blob(b"guarded")
    await env.record("ns", digest)
    await env.collector(guards=[Guard()]).collect()
    assert events == ["in", "out"] and not await env.content.exists(digest)


async def test_failed_backend_removal_is_logged_not_raised(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    await env.native.prepare("bk-p")
    await env.native.commit("bn-p", "bk-p")
    await env.native.prepare("hidden-child", "bn-p")  # a backend child no record knows about
    await env.snapshot_record("ns", "p", "bn-p")
    stats = await env.collector(orphan_grace=timedelta(hours=1)).collect()
    assert stats.snapshots_removed == 1
    assert "cannot remove bn-p" in caplog.text
    assert await env.backend_snapshots() == {"bn-p", "hidden-child"}
    stats = await env.collector().collect()  # the next full sweep finds both orphaned
    assert stats.backend_snapshots_removed == 2 and await env.backend_snapshots() == set()


class Counting(Collector):
    runs = 0

    async def collect(self) -> Stats:
        self.runs += 1
        return await super().collect()


class LoopClock:
    """The running loop's clock, moved by the test alone: the collector's timers fire when the
    test has moved the time past them, never because a loaded machine stretched a real sleep."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        monkeypatch.setattr(loop, "time", lambda: self.now)

    async def advance(self, seconds: float) -> None:
        """Move the time on, and let the loop run what came due: a timer fires in the loop's next
        round and the task it starts takes its first step in the one after; ten rounds is ample."""
        self.now += seconds
        for _ in range(10):
            await asyncio.sleep(0)


async def test_schedule_coalesces_requests(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LoopClock(monkeypatch)
    gc = Counting(env.db, env.content, {}, delay=0.05, max_delay=5)
    for _ in range(20):  # each request within `delay` of the last: the collection waits on
        gc.schedule()
        await clock.advance(0.04)
    assert gc.runs == 0
    await clock.advance(0.02)  # `delay` after the last request
    await wait_until_async(lambda: gc.runs == 1, interval=0, what="the one collection")
    await clock.advance(10)
    assert gc.runs == 1
    await gc.stop()


class Slow(Counting):
    """A collection that takes `took` seconds of the test's clock."""

    clock: LoopClock
    took = 0.2
    finished = 0

    async def collect(self) -> Stats:
        stats = await super().collect()
        self.clock.now += self.took
        self.finished += 1
        return stats


async def test_scheduled_collections_take_at_most_their_share_of_the_time(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """containerd's pause_threshold: after a 0.2 s collection, the next scheduled one waits until
    0.2 / 0.02 = 10 s after the last began (one ran after every `ctr run`, each walking every
    container: a third of the daemon's time with 500 of them); `max_pause` bounds the wait."""
    clock = LoopClock(monkeypatch)
    gc = Slow(env.db, env.content, {}, delay=0.01, max_delay=1, pause_threshold=0.02, max_pause=60)
    gc.clock = clock
    gc.schedule()
    await clock.advance(0.01)
    await wait_until_async(lambda: gc.finished == 1, interval=0, what="the first collection")
    for _ in range(3):
        gc.schedule()  # asked for again and again: still one more, and not before its time
        await clock.advance(3)
    assert gc.runs == 1  # 9.2 s after the first began
    await clock.advance(1)
    await wait_until_async(lambda: gc.runs == 2, interval=0, what="the collection after the pause")
    await clock.advance(30)
    assert gc.runs == 2
    capped = Slow(env.db, env.content, {}, delay=0.01, max_delay=1, pause_threshold=0.02, max_pause=2)
    capped.clock = clock
    capped.schedule()
    await clock.advance(0.01)
    await wait_until_async(lambda: capped.finished == 1, interval=0, what="the first collection")
    capped.schedule()
    await clock.advance(1.5)
    assert capped.runs == 1
    await clock.advance(0.6)  # 2 s after the first began, not 10
    await wait_until_async(lambda: capped.runs == 2, interval=0, what="the collection max_pause allows")
    # collect() itself is never held back
    await capped.collect()
    assert capped.runs == 3
    await gc.stop()
    await capped.stop()


async def test_mutation_threshold_and_max_delay_bound_the_wait(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LoopClock(monkeypatch)
    gc = Counting(env.db, env.content, {}, delay=10, max_delay=60, mutation_threshold=3)
    for _ in range(3):
        gc.schedule()
    # The third request makes it due at once: no time passes.
    await wait_until_async(lambda: gc.runs == 1, interval=0, what="the collection the threshold asked for")
    gc2 = Counting(env.db, env.content, {}, delay=10, max_delay=0.1)
    gc2.schedule()
    await clock.advance(0.09)
    gc2.schedule()  # would push it 10 s on, but not past max_delay after the first request
    assert gc2.runs == 0
    await clock.advance(0.02)
    await wait_until_async(lambda: gc2.runs == 1, interval=0, what="the collection max_delay bounds")
    await gc.stop()
    await gc2.stop()


async def test_stop_cancels_pending_requests(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LoopClock(monkeypatch)
    gc = Counting(env.db, env.content, {}, delay=0.05)
    gc.start()
    gc.schedule()
    await gc.stop()
    await clock.advance(1)  # past the start-up collection's time and the request's
    assert gc.runs == 0
    gc.schedule()  # ignored once stopped
    await clock.advance(1)
    assert gc.runs == 0


async def test_scheduled_collection_failure_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Collector):
        async def collect(self) -> Stats:
            raise RuntimeError("boom")

    gc = Broken(env.db, env.content, {}, delay=0.01)
    gc.schedule()
    await wait_until_async(lambda: "garbage collection failed" in caplog.text, what="the failure's log line")
    await gc.stop()


async def test_a_failed_collection_keeps_the_blobs_it_was_told_of(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Content/Delete told the collector of a blob (free); a collection that fails before the
    # blob is removed must not forget it: the next one removes it, with no orphan grace needed.
    digest = await env.blob(b"freed then failed")
    gc = env.collector(orphan_grace=timedelta(days=1))
    gc.free(digest)
    await gc.stop()  # no scheduled run: the test calls collect itself

    async def broken(self: Collector, stats: Stats) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(Collector, "_remove_orphans", broken)
    monkeypatch.setattr(Collector, "_remove_backend", lambda self, work, stats: broken(self, stats))
    with pytest.raises(OSError):
        await gc.collect()
    assert await env.content.exists(digest)
    monkeypatch.undo()
    stats = await gc.collect()
    assert stats.blobs_removed == 1
    assert not await env.content.exists(digest)


async def test_missing_backend_data_is_not_an_error(env: Env) -> None:
    digest = await env.blob(b"vanishing")
    await env.record("ns", digest)
    await env.snapshot_record("ns", "gone", "never-existed")
    await env.db.write(lambda c: c.execute(
        "INSERT INTO ingests (namespace, ref, backend_ref, created_at) VALUES ('ns', 'r', 'ns/r', ?)",
        ((now() - OLD).isoformat(),)))
    await env.content.delete(digest)
    stats = await env.collector().collect()
    assert (stats.content_removed, stats.snapshots_removed, stats.ingests_removed) == (1, 1, 1)
    with pytest.raises(NotFound):
        await env.content.info(digest)
    assert os.listdir(env.content.root / "blobs" / "sha256") == []


async def test_images_and_containers_are_roots(env: Env) -> None:
    target = await env.blob(b"index")
    referenced = await env.blob(b"by an image label")
    by_container = await env.blob(b"by a container label")
    stray = await env.blob(b"stray")
    for d in (target, referenced, by_container, stray):
        await env.record("ns", d)
    await env.native.prepare("bk-rootfs")
    await env.snapshot_record("ns", "rootfs", "bk-rootfs")
    await env.snapshot_record("ns", "loose", "bk-loose")

    def tx(conn: sqlite3.Connection) -> None:
        t = now().isoformat()
        conn.execute("INSERT INTO images (namespace, name, target_media_type, target_digest, target_size, "
                     "created_at, updated_at) VALUES ('ns', 'img', 'x', ?, 1, ?, ?)", (target, t, t))
        conn.execute("INSERT INTO image_labels VALUES ('ns', 'img', 'containerd.io/gc.ref.content.x', ?)",
                     (referenced,))
        conn.execute("INSERT INTO containers (namespace, id, labels, image, runtime_name, runtime_options_type, "
                     "spec_type, spec, snapshotter, snapshot_key, extensions, created_at, updated_at) "
                     "VALUES ('ns', 'c1', ?, 'img', 'rt', '', 't', x'', 'native', 'rootfs', '{}', ?, ?)",
                     (f'{{"containerd.io/gc.ref.content.c": "{by_container}"}}', t, t))

    await env.db.write(tx)
    stats = await env.collector().collect()
    assert (stats.content_removed, stats.snapshots_removed) == (1, 1)
    assert not await env.content.exists(stray)
    assert [r[0] for r in await env.rows("SELECT key FROM snapshots")] == ["rootfs"]
    await env.db.write(lambda c: c.execute("DELETE FROM containers"))
    await env.db.write(lambda c: c.execute("DELETE FROM images"))
    stats = await env.collector().collect()
    assert (stats.content_removed, stats.snapshots_removed) == (3, 1)
    assert await env.backend_snapshots() == set()


async def test_snapshot_cleanup_hook_replaces_the_own_orphan_sweep(env: Env) -> None:
    await env.native.prepare("orphan")
    called: list[str] = []

    async def cleanup(name: str) -> list[str]:
        called.append(name)
        return ["x", "y"]

    stats = await env.collector(snapshot_cleanup=cleanup).collect()
    assert called == ["native"] and stats.backend_snapshots_removed == 2
    assert await env.backend_snapshots() == {"orphan"}  # the hook decided
