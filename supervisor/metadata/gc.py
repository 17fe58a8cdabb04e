"""The garbage collector: mark and sweep over the metadata, then the backends.

What is a root and what refers to what is defined, as pure functions, in `gc_graph.py`.
One collection (`Collector.collect`) runs, serialised by a lock:

1. Mark, in one read transaction: load every collectable record (an `Inventory`) plus
   the roots the root providers find, then mark everything reachable and plan removals.
2. Sweep the metadata, in one write transaction: delete expired leases and the records
   of unreachable content, snapshots and ingests. If anything was written since the mark
   (seen through SQLite's change counters), the plan is recomputed inside the write
   transaction first, so a record that became reachable meanwhile is never removed.
3. Only after that commit, remove backend data: snapshots by backend key (children before
   parents), aborted ingests, and blobs no namespace's record (nor any ingest's expected
   digest) refers to any more. A crash in between leaves backend data nothing refers to,
   which step 4 of a later collection removes.
4. Orphans: backend blobs and ingests that no record refers to at all and that are older
   than `orphan_grace` (younger ones may belong to a write whose record is not committed
   yet). For snapshots, the snapshot store's own cleanup when one is given
   (`snapshot_cleanup`: it knows its in-flight creations and completes interrupted
   commits first); otherwise backend snapshots no record refers to, older than
   `orphan_grace`, children first, then each snapshotter's own `cleanup`.

Scheduling (`schedule`) follows containerd's gc scheduler: requests coalesce, and a
collection starts `delay` after the last one, at once after `mutation_threshold` requests,
and at most `max_delay` after the first. Stores call it after deleting things (`on_delete`).
As containerd's `pause_threshold`, scheduled collections take at most that share of the time:
the next starts no sooner than its duration / `pause_threshold` after the last one started
(capped at `max_pause`: ours, in Python, is slower than containerd's, and what a deletion
freed should not wait long). A collection walks every container and snapshot, and one ran
after each `ctr run`: with 500 containers, creates spent a third of the daemon's time in them.
`collect()` itself (Images.Delete with sync, `dock gc`) is never held back.
`start()` also runs one collection shortly after start-up, for what a crash left behind.

Backend writers and the collector: code that creates backend data and then the record
that refers to it (a content commit, a snapshot prepare) holds a guard shared across both
steps (`NamespacedContentStore.gc_guard`); the collector holds every guard it was given
(`guards=`) exclusively for a whole collection, so it never marks or deletes between a
writer's "it is there" and its record (containerd's collector holds its lock the same way).

Root providers: other tables whose records keep things alive register one function each
in `ROOT_PROVIDERS` (or pass `root_providers=`). A provider gets the read transaction's
connection and yields `gc_graph` nodes; adding a kind of root is one function and one entry.
Images (their target and what their labels refer to), containers (their snapshot and what
their labels refer to) and build cache records (their layer and snapshot, metadata/buildcache.py)
are those there are now; a provider whose table an older schema lacks yields nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dockyard_common.errors import DockyardError, NotFound
from supervisor.content.store import ContentStore
from supervisor.metadata import gc_graph
from supervisor.metadata.buildcache import build_cache_roots
from supervisor.metadata.db import Database
from supervisor.metadata.gc_graph import Inventory, Kind, Node, Plan
from supervisor.snapshotter.base import Snapshotter
from supervisor.timeutil import now, parse_iso

log = logging.getLogger("dockyard.gc")

RootProvider = Callable[[sqlite3.Connection], Iterable[Node]]


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def image_roots(conn: sqlite3.Connection) -> Iterator[Node]:
    """An image keeps its target and whatever its gc.ref labels name."""
    if not _has_table(conn, "images"):
        return
    for r in conn.execute("SELECT namespace, target_digest FROM images"):
        yield gc_graph.content(r[0], r[1])
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for r in conn.execute("SELECT namespace, image, key, value FROM image_labels"):
        labels.setdefault((r[0], r[1]), {})[r[2]] = r[3]
    for (ns, _), found in labels.items():
        yield from gc_graph.label_refs(ns, found)


def container_roots(conn: sqlite3.Connection) -> Iterator[Node]:
    """A container keeps its snapshot and whatever its gc.ref labels name."""
    if not _has_table(conn, "containers"):
        return
    for r in conn.execute("SELECT namespace, id, snapshotter, snapshot_key, labels FROM containers"):
        if r[2] and r[3]:
            yield gc_graph.snapshot(r[0], r[2], r[3])
        try:
            found = json.loads(r[4] or "{}")
        except ValueError:
            log.warning("container %s in namespace %s has unreadable labels", r[1], r[0])
            continue
        if isinstance(found, dict):
            yield from gc_graph.label_refs(r[0], {str(k): str(v) for k, v in found.items()})


# One entry per table whose records are roots (see the module docstring).
ROOT_PROVIDERS: list[RootProvider] = [image_roots, container_roots, build_cache_roots]

DEFAULT_INGEST_GRACE = timedelta(hours=24)  # containerd's expiry for lease-less ingests
DEFAULT_ORPHAN_GRACE = timedelta(minutes=10)
DEFAULT_DELAY = 0.1  # seconds after the last request
DEFAULT_MAX_DELAY = 1.0  # seconds after the first request, so steady traffic cannot starve it
DEFAULT_MUTATION_THRESHOLD = 100
DEFAULT_PAUSE_THRESHOLD = 0.02  # containerd's: scheduled collections take at most 2% of the time
DEFAULT_MAX_PAUSE = 2.0  # seconds: the longest a scheduled collection waits for the last one's share
STARTUP_DELAY = 0.1
STOP_WAIT = 10.0  # seconds a stopping daemon waits for a running collection


@dataclass
class Stats:
    """What one collection removed. The first four count metadata records."""

    content_removed: int = 0
    snapshots_removed: int = 0
    ingests_removed: int = 0
    leases_removed: int = 0
    blobs_removed: int = 0  # backend blobs, whether just unreferenced or found orphaned
    backend_snapshots_removed: int = 0  # orphaned backend snapshots (no record at all)
    backend_ingests_aborted: int = 0  # orphaned backend ingests (no record at all)
    duration: timedelta = field(default_factory=timedelta)

    def removed_anything(self) -> bool:
        return any((self.content_removed, self.snapshots_removed, self.ingests_removed, self.leases_removed,
                    self.blobs_removed, self.backend_snapshots_removed, self.backend_ingests_aborted))


class Guard(Protocol):
    """A backend writer's gate (e.g. `NamespacedContentStore.gc_guard`): writers hold it shared
    across "backend data exists" → "record committed"; the collector holds it exclusively."""

    def exclusive(self) -> AbstractAsyncContextManager[None]: ...


# -- reading the metadata ----------------------------------------------------------------------

def _aware(text: str) -> datetime | None:
    try:
        t = parse_iso(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def load_inventory(conn: sqlite3.Connection) -> Inventory:
    """Every collectable record; call inside a transaction."""
    inv = Inventory()
    for r in conn.execute("SELECT namespace, digest FROM content"):
        inv.content[gc_graph.content(r[0], r[1])] = {}
    for r in conn.execute("SELECT namespace, digest, key, value FROM content_labels"):
        labels = inv.content.get(gc_graph.content(r[0], r[1]))
        if labels is not None:
            labels[r[2]] = r[3]
    for r in conn.execute("SELECT namespace, snapshotter, key, backend_key, parent FROM snapshots"):
        inv.snapshots[gc_graph.snapshot(r[0], r[1], r[2])] = gc_graph.SnapshotRecord(r[3], r[4] or "")
    for r in conn.execute("SELECT namespace, snapshotter, key, label, value FROM snapshot_labels"):
        snap = inv.snapshots.get(gc_graph.snapshot(r[0], r[1], r[2]))
        if snap is not None:
            snap.labels[r[3]] = r[4]
    for r in conn.execute("SELECT namespace, ref, backend_ref, expected, created_at, leased FROM ingests"):
        created = _aware(r[4])
        if created is None:  # unreadable: treat it as brand new rather than guess it is stale
            log.warning("ingest %s in namespace %s has an unreadable creation time %r", r[1], r[0], r[4])
            created = now()
        inv.ingests[gc_graph.ingest(r[0], r[1])] = gc_graph.IngestRecord(r[2], created, r[3] or "", bool(r[5]))
    leases: dict[tuple[str, str], gc_graph.LeaseRecord] = {}
    for r in conn.execute("SELECT namespace, id FROM leases"):
        leases[(r[0], r[1])] = gc_graph.LeaseRecord(r[0], r[1])
    for r in conn.execute("SELECT namespace, lease, key, value FROM lease_labels"):
        if (lease := leases.get((r[0], r[1]))) is not None:
            lease.labels[r[2]] = r[3]
    for r in conn.execute("SELECT namespace, lease, type, id FROM lease_resources"):
        if (lease := leases.get((r[0], r[1]))) is not None:
            lease.resources.append((r[2], r[3]))
    inv.leases = list(leases.values())
    return inv


def _fingerprint(conn: sqlite3.Connection) -> tuple[int, int]:
    # total_changes counts this connection's writes, data_version moves on other connections' commits.
    return conn.total_changes, conn.execute("PRAGMA data_version").fetchone()[0]


def _referenced_digests(conn: sqlite3.Connection) -> set[str]:
    """Digests some namespace's record or some ingest's expected value still needs."""
    found = {r[0] for r in conn.execute("SELECT DISTINCT digest FROM content")}
    found.update(r[0] for r in conn.execute("SELECT DISTINCT expected FROM ingests WHERE expected != ''"))
    return found


@dataclass
class _BackendWork:
    snapshots: list[tuple[str, str]] = field(default_factory=list)  # (snapshotter, backend key), in order
    ingests: list[str] = field(default_factory=list)  # backend refs
    digests: set[str] = field(default_factory=set)  # blobs that may have lost their last record


class GcRequests:
    """Stores' requests to a collector made after them: a store takes `free`/`schedule` as its
    `on_delete` when constructed, while the collector needs the stores (their guards, cleanup);
    the collector joins this when constructed (`Collector(requests=...)`). Until then requests
    are dropped: the collector's start-up collection covers what came before it."""

    def __init__(self) -> None:
        self._collector: Collector | None = None

    def join(self, collector: Collector) -> None:
        self._collector = collector

    def free(self, digest: str) -> None:
        if self._collector is not None:
            self._collector.free(digest)

    def schedule(self) -> None:
        if self._collector is not None:
            self._collector.schedule()


class Collector:
    """Collects garbage on demand (`collect`) or soon after it is asked to (`schedule`)."""

    def __init__(
        self,
        db: Database,
        content: ContentStore,
        snapshotters: Mapping[str, Snapshotter] | None = None,
        *,
        ingest_grace: timedelta = DEFAULT_INGEST_GRACE,
        orphan_grace: timedelta = DEFAULT_ORPHAN_GRACE,
        delay: float = DEFAULT_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        mutation_threshold: int = DEFAULT_MUTATION_THRESHOLD,
        pause_threshold: float = DEFAULT_PAUSE_THRESHOLD,
        max_pause: float = DEFAULT_MAX_PAUSE,
        root_providers: Iterable[RootProvider] | None = None,
        guards: Sequence[Guard] = (),
        snapshot_cleanup: Callable[[str], Awaitable[Sequence[str] | None]] | None = None,
        requests: GcRequests | None = None,
    ) -> None:
        self.db = db
        self.content = content
        # A live mapping: snapshotters registered after construction are seen.
        self.snapshotters: Mapping[str, Snapshotter] = snapshotters if snapshotters is not None else {}
        self.ingest_grace = ingest_grace
        self.orphan_grace = orphan_grace
        self.delay = delay
        self.max_delay = max_delay
        self.mutation_threshold = mutation_threshold
        self.pause_threshold = pause_threshold
        self.max_pause = max_pause
        self._earliest = 0.0  # loop time before which no scheduled collection starts
        self._due = 0.0  # when the pending timer fires
        self._again = False  # a timer fired while a scheduled collection ran
        self._providers = root_providers
        self.guards = list(guards)
        # Orphan sweep of one snapshotter by the snapshot store; returns what it removed, if it says.
        self.snapshot_cleanup = snapshot_cleanup
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._first_request: float | None = None
        self._requests = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._freed: set[str] = set()  # digests whose records went outside a collection
        self.last: Stats | None = None
        if requests is not None:
            requests.join(self)

    # -- scheduling ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run one collection shortly after start-up, for what a crash left behind."""
        self._stopped = False
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(STARTUP_DELAY, self._fire)

    def schedule(self) -> None:
        """Ask for a collection soon; never blocks, coalesces with other requests."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        t = loop.time()
        if self._first_request is None:
            self._first_request = t
        self._requests += 1
        due = t if self._requests >= self.mutation_threshold else t + self.delay
        due = max(min(due, self._first_request + self.max_delay), self._earliest)
        self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(due, self._fire)
        self._due = due

    # The name colleagues wire as a callback after deletions.
    on_delete = schedule

    def free(self, digest: str) -> None:
        """A record of `digest` was deleted outside a collection (Content/Delete): schedule one,
        which removes the blob unless a record or an ingest still refers to it. No orphan grace:
        the blob was recorded, so no commit is still on its way to recording it (containerd's
        collector likewise removes every unreferenced blob once content was deleted)."""
        self._freed.add(digest)
        self.schedule()

    def _fire(self) -> None:
        self._timer = None
        self._first_request = None
        self._requests = 0
        if self._stopped:
            return
        if self._tasks:  # one is running: the next comes after that one's share of the time
            self._again = True
            return
        task = asyncio.get_running_loop().create_task(self._run_scheduled())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_scheduled(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.collect()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed collection must not take the daemon down; the next one retries
            log.exception("garbage collection failed")
        took = loop.time() - started
        if self.pause_threshold > 0:
            self._earliest = started + min(took / self.pause_threshold, self.max_pause)
        if self._again and not self._stopped:  # asked for while this one ran
            self._again = False
            self._arm(max(self._earliest, loop.time()))
        elif self._timer is not None and self._due < self._earliest:
            self._arm(self._earliest)
        log.debug("gc: scheduled collection took %.0f ms", took * 1000)

    async def stop(self) -> None:
        """Cancel pending requests and wait (up to STOP_WAIT seconds) for a running collection."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_WAIT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- one collection -----------------------------------------------------------------------

    async def collect(self) -> Stats:
        """Collect now (waiting for a collection in progress first) and say what went."""
        async with self._lock, AsyncExitStack() as held:
            # Writers' record-and-backend steps (shared holders) finish before the mark and
            # wait until the backends are swept, as containerd's collector holds its lock.
            for guard in self.guards:
                await held.enter_async_context(guard.exclusive())
            managed = frozenset(self.snapshotters)
            # Taken now; given back if this collection fails before their blobs are gone, so a
            # failed collection cannot forget a deleted record's blob.
            freed, self._freed = self._freed, set()
            try:
                return await self._collect(managed, freed)
            except BaseException:
                self._freed |= freed
                raise

    async def _collect(self, managed: frozenset[str], freed: set[str]) -> Stats:
        started = time.monotonic()
        stats = Stats()

        def mark(conn: sqlite3.Connection) -> tuple[Plan, tuple[int, int]]:
            return self._plan(conn, managed), _fingerprint(conn)

        planned, fingerprint = await self.db.read(mark)

        def sweep(conn: sqlite3.Connection) -> tuple[Plan, _BackendWork]:
            plan = planned
            if _fingerprint(conn) != fingerprint:  # written since the mark: mark again, now locked
                plan = self._plan(conn, managed)
            return plan, _sweep_records(conn, plan)

        done, work = (planned, _BackendWork()) if planned.empty() else await self.db.write(sweep, frees=True)
        stats.content_removed = len(done.content)
        stats.snapshots_removed = len(done.snapshots)
        stats.ingests_removed = len(done.ingests)
        stats.leases_removed = len(done.leases)
        _log_plan(done)
        freed |= work.digests  # the caller gives these back too if the rest fails
        work.digests = freed
        await self._remove_backend(work, stats)
        await self._remove_orphans(stats)
        stats.duration = timedelta(seconds=time.monotonic() - started)
        level = logging.INFO if stats.removed_anything() else logging.DEBUG
        log.log(level, "garbage collection: removed %d content, %d snapshots, %d ingests, %d leases "
                "(%d blobs, %d orphaned backend snapshots, %d orphaned ingests) in %.3fs",
                stats.content_removed, stats.snapshots_removed, stats.ingests_removed, stats.leases_removed,
                stats.blobs_removed, stats.backend_snapshots_removed, stats.backend_ingests_aborted,
                stats.duration.total_seconds())
        self.last = stats
        return stats

    def _plan(self, conn: sqlite3.Connection, managed: frozenset[str]) -> Plan:
        inv = load_inventory(conn)
        providers = ROOT_PROVIDERS if self._providers is None else self._providers
        extra = [node for provider in providers for node in provider(conn)]
        return gc_graph.collectable(inv, now(), self.ingest_grace, managed, extra)

    async def _remove_backend(self, work: _BackendWork, stats: Stats) -> None:
        for name, backend_key in work.snapshots:
            sn = self.snapshotters.get(name)
            if sn is None:
                continue
            try:
                await sn.remove(backend_key)
            except NotFound:
                pass
            except DockyardError as exc:  # left for the orphan sweep of a later collection
                log.warning("snapshotter %s: cannot remove %s: %s", name, backend_key, exc)
        for ref in work.ingests:
            await self._abort(ref)
        if work.digests:
            still = await self.db.read(_referenced_digests)
            for digest in sorted(work.digests - still):
                if await self._delete_blob(digest):
                    stats.blobs_removed += 1

    async def _abort(self, backend_ref: str) -> bool:
        try:
            await self.content.abort(backend_ref)
        except NotFound:
            return False
        except DockyardError as exc:
            log.warning("cannot abort ingest %s: %s", backend_ref, exc)
            return False
        return True

    async def _delete_blob(self, digest: str) -> bool:
        try:
            await self.content.delete(digest)
        except NotFound:
            return False
        except DockyardError as exc:
            log.warning("cannot remove blob %s: %s", digest, exc)
            return False
        log.info("gc: removed blob %s", digest)
        return True

    async def _remove_orphans(self, stats: Stats) -> None:
        cutoff = now() - self.orphan_grace

        def refs(conn: sqlite3.Connection) -> tuple[set[str], set[str], dict[str, set[str]]]:
            snaps: dict[str, set[str]] = {}
            for r in conn.execute("SELECT snapshotter, backend_key FROM snapshots"):
                snaps.setdefault(r[0], set()).add(r[1])
            ingests = {r[0] for r in conn.execute("SELECT backend_ref FROM ingests")}
            return _referenced_digests(conn), ingests, snaps

        digests, ingests, snaps = await self.db.read(refs)
        async for info in self.content.walk():
            if info.digest not in digests and info.updated_at < cutoff and await self._delete_blob(info.digest):
                stats.blobs_removed += 1
        for status in await self.content.list_statuses():
            if status.ref not in ingests and status.updated_at < cutoff and await self._abort(status.ref):
                log.info("gc: aborted orphaned ingest %s", status.ref)
                stats.backend_ingests_aborted += 1
        for name, sn in list(self.snapshotters.items()):
            if self.snapshot_cleanup is None:
                stats.backend_snapshots_removed += await self._remove_orphan_snapshots(
                    name, sn, snaps.get(name, set()), cutoff)
                continue
            try:
                removed = await self.snapshot_cleanup(name)
            except DockyardError as exc:
                log.warning("snapshotter %s: cleanup failed: %s", name, exc)
                continue
            stats.backend_snapshots_removed += len(removed or ())

    async def _remove_orphan_snapshots(self, name: str, sn: Snapshotter, referenced: set[str],
                                       cutoff: datetime) -> int:
        infos = {info.name: info async for info in sn.walk()}
        children: dict[str, set[str]] = {}
        for info in infos.values():
            if info.parent:
                children.setdefault(info.parent, set()).add(info.name)
        doomed = {k for k, info in infos.items()
                  if k not in referenced and max(info.created_at, info.updated_at) < cutoff}
        removed = 0
        # Leaves first; a snapshot whose children are not all going stays (the backend would refuse).
        progress = True
        while doomed and progress:
            progress = False
            for key in sorted(k for k in doomed if not children.get(k)):
                doomed.discard(key)
                progress = True
                try:
                    await sn.remove(key)
                except NotFound:
                    pass
                except DockyardError as exc:
                    log.warning("snapshotter %s: cannot remove orphaned snapshot %s: %s", name, key, exc)
                    continue
                log.info("gc: removed orphaned snapshot %s from snapshotter %s", key, name)
                removed += 1
                parent = infos[key].parent
                if parent in children:
                    children[parent].discard(key)
        try:
            await sn.cleanup()
        except DockyardError as exc:
            log.warning("snapshotter %s: cleanup failed: %s", name, exc)
        return removed


def _sweep_records(conn: sqlite3.Connection, plan: Plan) -> _BackendWork:
    """Delete the planned records; what the backends should then remove. Write transaction."""
    work = _BackendWork()
    for ns, lease_id in plan.leases:
        conn.execute("DELETE FROM leases WHERE namespace=? AND id=?", (ns, lease_id))
    for node in plan.content:
        conn.execute("DELETE FROM content WHERE namespace=? AND digest=?", (node.namespace, node.key))
        work.digests.add(node.key)
    for node in plan.snapshots:
        row = conn.execute("SELECT backend_key FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?",
                           (node.namespace, node.snapshotter, node.key)).fetchone()
        if row is None:
            continue
        conn.execute("DELETE FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?",
                     (node.namespace, node.snapshotter, node.key))
        work.snapshots.append((node.snapshotter, row[0]))
    for node in plan.ingests:
        row = conn.execute("SELECT backend_ref FROM ingests WHERE namespace=? AND ref=?",
                           (node.namespace, node.key)).fetchone()
        if row is None:
            continue
        conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (node.namespace, node.key))
        work.ingests.append(row[0])
    return work


def _log_plan(plan: Plan) -> None:
    for ns, lease_id in plan.leases:
        log.info("gc: removed expired lease %s in namespace %s", lease_id, ns)
    for node in [*plan.content, *plan.snapshots, *plan.ingests]:
        log.info("gc: removed %s", node)


__all__ = [
    "ROOT_PROVIDERS", "Collector", "Guard", "Kind", "RootProvider", "Stats", "container_roots", "image_roots",
    "load_inventory",
]
