"""The content store contract: immutable blobs addressed by digest, written through ingests.

Words
-----
blob
    Bytes that have been committed. Addressed only by their digest (`sha256:<hex>`); once
    visible they never change. A blob is visible to `info`, `reader`, `exists` and `walk`
    from the moment `Writer.commit` returns, and never before: there is no partial blob.
ingest
    An unfinished write, keyed by a caller-chosen `ref` string (e.g. `layer-sha256:...`).
    It survives the writer being closed, the process being killed and the daemon being
    restarted; reopening a writer on the same ref resumes it at the bytes already stored.
ref lock
    At most one open `Writer` per ref at a time (across processes for the local store).
    A second `writer(ref)` while one is open raises `Unavailable("ref <ref> locked")`, after
    waiting up to `local_writer.LOCK_WAIT` (1 s) for the holder to let go, as containerd's
    local store does: its clients reopen a ref right after closing the last writer on it.

This layer knows bytes only. Labels, namespaces and leases belong to the metadata layer, so
`Info.labels` is always empty here and nothing is filtered by namespace.

Lifecycle of a write
--------------------
::

    w = await store.writer("layer-1", total=len(data), expected=dgst)  # new or resumed
    st = w.status()                       # st.offset: where to continue (0 for a new ingest)
    await w.write(data[st.offset:], st.offset)
    await w.commit(len(data), dgst)       # verify size+digest, then publish atomically
    # or: await w.close()                 # keep the ingest to resume later
    # or: await w.close(); await store.abort("layer-1")   # throw it away

`commit` always closes the writer, success or failure (containerd's rule). On a size or
digest mismatch the ingest stays on disk (FailedPrecondition) so the caller may inspect,
truncate and rewrite, or abort it. When the blob already exists the ingest is discarded
and AlreadyExists is raised; callers that only want the content present treat that as
success. Two writers under different refs writing the same bytes therefore both finish:
the first commit publishes the blob, the second raises AlreadyExists, one blob remains.

Errors (from `dockyard_common.errors`)
---------------------------------
InvalidArgument     malformed digest or one that is not sha256; empty ref; negative total,
                    size or offset; a write at an offset other than the current one (0 excepted,
                    which restarts); truncate to anything but 0.
NotFound            `info`/`reader`/`delete` of a missing blob; `status`/`abort` of an unknown
                    ref; `commit` of an ingest aborted underneath the writer.
AlreadyExists       `writer(expected=d)` when blob d is present; `commit` when the blob
                    appeared meanwhile (the ingest is discarded).
FailedPrecondition  `commit` whose size or digest differs from what was written (the message
                    names both values); any use of a writer after commit or close.
Unavailable         `writer(ref)` while another writer holds the ref.
ResourceExhausted   the disk is full (ENOSPC/EDQUOT) during writer set-up, write or commit;
                    nothing half-written becomes visible and the ingest can be aborted.
                    Also `read_all` of a blob larger than `max_size`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from dockyard_common.errors import InvalidArgument, ResourceExhausted


@dataclass(frozen=True, slots=True)
class Info:
    """A committed blob: its digest and size, when it was committed and last changed."""

    digest: str
    size: int
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """An ingest in progress: bytes written so far (`offset`) of `total` (0 = unknown)."""

    ref: str
    offset: int
    total: int
    expected: str
    started_at: datetime
    updated_at: datetime


@runtime_checkable
class BlobReader(Protocol):
    """Random access to one committed blob. Close it (or use `async with`) when done.

    Reads keep working if the blob is deleted while the reader is open.
    """

    @property
    def size(self) -> int: ...

    async def read_at(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes from `offset`; fewer only at the end, b"" at or past it.

        InvalidArgument for a negative offset or size; FailedPrecondition once closed.
        """
        ...

    async def close(self) -> None:
        """Release the reader; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class Writer(Protocol):
    """The one open handle on an ingest; it holds the ref lock until commit or close."""

    @property
    def ref(self) -> str: ...

    def status(self) -> Status:
        """The ingest as this writer sees it (offset = bytes written, total, expected)."""
        ...

    def digest(self) -> str:
        """sha256 of the bytes written so far (of b"" for an empty ingest)."""
        ...

    async def write(self, data: bytes, offset: int) -> int:
        """Append `data`, which must start at the current offset; returns the new offset.

        `offset == 0` while bytes are already written restarts the ingest (truncate, then
        write), the way containerd's Write handles a client starting over. Any other offset
        that is not the current one raises InvalidArgument. ResourceExhausted when the disk
        fills; the ingest then still ends at the old offset.
        """
        ...

    async def truncate(self, size: int) -> None:
        """Discard everything written (only size 0 is supported; else InvalidArgument)."""
        ...

    async def commit(self, size: int = 0, expected: str = "") -> str:
        """Verify, fsync and publish the blob; returns its digest. Always closes the writer.

        `size` 0 / `expected` "" fall back to the `total` / `expected` the writer was opened
        with, and are not checked when those are unset too.
        """
        ...

    async def close(self) -> None:
        """Release the ref lock and keep the ingest for a later resume; idempotent.

        Never raises for disk trouble: what reached the disk is what a resume finds.
        """
        ...


@runtime_checkable
class ContentStore(Protocol):
    """Blobs by digest plus resumable ingests by ref. See the module docstring."""

    async def info(self, digest: str) -> Info:
        """Size and times of a committed blob; NotFound if absent."""
        ...

    async def exists(self, digest: str) -> bool:
        """Whether the blob is committed (InvalidArgument for a malformed digest)."""
        ...

    async def reader(self, digest: str) -> BlobReader:
        """Open a committed blob for reading; NotFound if absent."""
        ...

    async def read_all(self, digest: str, max_size: int) -> bytes:
        """The whole blob, refusing (ResourceExhausted) one larger than `max_size` bytes."""
        ...

    async def delete(self, digest: str) -> None:
        """Remove a committed blob; NotFound if absent. Open readers keep working."""
        ...

    def walk(self) -> AsyncIterator[Info]:
        """Every committed blob, in no particular order; ingests are never included."""
        ...

    async def status(self, ref: str) -> Status:
        """The stored state of an ingest (open or not); NotFound for an unknown ref."""
        ...

    async def list_statuses(self, prefix: str = "") -> list[Status]:
        """All ingests whose ref starts with `prefix`, sorted by ref."""
        ...

    async def abort(self, ref: str) -> None:
        """Delete an ingest and its data; NotFound for an unknown ref.

        An open writer on the ref is cancelled: its commit then raises NotFound.
        """
        ...

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> Writer:
        """Begin or resume the ingest `ref`, taking its lock.

        A resumed ingest continues at the bytes on disk (its digest recomputed from them).
        If `total` or `expected` contradict those recorded for the ingest, it restarts from
        zero. Raises AlreadyExists when `expected` is already committed, Unavailable when the
        ref is locked, InvalidArgument for an empty ref, negative total or malformed digest.
        """
        ...


class ReaderBase(ABC):
    """What every `BlobReader` shares: `async with` closes it, and the argument check of `read_at`."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @staticmethod
    def check_range(offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise InvalidArgument(f"read of {size} bytes @{offset}: offset and size must not be negative")


async def read_blob(store: ContentStore, digest: str, max_size: int) -> bytes:
    """`read_all` for any store: the whole blob, unless it is larger than `max_size`."""
    if max_size < 0:
        raise InvalidArgument(f"max_size {max_size} must not be negative")
    async with await store.reader(digest) as r:
        if r.size > max_size:
            raise ResourceExhausted(f"content {digest} is {r.size} bytes, over the limit of {max_size}")
        chunks: list[bytes] = []
        offset = 0
        while offset < r.size:
            chunk = await r.read_at(offset, min(r.size - offset, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
