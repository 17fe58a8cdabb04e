"""dockyard.build.v1.Builder: building images from a Dockerfile (our extension).

The call's first message carries the options, the rest the context tar. The tar is spooled to a
private directory under <root>/tmp, checked and extracted there (`archive.context`); a synced
context (`context_key`) is first a manifest, answered with what to send, and the tar of that is
written into the daemon's kept copy of the context as it arrives, each entry checked before it
is written (`build.contextstore`); the copy goes back to the store when the build ends. The build
executor runs over it, and its events go out as they come: the executor's progress callback
awaits the stream's write, so a slow client slows the build instead of growing a buffer. The
private directory is removed when the call ends, however it ends; a client that goes away
cancels the build (grpc cancels this handler, the cancellation reaches the executor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import grpc
from google.rpc import status_pb2

from dockyard_api.dockyard.build.v1 import build_pb2 as pb
from dockyard_api.dockyard.build.v1 import build_pb2_grpc as pb_grpc
from dockyard_common.aio import BlockingReader, uninterrupted
from dockyard_common.errors import DockyardError, InvalidArgument
from supervisor.archive.context import ContextLimits, ContextStats, extract_context
from supervisor.build.api import NETWORK_MODES, BuildEvent, BuildRequest, BuildResult, Progress
from supervisor.build.cachekey import SourceMemo
from supervisor.build.cacheprune import CacheEntry, CacheUsage, PruneOptions, PruneReport
from supervisor.build.contextstore import ContextEntry, ContextStore, ContextSync
from supervisor.services.context import namespace_of
from supervisor.services.status import code_for, rpc

log = logging.getLogger("dockyard.build")

# <tmp_root>/build-context-XXXX/{context.tar, context/}: one per call (the step runner's are "build-io-")
TMP_PREFIX = "build-context-"
_CONTEXT_TAR = "context.tar"
_CONTEXT_DIR = "context"
_WANTED_BATCH = 100_000  # indexes per ContextWanted message (~0.5 MB at most)


class Executor(Protocol):
    """What runs a build (supervisor/build/builder.py's Builder; see supervisor/build/api.py)."""

    async def build(self, namespace: str, context_dir: Path, request: BuildRequest,
                    progress: Progress, sources: SourceMemo | None = None) -> BuildResult: ...

    async def prune(self, namespace: str, options: PruneOptions) -> PruneReport: ...

    async def cache_usage(self, namespace: str) -> CacheUsage: ...


def _pairs(items: list[pb.KeyValue], what: str) -> tuple[tuple[str, str], ...]:
    out = []
    for kv in items:
        if not kv.key or "=" in kv.key or "\0" in kv.key or "\0" in kv.value:
            raise InvalidArgument(f"{what} {kv.key!r}: want a non-empty KEY without '=' or NUL, and a VALUE")
        out.append((kv.key, kv.value))
    return tuple(out)


def build_request(options: pb.BuildOptions) -> BuildRequest:
    """The options as the executor takes them; malformed ones are InvalidArgument."""
    network = options.network or "default"
    if network not in NETWORK_MODES:
        raise InvalidArgument(f"network {options.network!r}: must be one of {', '.join(NETWORK_MODES)}")
    if not options.dockerfile.strip():
        raise InvalidArgument("the Dockerfile is empty")
    for tag in options.tags:
        if not tag:
            raise InvalidArgument("an image tag is empty")
    return BuildRequest(dockerfile=options.dockerfile, tags=tuple(options.tags),
                        build_args=_pairs(list(options.build_args), "build argument"),
                        target=options.target, no_cache=options.no_cache, pull=options.pull,
                        platform=options.platform, labels=_pairs(list(options.labels), "label"),
                        network=network)


# Longer than anything has existed: an "unused for" beyond it selects nothing, as it would. The
# int64 a caller may send (2**63 s) overflows timedelta and `now - unused_for`.
_FOREVER_SECONDS = 1000 * 366 * 86400


def prune_options(request: pb.PruneRequest) -> PruneOptions:
    if request.unused_for_seconds < 0 or request.keep_storage < 0:
        raise InvalidArgument("prune: unused_for_seconds and keep_storage must not be negative")
    unused_for = timedelta(seconds=min(request.unused_for_seconds, _FOREVER_SECONDS))
    return PruneOptions(all=request.all, unused_for=unused_for,
                        keep_storage=request.keep_storage)


def cache_record_pb(e: CacheEntry) -> pb.CacheRecord:
    msg = pb.CacheRecord(id=e.id, type=e.type, size=e.size, in_use=e.in_use, shared=e.shared,
                         description=e.description)
    if e.created_at is not None:
        msg.created_at.FromDatetime(e.created_at)
    if e.last_used is not None:
        msg.last_used_at.FromDatetime(e.last_used)
    return msg


def event_pb(event: BuildEvent) -> pb.BuildResponse:
    return pb.BuildResponse(event=pb.BuildEvent(kind=event.kind, step=event.step, total=event.total,
                                                stage=event.stage, text=event.text, data=event.data,
                                                stream=event.stream))


def result_pb(result: BuildResult) -> pb.BuildResponse:
    return pb.BuildResponse(result=pb.BuildResult(manifest_digest=result.manifest_digest,
                                                  config_digest=result.config_digest, tags=list(result.tags)))


class BuildService(pb_grpc.BuilderServicer):
    def __init__(self, executor: Executor, tmp_root: Path, limits: ContextLimits | None = None,
                 contexts: ContextStore | None = None) -> None:
        self.executor = executor
        self.tmp_root = tmp_root
        self.limits = limits or ContextLimits()
        self.contexts = contexts or ContextStore(tmp_root.parent / "build-contexts", keep=0)
        self._swept = False
        self._sweep_lock = asyncio.Lock()

    @rpc
    async def Build(self, requests: AsyncIterator[pb.BuildRequest], context: grpc.aio.ServicerContext) -> None:
        try:
            ns = namespace_of(context)
            first = await anext(requests, None)
            if first is None or first.WhichOneof("request") != "options":
                raise InvalidArgument("build: the first message must carry the options")
            request = build_request(first.options)
            await self._sweep_once()
            work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=TMP_PREFIX, dir=self.tmp_root))
        except Exception as exc:
            await self._tell(context, exc, requests)
            raise
        synced: list[ContextSync] = []  # the kept context this call took, to give back
        try:
            try:
                reused = 0
                if first.options.context_key:
                    stats = await self._receive_synced(ns, first.options.context_key, requests, context, work, synced)
                    reused = synced[0].reused
                else:
                    stats = await self._receive(requests, work)
                await context.write(pb.BuildResponse(context=pb.ContextReceived(bytes=stats.bytes,
                                                                                entries=stats.entries, reused=reused)))

                async def progress(event: BuildEvent) -> None:
                    await context.write(event_pb(event))

                memo = synced[0].memo if synced else None
                result = await self.executor.build(ns, work / _CONTEXT_DIR, request, progress, sources=memo)
            except Exception as exc:
                await self._tell(context, exc, requests)
                raise
            if synced:  # back in the store before the client hears of the end: its next build finds it
                # (to its end even if cancelled: the finally below removes what is left in `work`)
                await uninterrupted(asyncio.to_thread(self.contexts.end, synced.pop()))
            await context.write(result_pb(result))
        finally:
            # In a thread that runs to its end even if this task is cancelled again meanwhile.
            await asyncio.shield(asyncio.to_thread(self._finish, work, synced))

    def _finish(self, work: Path, synced: list[ContextSync]) -> None:
        if synced:
            self.contexts.end(synced[0])  # the tree goes back to the store (out of `work`)
        shutil.rmtree(work, ignore_errors=True)

    @rpc
    async def Prune(self, request: pb.PruneRequest, context: grpc.aio.ServicerContext) -> pb.PruneResponse:
        ns = namespace_of(context)
        options = prune_options(request)
        report = await self.executor.prune(ns, options)
        removed = list(report.removed)
        if not options.keep_storage:  # the kept contexts of synced builds go with the cache
            pruned = await asyncio.to_thread(self.contexts.prune, ns, options.unused_for.total_seconds())
            removed += [f"context:{cid}" for cid in pruned]
        return pb.PruneResponse(removed=removed, reclaimed_bytes=report.reclaimed)

    @rpc
    async def ListCache(self, request: pb.ListCacheRequest, context: grpc.aio.ServicerContext) -> pb.ListCacheResponse:
        usage = await self.executor.cache_usage(namespace_of(context))
        return pb.ListCacheResponse(records=[cache_record_pb(e) for e in usage.entries], size=usage.size,
                                    reclaimable=usage.reclaimable)

    async def _receive(self, requests: AsyncIterator[pb.BuildRequest], work: Path) -> ContextStats:
        """Spool the context tar into `work`, then check and extract it into work/context."""
        tar_path = await self._spool(requests, work)
        target = work / _CONTEXT_DIR
        target.mkdir(mode=0o700)
        cancel = threading.Event()
        # cancelled: the extraction stops, and its thread ends before the caller removes `work`
        return await uninterrupted(asyncio.to_thread(self._extract, tar_path, target, cancel), cancel.set)

    async def _receive_synced(self, ns: str, key: str, requests: AsyncIterator[pb.BuildRequest],
                              context: grpc.aio.ServicerContext, work: Path, synced: list[ContextSync]) -> ContextStats:
        """A synced context: the manifest, the answer of what to send, then the tar of that into
        the kept copy, which `synced` holds from then on (see the module docstring)."""
        entries: list[ContextEntry] = []
        async for req in requests:
            if req.WhichOneof("request") != "manifest":
                raise InvalidArgument("build: a synced context starts with its manifest")
            entries.extend(ContextEntry(e.path, e.mode, e.size, e.mtime_ns, e.linkname, e.link_group)
                           for e in req.manifest.entries)
            if len(entries) > self.limits.max_entries:
                raise InvalidArgument(f"build context: more than {self.limits.max_entries} entries")
            if req.manifest.last:
                break
        else:
            raise InvalidArgument("build: the context's manifest ended without its last message")

        def begin() -> ContextSync:
            sync = self.contexts.begin(ns, key, entries, work / _CONTEXT_DIR, self.limits)
            synced.append(sync)  # even when this call was cancelled meanwhile: _finish gives it back
            return sync

        began = time.monotonic()
        sync = await uninterrupted(asyncio.to_thread(begin))
        wanted = sync.wanted
        log.debug("build context %s: %d entries, %d wanted, %d removed (%.3f s)", sync.id, len(entries),
                  len(wanted), len(sync.removed), time.monotonic() - began)
        for i in range(0, max(len(wanted), 1), _WANTED_BATCH):
            batch = wanted[i:i + _WANTED_BATCH]
            await context.write(pb.BuildResponse(wanted=pb.ContextWanted(
                indexes=batch, last=i + _WANTED_BATCH >= len(wanted))))
        # Written into the tree as it arrives (each entry checked first), so the daemon writes
        # while the client is still reading its files: a first build's context costs about the
        # longer of the two, not their sum.
        reader = BlockingReader(self._chunks(requests), asyncio.get_running_loop())
        cancel = threading.Event()

        def stop() -> None:
            cancel.set()
            reader.cancel()  # a client that went quiet must not hold the thread

        began = time.monotonic()
        stats = await uninterrupted(asyncio.to_thread(sync.apply_stream, cast(BinaryIO, reader), self.limits,
                                                      cancel), stop)
        log.debug("build context %s: %d bytes of tar written in %.3f s", sync.id, stats.bytes, time.monotonic() - began)
        return stats

    async def _chunks(self, requests: AsyncIterator[pb.BuildRequest]) -> AsyncIterator[bytes]:
        """The context tar's bytes, as the client sends them (bounded by `limits.max_bytes`)."""
        received = 0
        async for req in requests:
            if req.WhichOneof("request") != "chunk":
                raise InvalidArgument("build: options may only be sent in the first message")
            received += len(req.chunk)
            if received > self.limits.max_bytes:
                raise InvalidArgument(f"build context: larger than {self.limits.max_bytes} bytes")
            yield req.chunk

    async def _spool(self, requests: AsyncIterator[pb.BuildRequest], work: Path) -> Path:
        """The context tar's chunks, to work/context.tar."""
        tar_path = work / _CONTEXT_TAR
        fd = await asyncio.to_thread(os.open, tar_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            async for chunk in self._chunks(requests):
                await asyncio.to_thread(_write_all, fd, chunk)
        finally:
            os.close(fd)
        return tar_path

    def _extract(self, tar_path: Path, target: Path, cancel: threading.Event) -> ContextStats:
        try:
            return extract_context(tar_path, target, limits=self.limits, cancel=cancel)
        finally:
            tar_path.unlink(missing_ok=True)  # the extracted tree is what the build reads

    async def _sweep_once(self) -> None:
        """Remove build directories a daemon that died left in tmp_root (once, before our first)."""
        async with self._sweep_lock:
            if not self._swept:
                await asyncio.to_thread(_sweep, self.tmp_root)
                self._swept = True

    @staticmethod
    async def _tell(context: grpc.aio.ServicerContext, exc: Exception,
                    requests: AsyncIterator[pb.BuildRequest]) -> None:
        """The error as a last message first (a call that ends while its client still sends may
        reach the client as INTERNAL), then read on until the client stops (ours cancels)."""
        if isinstance(exc, grpc.aio.AbortError):
            return  # the call has its status already (a request that does not parse): nothing to add
        if not isinstance(exc, DockyardError):
            log.error("build: internal error", exc_info=exc)  # the client is told no more than that
        code = code_for(exc) if isinstance(exc, DockyardError) else grpc.StatusCode.INTERNAL
        message = str(exc) if isinstance(exc, DockyardError) else "build: internal error"
        with contextlib.suppress(Exception):
            await context.write(pb.BuildResponse(error=status_pb2.Status(code=code.value[0], message=message)))
            async for _ in requests:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sweep(tmp_root: Path) -> None:
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for entry in tmp_root.iterdir():
        if entry.name.startswith(TMP_PREFIX) and entry.is_dir() and not entry.is_symlink():
            log.info("removing %s, left by an earlier daemon", entry)
            shutil.rmtree(entry, ignore_errors=True)
