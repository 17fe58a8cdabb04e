"""The content part of the SDK: blobs by digest and resumable ingests, over containerd's Content service.

    async with Client(address, namespace="default") as c:
        info = await c.content.write("my-ref", b"hello")           # or a path, file or async iterable
        async for chunk in c.content.read(info.digest):
            ...
        await c.content.set_labels(info.digest, {"team": "red"})

Every method acts in the client's namespace. Errors are the daemon's, as `dockyard_common.errors`
kinds; OUT_OF_RANGE (a read or write past the end, containerd's code) arrives as OutOfRange,
an InvalidArgument.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from dockyard_api.containerd.services.content.v1 import content_pb2 as pb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc as pb_grpc
from dockyard_common.codes import error_from_status
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    from dock.client import Client

CHUNK = 1 << 20  # what containerd's clients send per WRITE; far below the 16 MiB message cap

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes] | Iterable[bytes]


@dataclass
class ContentInfo:
    digest: str
    size: int
    created_at: datetime
    updated_at: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestStatus:
    ref: str
    offset: int  # bytes written so far
    total: int  # 0 when unknown
    expected: str
    started_at: datetime
    updated_at: datetime


def _time(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _info(i: pb.Info) -> ContentInfo:
    return ContentInfo(i.digest, i.size, _time(i.created_at), _time(i.updated_at), dict(i.labels))


def _status(s: pb.Status) -> IngestStatus:
    return IngestStatus(s.ref, s.offset, s.total, s.expected, _time(s.started_at), _time(s.updated_at))


class ContentAPI:
    """`client.content`: see the module docstring.

    Content no lease, image or `containerd.io/gc.root` label holds is collected by the daemon's
    garbage collector (as in containerd): write under a lease with `with_lease(id)` to keep it.
    """

    def __init__(self, client: Client, lease: str = "") -> None:
        self._client = client
        self._stub = pb_grpc.ContentStub(client.channel)
        self.lease = lease

    def with_lease(self, lease: str) -> ContentAPI:
        """The same API acting under `lease`: what its writes create, the lease holds."""
        return ContentAPI(self._client, lease)

    def _metadata(self) -> list[tuple[str, str]]:
        return self._client.metadata(self.lease)

    async def _call(self, method: Any, request: Any) -> Any:
        return await self._client.call(method, request, self.lease)

    def _stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        return self._client.stream(method, request, self.lease)

    # -- blobs --------------------------------------------------------------------------------

    async def info(self, digest: str) -> ContentInfo:
        return _info((await self._call(self._stub.Info, pb.InfoRequest(digest=digest))).info)

    async def exists(self, digest: str) -> bool:
        try:
            await self.info(digest)
        except NotFound:
            return False
        return True

    async def update(self, digest: str, labels: Mapping[str, str], paths: list[str] | None = None) -> ContentInfo:
        """Replace all labels (no paths, or `labels`), or set/remove the `labels.<key>` named."""
        req = pb.UpdateRequest(info=pb.Info(digest=digest, labels=dict(labels)),
                               update_mask=field_mask_pb2.FieldMask(paths=paths or []))
        return _info((await self._call(self._stub.Update, req)).info)

    async def set_labels(self, digest: str, labels: Mapping[str, str]) -> ContentInfo:
        """Set the given labels, keeping the others; an empty value removes that label."""
        return await self.update(digest, labels, [f"labels.{k}" for k in labels])

    async def list(self, filters: builtins.list[str] | None = None) -> builtins.list[ContentInfo]:
        """The namespace's blobs; a blob matches when any filter does (`labels.x==y,digest~=^sha`)."""
        out: builtins.list[ContentInfo] = []
        async for resp in self._stream(self._stub.List, pb.ListContentRequest(filters=filters or [])):
            out.extend(_info(i) for i in resp.info)
        return out

    async def delete(self, digest: str) -> None:
        await self._call(self._stub.Delete, pb.DeleteContentRequest(digest=digest))

    async def read(self, digest: str, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from `offset`, `size` of them (0: to the end), in chunks of up to 1 MiB."""
        if offset < 0 or size < 0:
            raise InvalidArgument(f"read of {size} bytes @{offset}: offset and size must not be negative")
        async for resp in self._stream(self._stub.Read, pb.ReadContentRequest(digest=digest, offset=offset,
                                                                              size=size)):
            yield resp.data

    async def read_all(self, digest: str, offset: int = 0, size: int = 0) -> bytes:
        return b"".join([chunk async for chunk in self.read(digest, offset, size)])

    # -- ingests ------------------------------------------------------------------------------

    async def status(self, ref: str) -> IngestStatus:
        return _status((await self._call(self._stub.Status, pb.StatusRequest(ref=ref))).status)

    async def list_statuses(self, filters: builtins.list[str] | None = None) -> builtins.list[IngestStatus]:
        """Unfinished ingests of the namespace, e.g. with the filter `ref~=^layer-`."""
        resp = await self._call(self._stub.ListStatuses, pb.ListStatusesRequest(filters=filters or []))
        return [_status(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        await self._call(self._stub.Abort, pb.AbortRequest(ref=ref))

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> ContentWriter:
        """Open (or resume) the ingest `ref`: one Write stream. Use `status().offset` to resume."""
        w = ContentWriter(self, ref, total, expected)
        await w.open()
        return w

    async def write(self, ref: str, source: Source, total: int = 0, expected: str = "",
                    labels: Mapping[str, str] | None = None, chunk_size: int = CHUNK) -> ContentInfo:
        """Ingest `source` under `ref` and commit it; returns the blob's info.

        `source` is bytes, a path, a binary file, or an (async) iterable of byte chunks. An
        unfinished ingest of the same ref resumes at its offset: that many bytes of `source`
        are skipped (a file is seeked). Content the namespace already has is not rewritten
        (AlreadyExists counts as success, as in containerd's clients).
        """
        if chunk_size <= 0:
            raise InvalidArgument(f"chunk size {chunk_size} must be positive")
        if isinstance(source, bytes | bytearray | memoryview) and not total:
            total = len(source)
        try:
            w = await self.writer(ref, total, expected)
        except AlreadyExists:
            return await self.info(expected)
        digest = ""
        try:
            offset = w.status().offset
            if not (w.shared and (not total or offset == total)):
                async for chunk in _chunks(source, offset, chunk_size):
                    offset = await w.write(chunk, offset)
            digest = await w.commit(total, expected, labels)
        except AlreadyExists:
            digest = expected or w.digest()
        finally:
            await w.close()
        return await self.info(digest)


class ContentWriter:
    """One ingest driven over a Write stream; see `supervisor.content.store.Writer` for the words.

    `status()` and `digest()` report the last answer from the daemon. The daemon ends the stream
    on any error; the next call then reopens it, resuming the ingest where the daemon kept it.
    `commit` always closes the writer, as does `close` (which keeps the ingest for a resume).
    """

    def __init__(self, api: ContentAPI, ref: str, total: int, expected: str) -> None:
        self._api = api
        self._ref = ref
        self._total = total
        self._expected = expected
        self._call: grpc.aio.StreamStreamCall | None = None
        self._closed = False
        self._offset = 0
        self._digest = ""
        self._started = self._updated = datetime.now(UTC)
        self.shared = False  # the daemon needs no bytes: it has the blob, commit records it

    @property
    def ref(self) -> str:
        return self._ref

    def status(self) -> IngestStatus:
        return IngestStatus(self._ref, self._offset, self._total, self._expected, self._started, self._updated)

    def digest(self) -> str:
        return self._digest

    async def open(self) -> None:
        self._call = self._api._stub.Write(metadata=self._api._metadata(), timeout=self._api._client.timeout)
        resp = await self._send(pb.WriteContentRequest(action=pb.STAT, ref=self._ref, total=self._total,
                                                       expected=self._expected))
        self._started, self._updated = _time(resp.started_at), _time(resp.updated_at)
        if resp.total:
            self._total = resp.total
        self.shared = bool(self._expected) and self._total > 0 and resp.offset == self._total \
            and resp.digest == self._expected

    async def write(self, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Append `data` at `offset` (the current offset, or 0 to start over); returns the new offset."""
        self._check_open()
        if offset < 0:
            raise InvalidArgument(f"write @{offset}: offset must not be negative")
        await self._ensure_stream()
        payload = data if isinstance(data, bytes) else bytes(data)
        await self._send(pb.WriteContentRequest(action=pb.WRITE, offset=offset, data=payload))
        self._updated = datetime.now(UTC)
        return self._offset

    async def truncate(self, size: int) -> None:
        """Discard what was written (only 0 is supported): the next write starts the ingest over."""
        self._check_open()
        if size != 0:
            raise InvalidArgument(f"truncate to {size}: only truncate to 0 is supported")
        await self._ensure_stream()
        await self._send(pb.WriteContentRequest(action=pb.WRITE, offset=0))

    async def commit(self, size: int = 0, expected: str = "", labels: Mapping[str, str] | None = None) -> str:
        """Verify and record the blob (with `labels`); returns its digest. Always closes the writer."""
        self._check_open()
        try:
            await self._ensure_stream()
            resp = await self._send(pb.WriteContentRequest(
                action=pb.COMMIT, total=size, offset=self._offset, expected=expected, labels=dict(labels or {})))
            return resp.digest
        finally:
            self._closed = True
            await self._finish()

    async def close(self) -> None:
        """Release the ingest (it stays for a later resume); idempotent."""
        self._closed = True
        await self._finish()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"writer for ref {self._ref} is closed")

    async def _ensure_stream(self) -> None:
        if self._call is None:
            await self.open()

    async def _send(self, req: pb.WriteContentRequest) -> pb.WriteContentResponse:
        call = self._call
        assert call is not None
        try:
            await call.write(req)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the daemon ended the call before reading this: its status says why
        try:
            resp = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._call = None
            raise self._api._client._error(exc) from None
        except asyncio.InvalidStateError:
            resp = grpc.aio.EOF
        if resp is grpc.aio.EOF:
            self._call = None
            code, details = await call.code(), await call.details()
            if code == grpc.StatusCode.OK:
                raise FailedPrecondition(f"write stream of ref {self._ref} ended early")
            raise error_from_status(code.value[0], details or "")
        self._offset = resp.offset
        if resp.digest:
            self._digest = resp.digest
        return resp

    async def _finish(self) -> None:
        call, self._call = self._call, None
        if call is None:
            return
        try:
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass  # the daemon closes its writer before it ends the call; wait for that
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # already over: nothing more to release
        finally:
            call.cancel()


async def _chunks(source: Source, skip: int, size: int) -> AsyncIterator[bytes]:
    """`source` from byte `skip` on, in chunks of up to `size` bytes (a file is read off the loop)."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)[skip:]
        for start in range(0, len(view), size):
            yield bytes(view[start:start + size])
        return
    if isinstance(source, str | os.PathLike):
        f = await asyncio.to_thread(open, Path(source), "rb")
        try:
            async for chunk in _chunks(f, skip, size):
                yield chunk
        finally:
            f.close()
        return
    if hasattr(source, "read"):
        stream: IO[bytes] = source  # type: ignore[assignment]
        if skip:
            if stream.seekable():
                await asyncio.to_thread(stream.seek, skip, os.SEEK_CUR)
            else:
                while skip and (dropped := await asyncio.to_thread(stream.read, min(skip, size))):
                    skip -= len(dropped)
        async for chunk in _read_file(stream, size):
            yield chunk
        return
    chunks = source if isinstance(source, AsyncIterable) else _aiter_sync(source)  # type: ignore[arg-type]
    async for chunk in _rechunk(chunks, skip, size):
        yield chunk


async def _read_file(stream: IO[bytes], size: int) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(stream.read, size):
        yield chunk


async def _aiter_sync(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _rechunk(chunks: AsyncIterable[bytes], skip: int, size: int) -> AsyncIterator[bytes]:
    """Drop the first `skip` bytes and cut the rest into pieces of at most `size`."""
    async for chunk in chunks:
        view = memoryview(chunk)
        if skip:
            cut = min(skip, len(view))
            view, skip = view[cut:], skip - cut
        for start in range(0, len(view), size):
            yield bytes(view[start:start + size])
