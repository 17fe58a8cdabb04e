"""Namespaced snapshots: what clients see, on top of backend snapshotters that know no namespaces.

Words
    key          what a client calls a snapshot inside (namespace, snapshotter): an active
                 snapshot's or a view's key, or a committed snapshot's name (one key space).
                 Any non-empty text without NUL (spaces, slashes, ".." included).
    backend key  the name the backend snapshotter knows it by: `<namespace>/<n>/<key>`, n from
                 a daemon-wide counter, so no two records (in any namespaces) ever share one
                 and a key that looks like a backend key ("default/12/x") cannot alias one.
    record       a row of `snapshots` (+ `snapshot_labels`): key → backend key, the parent's
                 key, times, labels. Labels live only here (the backend gets none from
                 clients); the kind comes from the backend.

Consistency between the record and the backend (a crash may strike between any two steps):
    prepare/view  backend first, record second: a staged counter value gives the backend
                  key, the backend creates the snapshot, then one transaction inserts the
                  record and attaches the lease. If that transaction fails the backend
                  snapshot is removed again (compensation); a crash in between leaves an
                  orphaned backend snapshot, which `cleanup` removes.
    remove        record first, backend second (in the background, in order): a crash leaves
                  an orphaned backend snapshot.
    commit        the one step that moves data the record names: the backend commits the
                  active backend key K under a new backend key N, labelled with what the
                  record update will be (`COMMIT_LABEL`); then one transaction moves the
                  record to the new name. A crash in between leaves a record naming K, which
                  no longer exists: `recover` (run before the first operation and by
                  `cleanup`) finds N by its label and completes the record update. So no
                  record is ever left without backend data once the store is in use.
    update        labels are metadata only: no backend call.
Concurrent calls on one key are serialised by in-memory locks (one daemon owns the database);
a snapshot being used as a parent by an in-flight prepare/view cannot be removed meanwhile.

Errors, in containerd's words: NotFound `snapshot X does not exist`, `parent snapshot X does not
exist`; AlreadyExists `snapshot "X"`; InvalidArgument `parent "X" is not committed snapshot`,
`snapshotter not loaded: X`, `cannot update "f" field on snapshot "X"`, bad labels
(`info.Labels: ...`), bad filters; FailedPrecondition `cannot remove snapshot with child`,
mounts of a committed snapshot, commit of a view or committed snapshot.

The garbage collector may delete records itself with `delete_record` inside its own write
transaction and then call `remove_backend` (or leave the data to `cleanup`). The daemon should
`await drain()` before it closes the backends; what it does not wait for is an orphan.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.goquote import go_quote
from dockyard_common.types import Info, Kind, Mount, Usage
from supervisor import fieldpaths, filters
from supervisor import labels as labelrules
from supervisor.metadata import leases, namespaces
from supervisor.metadata.db import Database
from supervisor.metadata.guard import GcGuard
from supervisor.snapshotter.base import Snapshotter
from supervisor.timeutil import now_iso, parse_iso

log = logging.getLogger(__name__)

# Backend label naming what an interrupted commit was going to write to the record (JSON).
COMMIT_LABEL = "dockyard.io/commit"
# A prepare label naming the committed snapshot the caller means to create (containerd's).
TARGET_LABEL = "containerd.io/snapshot.ref"
# Row of the `server` table holding the last backend key number handed out.
SEQUENCE_KEY = "snapshots.sequence"
_KINDS = {Kind.ACTIVE: "active", Kind.VIEW: "view", Kind.COMMITTED: "committed"}


def check_key(key: str, what: str = "key") -> str:
    if not key:
        raise InvalidArgument(f"snapshot {what} must not be empty")
    if "\x00" in key:
        raise InvalidArgument(f"snapshot {what} {go_quote(key)} must not contain NUL")
    return key


def resource(snapshotter: str, key: str) -> leases.Resource:
    return leases.Resource(key, f"{leases.SNAPSHOT_PREFIX}{snapshotter}")


def adaptor(info: Info) -> filters.Adaptor:
    """containerd's snapshot filter fields: name, parent, kind (always present), labels.<key>."""

    def lookup(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "name":
            return info.name, True
        if head == "parent":
            return info.parent, True
        if head == "kind":
            kind = _KINDS.get(info.kind)
            return (kind, True) if kind else ("", False)
        if head == "labels":
            key = ".".join(path[1:])
            if key in info.labels:
                return info.labels[key], True
        return "", False

    return lookup


# -- record access (inside a transaction) --------------------------------------------------


@dataclass
class _Row:
    key: str
    backend_key: str
    parent: str
    created_at: str
    updated_at: str
    labels: dict[str, str] = field(default_factory=dict)

    def info(self, kind: Kind) -> Info:
        return Info(self.key, self.parent, kind, parse_iso(self.created_at), parse_iso(self.updated_at),
                    dict(self.labels))


def _row(conn: sqlite3.Connection, ns: str, sn: str, key: str) -> _Row | None:
    r = conn.execute("SELECT backend_key, parent, created_at, updated_at FROM snapshots "
                     "WHERE namespace=? AND snapshotter=? AND key=?", (ns, sn, key)).fetchone()
    if r is None:
        return None
    labels = {x[0]: x[1] for x in conn.execute(
        "SELECT label, value FROM snapshot_labels WHERE namespace=? AND snapshotter=? AND key=?", (ns, sn, key))}
    return _Row(key, r[0], r[1], r[2], r[3], labels)


def _require(conn: sqlite3.Connection, ns: str, sn: str, key: str) -> _Row:
    row = _row(conn, ns, sn, key)
    if row is None:
        raise NotFound(f"snapshot {key} does not exist")
    return row


def _put_labels(conn: sqlite3.Connection, ns: str, sn: str, key: str, values: Mapping[str, str]) -> None:
    conn.execute("DELETE FROM snapshot_labels WHERE namespace=? AND snapshotter=? AND key=?", (ns, sn, key))
    conn.executemany("INSERT INTO snapshot_labels (namespace, snapshotter, key, label, value) VALUES (?, ?, ?, ?, ?)",
                     [(ns, sn, key, k, v) for k, v in values.items() if v != ""])


def _next_backend_key(conn: sqlite3.Connection, ns: str, key: str) -> str:
    r = conn.execute("SELECT value FROM server WHERE key=?", (SEQUENCE_KEY,)).fetchone()
    n = int(r[0]) + 1 if r is not None else 1
    conn.execute("INSERT INTO server (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                 (SEQUENCE_KEY, str(n)))
    return f"{ns}/{n}/{key}"


def _lease_exists(conn: sqlite3.Connection, ns: str, lease: str) -> bool:
    return conn.execute("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lease)).fetchone() is not None


def _has_children(conn: sqlite3.Connection, ns: str, sn: str, key: str) -> bool:
    return conn.execute("SELECT 1 FROM snapshots WHERE namespace=? AND snapshotter=? AND parent=? LIMIT 1",
                        (ns, sn, key)).fetchone() is not None


def delete_record(conn: sqlite3.Connection, ns: str, sn: str, key: str) -> str:
    """Delete a record (labels and lease references too); returns its backend key.

    For the garbage collector, inside its write transaction. NotFound if absent,
    FailedPrecondition if other records name it as their parent.
    """
    row = _require(conn, ns, sn, key)
    if _has_children(conn, ns, sn, key):
        raise FailedPrecondition("cannot remove snapshot with child")
    conn.execute("DELETE FROM snapshots WHERE namespace=? AND snapshotter=? AND key=?", (ns, sn, key))
    leases.detach_everywhere(conn, ns, resource(sn, key))
    return row.backend_key


def _reword(exc: DockyardError, names: Mapping[str, str]) -> DockyardError:
    """`exc` with backend keys in its message replaced by the client's keys."""
    message = exc.message
    for backend, key in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if backend:
            message = message.replace(repr(backend), go_quote(key)).replace(backend, key)
    if message == exc.message:
        return exc
    new = copy.copy(exc)
    new.message = message
    new.args = (message,)
    return new


# -- in-memory coordination --------------------------------------------------------------


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _KeyLocks:
    """One lock per (namespace, snapshotter, key), taken in sorted order (no deadlocks)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str, str], _Slot] = {}

    @asynccontextmanager
    async def hold(self, *keys: tuple[str, str, str]) -> AsyncIterator[None]:
        taken: list[tuple[str, str, str]] = []
        try:
            for k in sorted(set(keys)):
                slot = self._slots.setdefault(k, _Slot())
                slot.users += 1
                try:
                    await slot.lock.acquire()
                except BaseException:
                    self._drop(k)
                    raise
                taken.append(k)
            yield
        finally:
            for k in reversed(taken):
                self._slots[k].lock.release()
                self._drop(k)

    def _drop(self, k: tuple[str, str, str]) -> None:
        slot = self._slots[k]
        slot.users -= 1
        if slot.users == 0:
            del self._slots[k]


# -- the store -------------------------------------------------------------------------------


class SnapshotStore:
    """Every namespace's snapshots in every loaded snapshotter (see the module docstring)."""

    def __init__(self, db: Database, backends: Mapping[str, Snapshotter],
                 on_delete: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self.backends = backends
        self.on_delete = on_delete
        self._locks = _KeyLocks()
        self._pins: Counter[tuple[str, str, str]] = Counter()  # parents of in-flight creations
        self._inflight: set[tuple[str, str]] = set()  # (snapshotter, backend key) not yet recorded
        self._recovered = False
        self._recovering = asyncio.Lock()
        self.gc_guard = GcGuard()
        self._removals: set[asyncio.Task[None]] = set()
        self._last_removal: asyncio.Task[None] | None = None

    def backend(self, snapshotter: str) -> Snapshotter:
        if not snapshotter:
            raise InvalidArgument("snapshotter argument missing")
        found = self.backends.get(snapshotter)
        if found is None:
            raise InvalidArgument(f"snapshotter not loaded: {snapshotter}")
        return found

    async def _ready(self, snapshotter: str) -> Snapshotter:
        backend = self.backend(snapshotter)
        if not self._recovered:
            async with self._recovering:
                if not self._recovered:
                    await self.recover()
                    self._recovered = True
        return backend

    # -- reads ------------------------------------------------------------------------------

    async def _lookup(self, ns: str, sn: str, key: str) -> _Row:
        check_key(key)
        return await self.db.read(lambda conn: _require(conn, ns, sn, key))

    async def _kind(self, backend: Snapshotter, row: _Row) -> Kind:
        try:
            return (await backend.stat(row.backend_key)).kind
        except NotFound:
            raise NotFound(f"snapshot {row.key} does not exist") from None

    async def stat(self, ns: str, sn: str, key: str) -> Info:
        backend = await self._ready(sn)
        row = await self._lookup(ns, sn, key)
        return row.info(await self._kind(backend, row))

    async def mounts(self, ns: str, sn: str, key: str) -> builtins.list[Mount]:
        backend = await self._ready(sn)
        row = await self._lookup(ns, sn, key)
        try:
            return await backend.mounts(row.backend_key)
        except DockyardError as exc:
            raise _reword(exc, {row.backend_key: key}) from None

    async def usage(self, ns: str, sn: str, key: str) -> Usage:
        backend = await self._ready(sn)
        row = await self._lookup(ns, sn, key)
        try:
            return await backend.usage(row.backend_key)
        except DockyardError as exc:
            raise _reword(exc, {row.backend_key: key}) from None

    async def list(self, ns: str, sn: str, filter_texts: Iterable[str] = ()) -> builtins.list[Info]:
        """The namespace's snapshots matching any of the filters (all with none), by key."""
        match = filters.parse_all(list(filter_texts))
        backend = await self._ready(sn)

        def tx(conn: sqlite3.Connection) -> builtins.list[_Row]:
            rows = {r[0]: _Row(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(
                "SELECT key, backend_key, parent, created_at, updated_at FROM snapshots "
                "WHERE namespace=? AND snapshotter=? ORDER BY key", (ns, sn))}
            for key, label, value in conn.execute(
                    "SELECT key, label, value FROM snapshot_labels WHERE namespace=? AND snapshotter=?", (ns, sn)):
                if key in rows:
                    rows[key].labels[label] = value
            return list(rows.values())

        rows = await self.db.read(tx)
        if not rows:
            return []
        kinds = {i.name: i.kind async for i in backend.walk()}
        found = []
        for row in rows:
            kind = kinds.get(row.backend_key)
            if kind is None:  # removed from the backend meanwhile (containerd skips these too)
                continue
            info = row.info(kind)
            if match.match(adaptor(info)):
                found.append(info)
        return found

    # -- creation -----------------------------------------------------------------------------

    async def prepare(self, ns: str, sn: str, key: str, parent: str = "",
                      labels: Mapping[str, str] | None = None, lease: str = "") -> builtins.list[Mount]:
        return await self._create(Kind.ACTIVE, ns, sn, key, parent, labels, lease)

    async def view(self, ns: str, sn: str, key: str, parent: str = "",
                   labels: Mapping[str, str] | None = None, lease: str = "") -> builtins.list[Mount]:
        return await self._create(Kind.VIEW, ns, sn, key, parent, labels, lease)

    async def _create(self, kind: Kind, ns: str, sn: str, key: str, parent: str,
                      labels: Mapping[str, str] | None, lease: str) -> builtins.list[Mount]:
        check_key(key)
        if parent:
            check_key(parent, "parent")
        values = dict(labels or {})
        labelrules.validate(values, "info.Labels")
        backend = await self._ready(sn)

        target = values.get(TARGET_LABEL, "")

        def stage(conn: sqlite3.Connection) -> tuple[str, str]:
            # containerd's unpack may name the committed snapshot it is about to make: if that
            # exists already, there is nothing to unpack.
            if target and _row(conn, ns, sn, target) is not None:
                raise AlreadyExists(f"target snapshot {go_quote(target)}")
            if _row(conn, ns, sn, key) is not None:
                raise AlreadyExists(f"snapshot {go_quote(key)}")
            bparent = ""
            if parent:
                prow = _row(conn, ns, sn, parent)
                if prow is None:
                    raise NotFound(f"parent snapshot {parent} does not exist")
                bparent = prow.backend_key
            if lease and not _lease_exists(conn, ns, lease):
                raise NotFound(f"lease {go_quote(lease)}")
            return _next_backend_key(conn, ns, key), bparent

        def record(conn: sqlite3.Connection, bkey: str, bparent: str) -> None:
            if parent:
                prow = _row(conn, ns, sn, parent)
                if prow is None or prow.backend_key != bparent:  # removed (and re-made) meanwhile
                    raise NotFound(f"parent snapshot {parent} does not exist")
            namespaces.ensure(conn, ns)
            stamp = now_iso()
            conn.execute("INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (ns, sn, key, bkey, parent, stamp, stamp))
            _put_labels(conn, ns, sn, key, values)
            leases.attach(conn, ns, lease, resource(sn, key))

        pin = (ns, sn, parent)
        async with self._locks.hold((ns, sn, key)):
            if parent:
                self._pins[pin] += 1  # before the check below, with no await between: remove sees it
            try:
                bkey, bparent = await self.db.write(stage)
                async with self.gc_guard.shared():
                    self._inflight.add((sn, bkey))
                    try:
                        create = backend.prepare if kind == Kind.ACTIVE else backend.view
                        try:
                            mounts = await create(bkey, bparent, _for_backend(values))
                        except DockyardError as exc:
                            raise _reword(exc, {bkey: key, bparent: parent}) from None
                        try:
                            await self.db.write(functools.partial(record, bkey=bkey, bparent=bparent))
                        except BaseException:
                            await self._discard(backend, bkey)  # compensate: no record, so no data
                            raise
                        return mounts
                    finally:
                        self._inflight.discard((sn, bkey))
            finally:
                if parent:
                    self._pins[pin] -= 1
                    if self._pins[pin] <= 0:
                        del self._pins[pin]

    async def _discard(self, backend: Snapshotter, bkey: str) -> None:
        try:
            await asyncio.shield(backend.remove(bkey))
        except NotFound:
            pass
        except Exception as exc:  # cleanup() retries it as an orphan
            log.warning("failed to remove unrecorded snapshot %s from %s: %s", bkey, backend.name, exc)

    # -- commit -----------------------------------------------------------------------------

    async def commit(self, ns: str, sn: str, name: str, key: str,
                     labels: Mapping[str, str] | None = None, lease: str = "") -> None:
        """Commit active `key` as `name`: the record moves to `name`, keeps its parent,
        gets `labels` (not the active snapshot's) and fresh times; held by `lease`."""
        check_key(name, "name")
        check_key(key)
        values = {k: v for k, v in (labels or {}).items() if v != ""}
        labelrules.validate(values, "info.Labels")
        backend = await self._ready(sn)

        def stage(conn: sqlite3.Connection) -> tuple[str, str]:
            if _row(conn, ns, sn, name) is not None:
                raise AlreadyExists(f"snapshot {go_quote(name)}")
            row = _require(conn, ns, sn, key)
            if lease and not _lease_exists(conn, ns, lease):
                raise NotFound(f"lease {go_quote(lease)}")
            return row.backend_key, _next_backend_key(conn, ns, name)

        async with self._locks.hold((ns, sn, key), (ns, sn, name)):
            bkey, bname = await self.db.write(stage)
            intent = {"namespace": ns, "from": key, "backend_from": bkey, "name": name, "labels": values,
                      "lease": lease}
            async with self.gc_guard.shared():
                await self._commit(backend, sn, key, name, bkey, bname, intent)

    async def _commit(self, backend: Snapshotter, sn: str, key: str, name: str, bkey: str, bname: str,
                      intent: Mapping[str, object]) -> None:
        self._inflight.add((sn, bname))
        try:
            try:
                await backend.commit(bname, bkey, labels={COMMIT_LABEL: json.dumps(intent)})
            except DockyardError as exc:
                raise _reword(exc, {bkey: key, bname: name}) from None
            try:
                await self.db.write(functools.partial(_move, sn=sn, bkey=bkey, bname=bname, intent=intent))
            except BaseException:
                # The backend has committed: the record must follow, now or at recovery.
                log.exception("commit of snapshot %s as %s: record update failed; recovery completes it",
                              key, name)
                self._recovered = False
                raise
        finally:
            self._inflight.discard((sn, bname))

    # -- removal ----------------------------------------------------------------------------

    async def remove(self, ns: str, sn: str, key: str) -> None:
        check_key(key)
        await self._ready(sn)
        async with self._locks.hold((ns, sn, key)):
            if self._pins.get((ns, sn, key)):
                raise FailedPrecondition("cannot remove snapshot with child")
            bkey = await self.db.write(lambda conn: delete_record(conn, ns, sn, key), frees=True)
        self.remove_backend(sn, bkey)
        self.on_delete()

    def remove_backend(self, sn: str, bkey: str) -> None:
        """Remove, in the background, a backend snapshot whose record is gone.

        The caller does not wait for the disk work (containerd leaves it to its collector
        altogether). Removals run one at a time in order, so a child's data always goes
        before its parent's; failures are left to `cleanup`. `drain` waits for them.
        """
        backend = self.backends.get(sn)
        if backend is None:
            return
        before = self._last_removal

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])
            await self._discard(backend, bkey)

        task = asyncio.get_running_loop().create_task(run())
        self._last_removal = task
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def drain(self) -> None:
        """Wait until every background removal has finished."""
        while self._removals:
            await asyncio.wait(set(self._removals))

    # -- update -----------------------------------------------------------------------------

    async def update(self, ns: str, sn: str, info: Info, paths: Iterable[str] = ()) -> Info:
        """Set labels: all of them (no paths, or `labels`), or the `labels.<key>` ones named."""
        if not info.name:
            raise InvalidArgument("snapshot name must not be empty")
        check_key(info.name)
        _, label_paths = fieldpaths.split_paths(list(paths), {"labels"}, kind="snapshot", name=info.name)
        mask = label_paths or ["labels"]
        backend = await self._ready(sn)

        def tx(conn: sqlite3.Connection) -> _Row:
            row = _require(conn, ns, sn, info.name)
            new = fieldpaths.apply_label_paths(row.labels, info.labels, mask)
            labelrules.validate(new, "info.Labels")
            stamp = now_iso()
            conn.execute("UPDATE snapshots SET updated_at=? WHERE namespace=? AND snapshotter=? AND key=?",
                         (stamp, ns, sn, info.name))
            _put_labels(conn, ns, sn, info.name, new)
            row.labels, row.updated_at = new, stamp
            return row

        async with self._locks.hold((ns, sn, info.name)):
            row = await self.db.write(tx)
            return row.info(await self._kind(backend, row))

    # -- maintenance --------------------------------------------------------------------------

    async def cleanup(self, sn: str) -> None:
        """Complete interrupted commits, remove backend snapshots no record refers to, then let
        the backend reclaim its own leftovers."""
        backend = self.backend(sn)
        await self.drain()
        await self.recover()
        self._recovered = True
        await self.sweep(sn)
        await backend.cleanup()

    async def recover(self) -> None:
        """Complete commits a crash interrupted between the backend and the record update."""
        for sn, backend in self.backends.items():
            committed: dict[str, dict[str, object]] = {}
            present: set[str] = set()
            async for info in backend.walk():
                present.add(info.name)
                raw = info.labels.get(COMMIT_LABEL)
                if raw:
                    try:
                        committed[info.name] = json.loads(raw)
                    except ValueError:
                        log.warning("snapshot %s in %s has an unreadable %s label", info.name, sn, COMMIT_LABEL)
            rows = await self.db.read(functools.partial(_records_of, sn=sn))
            referenced = {r[2] for r in rows}
            for ns, key, bkey in rows:
                if bkey in present or (sn, bkey) in self._inflight:
                    continue
                done = [n for n, intent in committed.items() if n not in referenced
                        and intent.get("namespace") == ns and intent.get("from") == key
                        and intent.get("backend_from") == bkey]
                if not done:
                    log.error("snapshot %s in namespace %s (%s) has no data in the backend (%s)", key, ns, sn, bkey)
                    continue
                bname = done[0]
                try:
                    await self.db.write(functools.partial(_move, sn=sn, bkey=bkey, bname=bname,
                                                          intent=committed[bname]))
                except DockyardError as exc:
                    log.error("cannot complete the interrupted commit of snapshot %s in namespace %s (%s): %s",
                              key, ns, sn, exc)
                    continue
                referenced.add(bname)
                log.warning("completed the interrupted commit of snapshot %s in namespace %s (%s)", key, ns, sn)

    async def sweep(self, sn: str) -> builtins.list[str]:
        """Remove backend snapshots that no record refers to (children first); returns them."""
        backend = self.backend(sn)
        await self.drain()
        infos = [i async for i in backend.walk()]
        busy = {b for s, b in self._inflight if s == sn}  # taken before reading the records: see below
        rows = await self.db.read(functools.partial(_records_of, sn=sn))
        # A creation adds its backend key to _inflight before making it and drops it only after
        # its record committed; so a key the walk saw is either in `busy` or in `rows`.
        keep = {r[2] for r in rows} | busy | {b for s, b in self._inflight if s == sn}
        parents = {i.name: i.parent for i in infos}

        def depth(name: str) -> int:
            d = 0
            while parents.get(name):
                name = parents[name]
                d += 1
            return d

        removed = []
        for name in sorted((i.name for i in infos if i.name not in keep), key=depth, reverse=True):
            try:
                await backend.remove(name)
            except (FailedPrecondition, NotFound) as exc:  # a kept child, or gone meanwhile
                log.debug("orphan snapshot %s in %s kept: %s", name, sn, exc)
                continue
            removed.append(name)
        if removed:
            log.info("removed %d orphaned snapshots from %s", len(removed), sn)
        return removed


def _records_of(conn: sqlite3.Connection, sn: str) -> builtins.list[tuple[str, str, str]]:
    """(namespace, key, backend key) of every record in snapshotter `sn`."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT namespace, key, backend_key FROM snapshots WHERE snapshotter=?", (sn,))]


def _move(conn: sqlite3.Connection, sn: str, bkey: str, bname: str, intent: Mapping[str, object]) -> None:
    """The record half of a commit: the record of backend key `bkey` becomes `intent["name"]`."""
    ns, key, name = str(intent["namespace"]), str(intent["from"]), str(intent["name"])
    labels = intent.get("labels") or {}
    lease = str(intent.get("lease") or "")
    row = _require(conn, ns, sn, key)
    if row.backend_key != bkey:
        raise NotFound(f"snapshot {key} does not exist")
    if _row(conn, ns, sn, name) is not None:
        raise AlreadyExists(f"snapshot {go_quote(name)}")
    stamp = now_iso()
    # snapshot_labels follow the key (ON UPDATE CASCADE), then are replaced.
    conn.execute("UPDATE snapshots SET key=?, backend_key=?, created_at=?, updated_at=? "
                 "WHERE namespace=? AND snapshotter=? AND key=?", (name, bname, stamp, stamp, ns, sn, key))
    assert isinstance(labels, dict)
    _put_labels(conn, ns, sn, name, labels)
    # The active snapshot is gone under its key: no lease holds it any more.
    leases.detach_everywhere(conn, ns, resource(sn, key))
    if lease and _lease_exists(conn, ns, lease):
        leases.attach(conn, ns, lease, resource(sn, name))


BACKEND_LABEL_PREFIX = "containerd.io/snapshot/"


def _for_backend(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a snapshotter itself acts on (containerd's rule: those under
    containerd.io/snapshot/, e.g. the ID mapping of a container in a user namespace)."""
    return {k: v for k, v in labels.items() if k.startswith(BACKEND_LABEL_PREFIX)}
