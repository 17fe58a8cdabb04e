"""Blobs from a registry into the content store: streamed, verified, resumable.

    f = Fetcher(endpoint, content, ns, lease, on_progress)
    data = await f.document(desc)        # a manifest, index or config: stored and returned
    await f.blob(desc)                   # a layer: streamed to disk, never held in memory

Every blob goes through the namespace's ingest `<kind>-<digest>` (containerd's ref names,
so `ctr` and we resume each other's ingests) under the pull's lease:

- the namespace records it already -> nothing is fetched ("exists"); the lease now holds it;
- another namespace has it -> recorded here without fetching (a shared ingest);
- an ingest is there from an interrupted pull (this daemon's or an earlier one's) -> the
  request asks for `Range: bytes=<offset>-`; a 206 continues the ingest, a 200 starts over;
- otherwise from byte 0.

The size is checked while streaming (never more than the descriptor says) and the digest at
commit, by the content store. A body cut short (a connection reset) is fetched again at once
from where it stopped (Range), a bounded number of times with backoff (retry.py); one that
stays cut short, a timeout or the daemon killed leaves the ingest for the next pull to
resume (when some bytes reached it: an empty one is removed, and so is that of a document,
which is always fetched whole); bytes that fail verification (wrong digest, too many) are
thrown away with the ingest, so nothing corrupt is ever committed and no bad prefix is ever
resumed. Writers of the same ref elsewhere (a concurrent pull of the same layer) are waited
for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition, InvalidArgument, Unavailable
from dockyard_common.imagespec import MAX_DOCUMENT_SIZE, Descriptor, is_config, is_index, is_layer, is_manifest
from supervisor.metadata.content import NamespacedContentStore, NamespacedWriter
from supervisor.remote.client import Endpoint, read_limited, status_error
from supervisor.remote.resolver import checked_json, fetch_document
from supervisor.remote.retry import TransientError, with_retries

log = logging.getLogger("dockyard.fetch")

WRITE_CHUNK = 1 << 20
PROGRESS_SECONDS = 0.1
LOCKED_WAIT = 600.0  # how long to wait for another writer of the same blob


@dataclass
class BlobProgress:
    """One blob's transfer. States (pull): waiting, downloading, resuming, exists, done;
    (push): waiting, uploading, exists, mounted, done."""

    ref: str
    descriptor: Descriptor
    state: str
    offset: int
    total: int


ProgressFn = Callable[[BlobProgress], None]


def ref_key(desc: Descriptor) -> str:
    """containerd's remotes.MakeRefKey: the ingest ref for a blob."""
    if is_manifest(desc.media_type):
        kind = "manifest"
    elif is_index(desc.media_type):
        kind = "index"
    elif is_layer(desc.media_type):
        kind = "layer"
    elif is_config(desc.media_type):
        kind = "config"
    else:
        kind = "unknown"
    return f"{kind}-{desc.digest}"


class Fetcher:
    def __init__(self, ep: Endpoint, content: NamespacedContentStore, ns: str, lease: str,
                 on_progress: ProgressFn = lambda p: None) -> None:
        self.ep = ep
        self.content = content
        self.ns = ns
        self.lease = lease
        self.on_progress = on_progress

    def _report(self, desc: Descriptor, state: str, offset: int) -> None:
        self.on_progress(BlobProgress(ref_key(desc), desc, state, offset, desc.size))

    async def _writer(self, desc: Descriptor) -> NamespacedWriter | None:
        """The ingest for `desc`, or None when the namespace has the blob (now leased)."""
        deadline = time.monotonic() + LOCKED_WAIT
        delay = 0.05
        while True:
            try:
                return await self.content.writer(self.ns, ref_key(desc), total=desc.size, expected=desc.digest,
                                                 lease=self.lease)
            except AlreadyExists:
                return None
            except Unavailable:  # the ref is being written elsewhere: wait for it to finish
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _read_local(self, desc: Descriptor) -> bytes:
        reader = await self.content.reader(self.ns, desc.digest)
        async with reader:
            if reader.size != desc.size:
                raise FailedPrecondition(f"content {desc.digest}: stored size {reader.size} differs from the "
                                         f"descriptor's {desc.size}")
            return await reader.read_at(0, reader.size) if reader.size else b""

    async def document(self, desc: Descriptor) -> bytes:
        """A manifest, index or config: from the store if present, else fetched, verified, stored."""
        if desc.size > MAX_DOCUMENT_SIZE:
            raise InvalidArgument(f"{desc.media_type} {desc.digest}: size {desc.size} is larger than the limit "
                                  f"of {MAX_DOCUMENT_SIZE} for a document")
        writer = await self._writer(desc)
        if writer is None:
            self._report(desc, "exists", desc.size)
            return await self._read_local(desc)
        if writer.shared:
            await self._commit(writer, desc)
            self._report(desc, "exists", desc.size)
            return await self._read_local(desc)
        try:
            self._report(desc, "downloading", 0)
            if is_manifest(desc.media_type) or is_index(desc.media_type):
                data = await fetch_document(self.ep, desc)  # (retried there)
            else:
                data = await with_retries(self.ep.session.retry, lambda _: self._blob_bytes(desc))
            await writer.write(data, 0)
        except BaseException:
            await asyncio.shield(self._abort(writer))  # a document is fetched whole: nothing to resume from
            raise
        await self._commit(writer, desc)
        self._report(desc, "done", desc.size)
        return data

    async def _blob_bytes(self, desc: Descriptor) -> bytes:
        what = f"fetch {desc.media_type} {desc.digest}"
        async with self.ep.session.request("GET", self.ep.host, f"/{self.ep.repository}/blobs/{desc.digest}",
                                           what=what, scopes=self.ep.scopes) as resp:
            if resp.status != 200:
                raise await status_error(resp, what, self.ep.host)
            data = await read_limited(resp, desc.size, what, self.ep.session.timeouts.read)
        self.ep.session.transferred.received += len(data)
        if len(data) != desc.size:
            raise FailedPrecondition(f"{what}: the registry sent {len(data)} bytes, the descriptor says {desc.size}")
        return checked_json(data, f"{what}: the document")

    async def _commit(self, writer: NamespacedWriter, desc: Descriptor) -> None:
        try:
            await writer.commit(desc.size, desc.digest)
        except AlreadyExists:
            pass  # recorded meanwhile by someone else; our lease holds it all the same
        except FailedPrecondition as exc:
            # The bytes are not the blob: they must not be resumed from, or committed.
            await self._abort(writer)
            raise FailedPrecondition(f"{desc.media_type} {desc.digest} from registry {self.ep.host.host}: "
                                     f"content does not match its descriptor ({exc.message}); discarded") from None

    async def _abort(self, writer: NamespacedWriter) -> None:
        with contextlib.suppress(DockyardError):
            await writer.close()
        with contextlib.suppress(DockyardError):
            await self.content.abort(self.ns, writer.ref)

    async def blob(self, desc: Descriptor) -> None:
        """Stream a layer (or any blob) into the store; see the module docstring."""
        writer = await self._writer(desc)
        if writer is None:
            self._report(desc, "exists", desc.size)
            return
        if writer.shared:
            await self._commit(writer, desc)
            self._report(desc, "exists", desc.size)
            return
        try:
            offset = writer.status().offset
            if offset > desc.size:
                await writer.truncate(0)
                offset = 0
            if offset == desc.size and offset > 0:
                w, writer = writer, None
                try:
                    await self._commit(w, desc)
                    self._report(desc, "done", desc.size)
                    return
                except FailedPrecondition:
                    writer = await self._writer(desc)  # the old bytes were bad: fetch it all again
                    if writer is None:
                        return
                    offset = 0
            w, start = writer, offset

            async def attempt(n: int) -> None:
                # after a cut: from what reached the ingest (the registry is asked for the rest)
                await self._stream(w, desc, start if n == 1 else w.status().offset)

            await with_retries(self.ep.session.retry, attempt)
        except BaseException:
            if writer is not None:
                if _offset(writer):
                    await asyncio.shield(writer.close())  # what reached the disk stays for a resume
                else:
                    await asyncio.shield(self._abort(writer))  # nothing did (a 404, a lie): nothing to keep
            raise
        w, writer = writer, None
        await self._commit(w, desc)
        self._report(desc, "done", desc.size)

    async def _stream(self, writer: NamespacedWriter, desc: Descriptor, offset: int) -> None:
        what = f"fetch {desc.media_type} {desc.digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self.ep.session.request("GET", self.ep.host, f"/{self.ep.repository}/blobs/{desc.digest}",
                                           what=what, scopes=self.ep.scopes, headers=headers) as resp:
            if resp.status == 416 and offset:
                raise Unavailable(f"{what}: the registry refused to resume at byte {offset} (416); try again")
            if resp.status == 206 and offset:
                start = _content_range_start(resp.headers.get("Content-Range", ""))
                if start != offset:
                    raise Unavailable(f"{what}: asked to resume at byte {offset}, the registry sent a range "
                                      f"starting at {start}")
                self._report(desc, "resuming", offset)
            elif resp.status == 200:
                offset = 0  # no range support: start over (write at 0 restarts the ingest)
                self._report(desc, "downloading", 0)
            else:
                raise await status_error(resp, what, self.ep.host)
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) != desc.size - offset:
                await self._abort(writer)
                raise FailedPrecondition(f"{what}: the registry announces {int(length) + offset} bytes, the "
                                         f"descriptor says {desc.size}; nothing stored")
            pending: list[bytes] = []
            pending_size = 0
            last = time.monotonic()
            received = offset
            try:
                async for chunk in resp.content.iter_chunked(WRITE_CHUNK):
                    received += len(chunk)
                    self.ep.session.transferred.received += len(chunk)
                    if received > desc.size:
                        await self._abort(writer)
                        raise FailedPrecondition(f"{what}: the registry sent more than the {desc.size} bytes the "
                                                 "descriptor says; discarded")
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= WRITE_CHUNK:
                        offset = await writer.write(b"".join(pending), offset)
                        pending, pending_size = [], 0
                        if time.monotonic() - last >= PROGRESS_SECONDS:
                            last = time.monotonic()
                            self._report(desc, "downloading", offset)
            except (aiohttp.ClientError, TimeoutError):
                if pending:  # keep what did arrive, for the resume
                    await writer.write(b"".join(pending), offset)
                raise
            if pending:
                offset = await writer.write(b"".join(pending), offset)
            if received < desc.size:
                raise TransientError(f"{what}: the registry's response ended after {received} of {desc.size} "
                                     "bytes (the partial content is kept; pulling again resumes it)")


def _offset(writer: NamespacedWriter) -> int:
    try:
        return writer.status().offset
    except DockyardError:
        return 0


def _content_range_start(header: str) -> int:
    """The first byte of `bytes <start>-<end>/<size>` (-1 when unreadable)."""
    try:
        unit, _, spec = header.partition(" ")
        if unit != "bytes":
            return -1
        return int(spec.split("-", 1)[0])
    except ValueError:
        return -1
