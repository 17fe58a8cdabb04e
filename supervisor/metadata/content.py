"""Namespaced content: containerd's metadata semantics over a bytes-only ContentStore.

Words
-----
record
    A row of `content(namespace, digest, ...)` plus its labels: the blob as one namespace sees
    it. A namespace sees a blob only through its record; `info`, `list`, `update`, `reader`
    and `delete` never look past the records of the calling namespace.
blob
    The bytes, kept once in the backend store however many namespaces record them.
ingest
    A namespace's unfinished write, `ingests(namespace, ref, backend_ref, expected)`. The
    backend ingest it drives is named `backend_ref(namespace, ref)`, so two namespaces may
    use the same ref without meeting. `expected` is set only for a *shared* ingest (below);
    it tells the garbage collector to keep that blob while the ingest lives.

Lifecycle
---------
::

    w = await store.writer(ns, "layer-1", total=n, expected=d, lease=lease_id)
    st = w.status()                 # offset: where to continue (n for a shared ingest)
    await w.write(data[st.offset:], st.offset)
    await w.commit(n, d, labels={"k": "v"})     # records (ns, d); AlreadyExists if it was
    # or: await w.close()          # keep the ingest; resume later with writer(ns, ref)
    # or: await store.abort(ns, "layer-1")

Sharing (containerd 1.6's default "shared" policy): when `expected` is given, is not recorded
in the namespace, but the backend already holds that blob (with the same size, if `total`
is given), the writer needs no bytes: its status reads complete (offset = total = the
blob's size) and `commit` just records the blob in the namespace. A client that writes
anyway (from offset 0, or from the end) gets a real ingest, seeded with the blob's bytes when
it continues at the end, exactly as containerd does. When the namespace already records
`expected`, `writer` attaches the content to the lease and raises AlreadyExists.

Garbage collection: `delete` only drops the namespace's record and calls `on_delete(digest)`;
the collector removes a blob once no namespace records it and no ingest names it as `expected`,
and backend ingests whose backend ref is in no `ingests` row. An ingest begun under a lease
goes once no live lease holds it (the client deleted its lease after a failed write, say);
one begun without a lease is kept for a grace period, for a later resume (containerd's rule).
Writers, commits, deletes and aborts hold `gc_guard.shared()` around their record-and-backend
steps, so a collector that takes `gc_guard.exclusive()` never sees a blob published but not
yet recorded.

Cached records: `info` (and `exists`, `reader`) answer from an in-memory copy of records read
before, without a hop to the metadata thread. A `Database.watch` on `content` and
`content_labels` moves inside every transaction that changes those tables, whoever runs it
(this module, the collector's sweep): a copy read at generation g is current while
`generation == g`, and the whole copy is dropped when it moves. Lease, snapshot and container
writes leave it be, so it stays warm through `ctr run`. Writes by other processes to
metadata.db are not seen.

Errors: InvalidArgument (malformed digest, empty ref, bad labels, an update path other than
`labels`/`labels.<key>`, bad filters); NotFound (no record of the digest in the namespace,
unknown ingest ref); AlreadyExists; Unavailable (the ref's writer is open elsewhere);
FailedPrecondition (size or digest mismatch at commit, use after commit or close);
ResourceExhausted (disk full).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from dockyard_common.errors import (
    AlreadyExists,
    DockyardError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from supervisor import filters
from supervisor import labels as labelrules
from supervisor.content.cache import Lru
from supervisor.content.digest import parse_digest
from supervisor.content.ingest import quote
from supervisor.content.store import BlobReader, ContentStore, Info, Status, Writer
from supervisor.fieldpaths import apply_label_paths, split_paths
from supervisor.metadata import namespaces
from supervisor.metadata.db import Database
from supervisor.metadata.guard import GcGuard
from supervisor.metadata.leases import Resource, attach, detach_everywhere
from supervisor.timeutil import now, parse_iso

log = logging.getLogger("dockyard.content")

CONTENT = "content"
INGESTS = "ingests"
_COPY_CHUNK = 1 << 20


def backend_ref(namespace: str, ref: str) -> str:
    """The backend's name for a namespace's ingest (a namespace never contains '/')."""
    return f"{namespace}/{ref}"


def _check_ref(ref: object) -> str:
    if not isinstance(ref, str):
        raise InvalidArgument(f"ref must be a string, not {type(ref).__name__}")
    if not ref:
        raise InvalidArgument("ref must not be empty")
    return ref


def _check_digest(digest: object) -> str:
    parse_digest(digest)
    return digest  # type: ignore[return-value]  # parse_digest proved it is a str


def _rename_refs(exc: DockyardError, bref: str, ref: str) -> DockyardError:
    """The same error with the backend's ref replaced by the namespace's (for messages)."""
    if bref not in exc.message:
        return exc
    message = exc.message.replace(quote(bref), quote(ref)).replace(bref, ref)
    return type(exc)(message)


def _labels_of(conn: sqlite3.Connection, ns: str, digest: str) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM content_labels WHERE namespace=? AND digest=?", (ns, digest))
    return {r["key"]: r["value"] for r in rows}


def _info(row: sqlite3.Row, labels: dict[str, str]) -> Info:
    return Info(row["digest"], row["size"], parse_iso(row["created_at"]), parse_iso(row["updated_at"]), labels)


def _get(conn: sqlite3.Connection, ns: str, digest: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM content WHERE namespace=? AND digest=?", (ns, digest)).fetchone()
    if row is None:
        raise NotFound(f"content digest {digest}")
    return row


def _set_labels(conn: sqlite3.Connection, ns: str, digest: str, labels: Mapping[str, str]) -> None:
    conn.execute("DELETE FROM content_labels WHERE namespace=? AND digest=?", (ns, digest))
    conn.executemany("INSERT INTO content_labels (namespace, digest, key, value) VALUES (?, ?, ?, ?)",
                     [(ns, digest, k, v) for k, v in labels.items() if v != ""])


def _adaptor(info: Info) -> filters.Adaptor:
    # containerd's fields (digest, labels.<key>), plus size, which containerd leaves a TODO.
    return filters.adaptor_from({"digest": info.digest, "size": str(info.size), "labels": info.labels})


def _status_adaptor(status: Status) -> filters.Adaptor:
    def lookup(fieldpath: list[str]) -> tuple[str, bool]:
        if fieldpath == ["ref"]:
            return status.ref, True
        if fieldpath == ["expected"]:
            return status.expected, status.expected != ""
        return "", False

    return lookup


class NamespacedContentStore:
    """Records per namespace over one `ContentStore`; see the module docstring."""

    def __init__(self, db: Database, backend: ContentStore,
                 on_delete: Callable[[str], None] = lambda digest: None, max_cached: int = 4096) -> None:
        self.db = db
        self.backend = backend
        self.on_delete = on_delete
        self.gc_guard = GcGuard()
        self._watch = db.watch("content", "content_labels")
        # (namespace, digest) -> its record, all read at `_cached_at`.
        self._cached: Lru[tuple[str, str], Info] = Lru(max_cached)
        self._cached_at = 0

    # -- records --------------------------------------------------------------------------

    def _cached_info(self, ns: str, digest: str) -> Info | None:
        if self._cached_at != self._watch.generation:
            self._cached.clear()
            self._cached_at = self._watch.generation
        return self._cached.get((ns, digest))

    async def info(self, ns: str, digest: str) -> Info:
        _check_digest(digest)
        found = self._cached_info(ns, digest)
        if found is not None:
            return replace(found, labels=dict(found.labels))

        def tx(conn: sqlite3.Connection) -> tuple[int, Info]:
            # In the db thread, where the generation only moves inside write transactions.
            return self._watch.generation, _info(_get(conn, ns, digest), _labels_of(conn, ns, digest))

        generation, info = await self.db.read(tx)
        if self._cached_info(ns, digest) is None and generation == self._cached_at:
            self._cached.put((ns, digest), replace(info, labels=dict(info.labels)))
        return info

    async def exists(self, ns: str, digest: str) -> bool:
        _check_digest(digest)
        if self._cached_info(ns, digest) is not None:
            return True
        return await self.db.read(lambda conn: conn.execute(
            "SELECT 1 FROM content WHERE namespace=? AND digest=?", (ns, digest)).fetchone() is not None)

    async def update(self, ns: str, digest: str, labels: Mapping[str, str], paths: list[str]) -> Info:
        """Replace the labels (no paths, or `labels`) or just the `labels.<key>` ones named."""
        _check_digest(digest)
        _, label_paths = split_paths(paths, {"labels"}, kind="content info", name=digest)
        if not paths:
            label_paths = ["labels"]

        def tx(conn: sqlite3.Connection) -> Info:
            _get(conn, ns, digest)
            updated = apply_label_paths(_labels_of(conn, ns, digest), labels, label_paths)
            labelrules.validate(updated, "info.Labels")
            _set_labels(conn, ns, digest, updated)
            conn.execute("UPDATE content SET updated_at=? WHERE namespace=? AND digest=?",
                         (now().isoformat(), ns, digest))
            return _info(_get(conn, ns, digest), _labels_of(conn, ns, digest))

        return await self.db.write(tx)

    async def list(self, ns: str, filter_texts: builtins.list[str] | None = None) -> builtins.list[Info]:
        """The namespace's blobs that match any of the filters (all when there are none)."""
        match = filters.parse_all(filter_texts or [])

        def tx(conn: sqlite3.Connection) -> builtins.list[Info]:
            labels: dict[str, dict[str, str]] = {}
            for r in conn.execute("SELECT digest, key, value FROM content_labels WHERE namespace=?", (ns,)):
                labels.setdefault(r["digest"], {})[r["key"]] = r["value"]
            rows = conn.execute("SELECT * FROM content WHERE namespace=? ORDER BY digest", (ns,))
            return [_info(r, labels.get(r["digest"], {})) for r in rows]

        return [i for i in await self.db.read(tx) if match.match(_adaptor(i))]

    async def delete(self, ns: str, digest: str) -> None:
        """Forget the blob in this namespace; the collector removes the bytes once unused."""
        _check_digest(digest)

        def tx(conn: sqlite3.Connection) -> None:
            _get(conn, ns, digest)
            conn.execute("DELETE FROM content WHERE namespace=? AND digest=?", (ns, digest))
            detach_everywhere(conn, ns, Resource(digest, CONTENT))

        async with self.gc_guard.shared():
            await self.db.write(tx, frees=True)
        self.on_delete(digest)

    async def reader(self, ns: str, digest: str) -> BlobReader:
        """Open the blob, only if this namespace records it."""
        if not await self.exists(ns, digest):
            raise NotFound(f"content digest {digest}")
        return await self.backend.reader(digest)

    # -- ingests --------------------------------------------------------------------------

    async def status(self, ns: str, ref: str) -> Status:
        _check_ref(ref)
        bref = await self.db.read(lambda conn: conn.execute(
            "SELECT backend_ref FROM ingests WHERE namespace=? AND ref=?", (ns, ref)).fetchone())
        if bref is None:
            raise NotFound(f"ingest ref {quote(ref)}")
        try:
            st = await self.backend.status(bref[0])
        except NotFound:
            raise NotFound(f"ingest ref {quote(ref)}") from None
        return replace(st, ref=ref)

    async def list_statuses(self, ns: str, filter_texts: builtins.list[str] | None = None) -> builtins.list[Status]:
        """The namespace's ingests that have bytes in the backend, matching `ref`/`expected` filters."""
        match = filters.parse_all(filter_texts or [])
        rows = await self.db.read(lambda conn: conn.execute(
            "SELECT ref, backend_ref FROM ingests WHERE namespace=?", (ns,)).fetchall())
        refs = {r["backend_ref"]: r["ref"] for r in rows}
        if not refs:
            return []
        out = []
        for st in await self.backend.list_statuses(backend_ref(ns, "")):
            ref = refs.get(st.ref)
            if ref is not None:  # a backend ingest with no row is the collector's to remove
                st = replace(st, ref=ref)
                if match.match(_status_adaptor(st)):
                    out.append(st)
        return sorted(out, key=lambda s: s.ref)

    async def abort(self, ns: str, ref: str) -> None:
        _check_ref(ref)

        def tx(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT backend_ref FROM ingests WHERE namespace=? AND ref=?", (ns, ref)).fetchone()
            if row is None:
                raise NotFound(f"ingest ref {quote(ref)}")
            conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (ns, ref))
            detach_everywhere(conn, ns, Resource(ref, INGESTS))
            return str(row[0])

        async with self.gc_guard.shared():
            bref = await self.db.write(tx, frees=True)
            try:
                await self.backend.abort(bref)
            except NotFound:
                pass  # a shared ingest, or one whose writer never started: nothing on disk

    async def writer(self, ns: str, ref: str, total: int = 0, expected: str = "",
                     lease: str = "") -> NamespacedWriter:
        """Begin or resume the namespace's ingest `ref`, attached to `lease` (if any)."""
        _check_ref(ref)
        if not isinstance(total, int) or total < 0:
            raise InvalidArgument(f"total {total!r} must be a non-negative size (0 = unknown)")
        if expected:
            _check_digest(expected)
        bref = backend_ref(ns, ref)
        async with self.gc_guard.shared():
            shared_size = -1
            if expected:
                try:
                    found = await self.backend.info(expected)
                except NotFound:
                    pass
                else:
                    if total in (0, found.size):
                        shared_size = found.size

            def tx(conn: sqlite3.Connection) -> bool | None:
                if expected and conn.execute("SELECT 1 FROM content WHERE namespace=? AND digest=?",
                                             (ns, expected)).fetchone():
                    # Lease it, so the caller's lease protects what it will rely on.
                    attach(conn, ns, lease, Resource(expected, CONTENT))
                    return None
                namespaces.ensure(conn, ns)
                row = conn.execute("SELECT 1 FROM ingests WHERE namespace=? AND ref=?", (ns, ref)).fetchone()
                if row is None:
                    conn.execute("INSERT INTO ingests (namespace, ref, backend_ref, expected, created_at, leased) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 (ns, ref, bref, expected if shared_size >= 0 else "", now().isoformat(),
                                  1 if lease else 0))
                else:
                    if shared_size >= 0:
                        conn.execute("UPDATE ingests SET expected=? WHERE namespace=? AND ref=?",
                                     (expected, ns, ref))
                    if not lease:  # opened without a lease: the grace period starts again (containerd's)
                        conn.execute("UPDATE ingests SET leased=0, created_at=? WHERE namespace=? AND ref=?",
                                     (now().isoformat(), ns, ref))
                attach(conn, ns, lease, Resource(ref, INGESTS))
                return row is None

            created = await self.db.write(tx)
            if created is None:
                raise AlreadyExists(f"content {expected}")
            if shared_size >= 0:
                return NamespacedWriter(self, ns, ref, bref, lease, None, shared_size, expected)
            try:
                try:
                    backend = await self.backend.writer(bref, total=total, expected=expected)
                except AlreadyExists:
                    # The blob appeared in the backend since we looked (or with another size):
                    # write it like any other content; commit will find it there.
                    backend = await self.backend.writer(bref, total=total)
            except BaseException as exc:
                if created:
                    # Whatever ended it (an error, or the client giving up while the ref's lock
                    # was awaited), a row of ours with no writer behind it must not stay.
                    await asyncio.shield(self._forget_ingest(ns, ref))
                if isinstance(exc, Unavailable):
                    raise Unavailable(f"ref {ref} locked") from None
                if isinstance(exc, DockyardError):
                    raise _rename_refs(exc, bref, ref) from None
                raise
            return NamespacedWriter(self, ns, ref, bref, lease, backend, total, expected)

    async def _forget_ingest(self, ns: str, ref: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (ns, ref))
            detach_everywhere(conn, ns, Resource(ref, INGESTS))

        try:
            await self.db.write(tx, frees=True)
        except Exception:  # the row only costs a ListStatuses skip; the failure that led here matters
            log.exception("could not forget ingest %s/%s", ns, ref)

    async def _record(self, ns: str, ref: str, lease: str, digest: str, size: int,
                      labels: Mapping[str, str]) -> bool:
        """Record a committed blob in `ns` and retire the ingest; True if it was recorded already."""

        def tx(conn: sqlite3.Connection) -> bool:
            namespaces.ensure(conn, ns)
            exists = conn.execute("SELECT 1 FROM content WHERE namespace=? AND digest=?",
                                  (ns, digest)).fetchone() is not None
            if not exists:
                stamp = now().isoformat()
                conn.execute("INSERT INTO content (namespace, digest, size, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?)", (ns, digest, size, stamp, stamp))
                _set_labels(conn, ns, digest, labels)
            conn.execute("DELETE FROM ingests WHERE namespace=? AND ref=?", (ns, ref))
            detach_everywhere(conn, ns, Resource(ref, INGESTS))
            attach(conn, ns, lease, Resource(digest, CONTENT))
            return exists

        return await self.db.write(tx)


class NamespacedWriter:
    """A namespace's writer: a backend `Writer`, or none yet for a shared ingest."""

    def __init__(self, store: NamespacedContentStore, ns: str, ref: str, bref: str, lease: str,
                 backend: Writer | None, size: int, expected: str) -> None:
        self._store = store
        self._ns = ns
        self._ref = ref
        self._bref = bref
        self._lease = lease
        self._w = backend
        self._size = size  # the blob's size for a shared ingest, else the total given at open
        self._expected = expected
        self._started: datetime = now()
        self._done = False

    @property
    def ref(self) -> str:
        return self._ref

    @property
    def shared(self) -> bool:
        """True while no bytes were needed: commit will only record the existing blob."""
        return self._w is None

    def status(self) -> Status:
        if self._w is None:
            return Status(self._ref, self._size, self._size, self._expected, self._started, self._started)
        return replace(self._w.status(), ref=self._ref)

    def digest(self) -> str:
        return self._expected if self._w is None else self._w.digest()

    async def write(self, data: bytes, offset: int) -> int:
        self._check_open()
        if self._w is None:
            await self._unshare(offset)
        assert self._w is not None
        try:
            return await self._w.write(data, offset)
        except DockyardError as exc:
            raise _rename_refs(exc, self._bref, self._ref) from None

    async def truncate(self, size: int) -> None:
        self._check_open()
        if size != 0:
            raise InvalidArgument(f"truncate to {size}: only truncate to 0 is supported")
        if self._w is None:
            await self._unshare(0)
        else:
            await self._w.truncate(0)

    async def commit(self, size: int = 0, expected: str = "", labels: Mapping[str, str] | None = None) -> str:
        """Publish (or find) the blob and record it here with `labels`; always closes the writer.

        AlreadyExists when the namespace already records it (the ingest is gone either way).
        """
        self._check_open()
        self._done = True
        try:
            given = dict(labels or {})
            labelrules.validate(given, "info.Labels")
            if size < 0:
                raise InvalidArgument(f"commit size {size} must not be negative")
            if expected:
                _check_digest(expected)
        except BaseException:
            await self._close_backend()
            raise
        async with self._store.gc_guard.shared():
            if self._w is None:
                dgst, size = await self._commit_shared(size, expected)
            else:
                try:
                    dgst = await self._w.commit(size, expected)
                except AlreadyExists:
                    dgst = self._w.digest()  # verified by the backend before it said so
                except DockyardError as exc:
                    raise _rename_refs(exc, self._bref, self._ref) from None
                size = self._w.status().offset
            try:
                existed = await self._store._record(self._ns, self._ref, self._lease, dgst, size, given)
            except DockyardError:
                if self._w is not None:  # published but not recorded (a full disk): the collector takes it back
                    self._store.on_delete(dgst)
                raise
        if existed:
            raise AlreadyExists(f"content {dgst}")
        return dgst

    async def _commit_shared(self, size: int, expected: str) -> tuple[str, int]:
        if size and size != self._size:
            raise FailedPrecondition(f"unexpected commit size {self._size}, expected {size}")
        if expected and expected != self._expected:
            raise FailedPrecondition(f"unexpected commit digest {self._expected}, expected {expected}")
        if not await self._store.backend.exists(self._expected):
            raise NotFound(f"content digest {self._expected}")
        return self._expected, self._size

    async def close(self) -> None:
        """Release the ref and keep the ingest for a later resume; idempotent."""
        self._done = True
        await self._close_backend()

    async def _close_backend(self) -> None:
        if self._w is not None:
            await self._w.close()

    def _check_open(self) -> None:
        if self._done:
            raise FailedPrecondition(f"writer for ref {self._ref} is closed")

    async def _unshare(self, offset: int) -> None:
        """A shared ingest gets bytes after all: start a real backend ingest.

        At offset 0 it starts empty (the client rewrites everything); at the end it is seeded
        with the existing blob, so the client may append (and then fail its digest check).
        """
        if offset not in (0, self._size):
            raise InvalidArgument(f"write @{offset} must occur at current offset {self._size}")
        backend = self._store.backend
        try:
            # No total: appending makes it unknown, and a client starting over sends its own.
            w = await backend.writer(self._bref)
        except Unavailable:
            raise Unavailable(f"ref {self._ref} locked") from None
        try:
            await w.truncate(0)
            if offset:
                async with await backend.reader(self._expected) as r:
                    pos = 0
                    while pos < self._size:
                        chunk = await r.read_at(pos, min(_COPY_CHUNK, self._size - pos))
                        if not chunk:
                            break
                        pos = await w.write(chunk, pos)
        except BaseException:
            await w.close()
            raise
        self._w = w
