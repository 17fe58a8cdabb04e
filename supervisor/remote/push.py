"""Push: an image of the namespace to a registry repository, leaves first, the tag last.

    async for event in pusher.push("default", "127.0.0.1:5000/team/app:1", PushOptions()):
        ...   # Resolved, BlobProgress..., finally PushDone

The local image is `opts.local` (default: the reference itself, normalized). What is sent:
the configs and layers of every manifest (concurrently, at most `max_concurrent` at a
time; pusher.py skips what the registry has and mounts from sibling repositories), then
each manifest, then each index (children before parents), and last the target itself,
PUT under the reference's tag (or its digest), so the tag names exactly the bytes pushed.
An index whose manifests are not all in the namespace (pulled for one platform) cannot be
pushed whole: that is FailedPrecondition, suggesting `platform`, which pushes that
platform's manifest alone under the tag. Blobs pushed get the distribution-source label of
the repository, so later pushes to sibling repositories can mount them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from dockyard_common.credentials import Credentials
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor, Matcher, is_index, is_manifest
from dockyard_common.reference import InvalidReference, Reference, normalize, normalize_reference
from supervisor.images.resolve import Resolver
from supervisor.metadata import images as records
from supervisor.metadata.content import NamespacedContentStore
from supervisor.remote.auth import TokenCache
from supervisor.remote.client import Endpoint, RegistrySession, Timeouts
from supervisor.remote.fetcher import BlobProgress, ref_key
from supervisor.remote.hosts import CAP_PUSH, Hosts
from supervisor.remote.progress import pump, run_bounded
from supervisor.remote.pull import DEFAULT_CONCURRENCY, RemoteOptions, Resolved, add_source_label, source_label_key
from supervisor.remote.pusher import Pusher

log = logging.getLogger("dockyard.push")


@dataclass
class PushOptions(RemoteOptions):
    local: str = ""  # the image to push; "" = the reference itself
    platform: str = ""  # push only this platform's manifest of an index
    chunk_size: int = 0  # > 0: upload blobs larger than this in PATCH chunks of this size
    max_concurrent: int = DEFAULT_CONCURRENCY


@dataclass
class PushDone:
    name: str  # the remote reference pushed
    target: Descriptor  # what the tag now points at
    bytes_sent: int


PushEvent = Resolved | BlobProgress | PushDone


@dataclass
class _Plan:
    blobs: dict[str, Descriptor]
    documents: list[Descriptor]  # children before parents; the target last
    data: dict[str, bytes]


class PushEngine:
    def __init__(self, content: NamespacedContentStore, images: records.ImageStore, hosts: Hosts,
                 credentials: Callable[[str], Credentials | None], tokens: TokenCache,
                 timeouts: Timeouts | None = None) -> None:
        self.content = content
        self.images = images
        self.hosts = hosts
        self.credentials = credentials
        self.tokens = tokens
        self.timeouts = timeouts or Timeouts()
        self.resolver = Resolver(content)

    async def _image(self, ns: str, name: str) -> records.Image:
        try:
            return await self.images.get(ns, name)
        except NotFound:
            try:
                full = normalize(name)
            except InvalidReference:
                raise NotFound(f"image {name!r}") from None
            if full == name:
                raise
            return await self.images.get(ns, full)

    async def push(self, ns: str, ref_text: str, opts: PushOptions) -> AsyncGenerator[PushEvent, None]:
        ref = normalize_reference(ref_text)
        image = await self._image(ns, opts.local or ref_text)
        target = image.target.record()
        if opts.platform and is_index(target.media_type):
            found = await self.resolver.manifests(ns, target, Matcher.parse(opts.platform))
            if not found:
                raise NotFound(f"image {image.name!r} has no manifest for platform {opts.platform}")
            m = found[0]
            target = Descriptor(m.media_type, m.digest, m.size)
        if ref.digest and ref.digest != target.digest:
            raise InvalidArgument(f"cannot push {image.name} ({target.digest}) as {ref}: the digests differ")
        plan = await self._plan(ns, image.name, target)
        async def work(emit: Callable[[PushEvent], None]) -> None:
            await self._push(ns, ref, target, plan, opts, emit)

        async for event in pump(work):
            yield event

    async def _plan(self, ns: str, name: str, target: Descriptor) -> _Plan:
        plan = _Plan({}, [], {})
        try:
            await self._visit(ns, target, plan, [])
        except NotFound as exc:
            raise FailedPrecondition(f"cannot push {name}: {exc.message} in this namespace (an image pulled for "
                                     "one platform lacks the others' manifests: push one platform with "
                                     "--platform, or pull with --all-platforms first)") from None
        return plan

    async def _visit(self, ns: str, desc: Descriptor, plan: _Plan, path: list[str]) -> None:
        if desc.digest in plan.data:
            return
        if is_index(desc.media_type):
            if desc.digest in path or len(path) > 8:
                raise InvalidArgument(f"index {desc.digest} refers to itself, or indexes nest too deep")
            data = await self.resolver.read(ns, desc)
            for child in (await self.resolver.index(ns, desc)).manifests:
                await self._visit(ns, child, plan, [*path, desc.digest])
        elif is_manifest(desc.media_type):
            data = await self.resolver.read(ns, desc)
            manifest = await self.resolver.manifest(ns, desc)
            for blob in [manifest.config, *manifest.layers]:
                info = await self.content.info(ns, blob.digest)
                if info.size != blob.size:
                    raise FailedPrecondition(f"content {blob.digest}: {info.size} bytes stored, the manifest "
                                             f"says {blob.size}")
                plan.blobs.setdefault(blob.digest, blob)
        else:
            raise InvalidArgument(f"{desc.digest}: media type {desc.media_type!r} is not an image manifest or index")
        plan.data[desc.digest] = data
        plan.documents.append(desc)

    async def _mount_sources(self, ns: str, desc: Descriptor, domain: str) -> list[str]:
        try:
            info = await self.content.info(ns, desc.digest)
        except NotFound:
            return []
        return [r for r in info.labels.get(source_label_key(domain), "").split(",") if r]

    async def _push(self, ns: str, ref: Reference, target: Descriptor, plan: _Plan, opts: PushOptions,
                    emit: Callable[[PushEvent], None]) -> None:
        creds = opts.credentials
        if creds is None:
            try:
                creds = await asyncio.to_thread(self.credentials, ref.domain)
            except Exception as exc:
                log.warning("credentials for %s: %s", ref.domain, exc)
        hosts = [h for h in self.hosts.lookup(ref.domain, plain_http=opts.plain_http, skip_verify=opts.skip_verify)
                 if h.can(CAP_PUSH)]
        if not hosts:
            raise InvalidArgument(f"registry {ref.domain}: no host is configured to push to")
        async with RegistrySession(creds, self.tokens, opts.timeouts(self.timeouts)) as session:
            ep = Endpoint(session, hosts[0], ref.path, ("pull", "push"))
            pusher = Pusher(ep, self.content, ns, emit, opts.chunk_size)
            # A first request (is the target there? as containerd asks before a PUT) settles the
            # scheme: a loopback registry may answer in plain http. Resolved names it as pull's does.
            await pusher.manifest_exists(target)
            emit(Resolved(str(ref), target, str(ep.reached)))
            for blob in plan.blobs.values():
                emit(BlobProgress(ref_key(blob), blob, "waiting", 0, blob.size))
            sources = {d: await self._mount_sources(ns, b, ref.domain) for d, b in plan.blobs.items()}

            async def push_blob(b: Descriptor) -> None:
                await pusher.blob(b, sources[b.digest])

            await run_bounded([lambda b=b: push_blob(b) for b in plan.blobs.values()],  # type: ignore[misc]
                              opts.max_concurrent)
            for doc in plan.documents:
                if doc.digest == target.digest:
                    continue
                if await pusher.manifest_exists(doc):
                    emit(BlobProgress(ref_key(doc), doc, "exists", doc.size, doc.size))
                    continue
                await pusher.manifest(doc, plan.data[doc.digest])
            await pusher.manifest(target, plan.data[target.digest], ref.tag or target.digest)
            sent = session.transferred.sent
        for digest in [*plan.blobs, *plan.data]:
            await add_source_label(self.content, ns, digest, ref.domain, ref.path)
        emit(PushDone(str(ref), target, sent))
