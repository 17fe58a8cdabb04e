"""Pull: resolve a reference, fetch what the platform needs, label it, unpack it, name it.

    async for event in puller.pull("default", "127.0.0.1:5000/team/app:1", PullOptions()):
        ...   # Resolved, BlobProgress..., LayerProgress/UnpackDone..., finally PullDone

containerd's pull, done in the daemon:

1. the reference is normalized the Docker way (`busybox` -> docker.io/library/busybox:latest)
   and resolved to a descriptor on the first host that knows it (hosts.toml mirrors first);
2. under one lease (24h expiry, deleted at the end whatever happens) the index is fetched,
   and its best entry for the platform kept (the host's by default, `platform`; or all of
   them with `all_platforms`), then each
   manifest and its config; an index offering nothing for the platform is NotFound naming
   what it does offer;
3. the layers are fetched concurrently, at most `max_concurrent` at a time (fetcher.py:
   verified, already-present blobs skipped, interrupted ones resumed);
4. with `unpack`, the platform's manifest is unpacked into the snapshotter, each layer as soon
   as it is fetched and the one below it applied (pipelined with step 3);
5. indexes and manifests get containerd's gc.ref labels for what was fetched
   (`containerd.io/gc.ref.content.m.<i>`, `.config`, `.l.<i>`), every blob gets
   `containerd.io/distribution.source.<registry host> = <repository>[,<other>...]`;
6. the image record `<name>` is created, or updated to point at the new target.

A failure anywhere leaves no image record change; fetched blobs are only held by the lease,
which goes, so the collector takes them (partial ingests of an interrupted transfer stay
until their own lease expires, so a retry can resume them).

What a registry lists is bounded before it costs much: each document is walked once however
often it is listed (an index naming one child index 10 000 times, itself naming one 10 000
times, was 10^8 walks), a pull walks at most MAX_DOCUMENTS indexes and manifests and keeps at
most MAX_ENTRIES_WALKED descriptors, and what it keeps of each is media type, digest and size
(annotations, URLs and platforms stay in the stored documents, where the unpacker reads them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from dockyard_common.credentials import Credentials
from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.imagespec import (
    Descriptor,
    Matcher,
    child_gc_labels,
    is_index,
    is_manifest,
    parse_config,
    parse_index,
    parse_manifest,
)
from dockyard_common.reference import Reference, normalize_reference
from supervisor.images.leasing import INSTANCE, JOB_LABEL
from supervisor.images.unpack import LayerProgress, UnpackDone, Unpacker
from supervisor.metadata import images as records
from supervisor.metadata import leases
from supervisor.metadata.content import NamespacedContentStore
from supervisor.remote.auth import TokenCache
from supervisor.remote.client import Endpoint, RegistrySession, Timeouts
from supervisor.remote.fetcher import BlobProgress, Fetcher, ref_key
from supervisor.remote.hosts import CAP_PULL, CAP_RESOLVE, Hosts, hostname
from supervisor.remote.progress import pump, run_bounded
from supervisor.remote.resolver import resolve
from supervisor.remote.untrusted import shown
from supervisor.timeutil import now

log = logging.getLogger("dockyard.pull")

LEASE_TTL = timedelta(hours=24)
DISTRIBUTION_SOURCE = "containerd.io/distribution.source"
DEFAULT_CONCURRENCY = 3  # containerd's max_concurrent_downloads
MAX_DOCUMENTS = 1024  # indexes and manifests one pull walks (a 40-platform image with attestations: 81)
MAX_ENTRIES_WALKED = 50_000  # descriptors listed by all of them together


@dataclass
class RemoteOptions:
    plain_http: bool = False
    skip_verify: bool = False
    credentials: Credentials | None = None  # None: the daemon's own credential file
    timeout: float = 0  # seconds of registry silence before giving up; 0 = the daemon's default

    def timeouts(self, default: Timeouts) -> Timeouts:
        return Timeouts(min(default.connect, self.timeout), self.timeout) if self.timeout > 0 else default


@dataclass
class PullOptions(RemoteOptions):
    platform: str = ""  # "os/arch[/variant]"; "" = the daemon host's
    all_platforms: bool = False
    unpack: bool = True
    snapshotter: str = ""  # "" = the daemon's default
    labels: dict[str, str] = field(default_factory=dict)  # for the image record
    max_concurrent: int = DEFAULT_CONCURRENCY


@dataclass
class Resolved:
    name: str
    target: Descriptor
    host: str  # the endpoint that answered, e.g. http://127.0.0.1:5000


@dataclass
class PullDone:
    name: str
    target: Descriptor
    created: bool  # False: an existing image now points here
    bytes_received: int  # over the network, this pull
    chain_id: str = ""  # the unpacked rootfs ("" when not unpacked)
    snapshotter: str = ""


PullEvent = Resolved | BlobProgress | LayerProgress | UnpackDone | PullDone


def source_label_key(domain: str) -> str:
    return f"{DISTRIBUTION_SOURCE}.{hostname(domain)}"


async def add_source_label(content: NamespacedContentStore, ns: str, digest: str, domain: str, repo: str) -> None:
    """Add `repo` to the blob's distribution-source label for the registry (comma-separated)."""
    key = source_label_key(domain)
    try:
        info = await content.info(ns, digest)
    except NotFound:
        return
    repos = {r for r in info.labels.get(key, "").split(",") if r}
    if repo in repos:
        return
    value = ",".join(sorted(repos | {repo}))
    await content.update(ns, digest, {key: value}, [f"labels.{key}"])


class Puller:
    def __init__(self, content: NamespacedContentStore, images: records.ImageStore, lease_store: leases.LeaseStore,
                 unpacker: Unpacker, hosts: Hosts, default_snapshotter: str,
                 credentials: Callable[[str], Credentials | None], tokens: TokenCache,
                 timeouts: Timeouts | None = None, on_release: Callable[[], None] = lambda: None) -> None:
        self.content = content
        self.images = images
        self.leases = lease_store
        self.unpacker = unpacker
        self.hosts = hosts
        self.default_snapshotter = default_snapshotter
        self.credentials = credentials
        self.tokens = tokens
        self.timeouts = timeouts or Timeouts()
        self.on_release = on_release

    async def pull(self, ns: str, ref_text: str, opts: PullOptions) -> AsyncGenerator[PullEvent, None]:
        """See the module docstring. Consume to the end or close it (`contextlib.aclosing`)."""
        ref = normalize_reference(ref_text)
        matcher = Matcher.all() if opts.all_platforms else Matcher.parse(opts.platform)
        snapshotter = opts.snapshotter or self.default_snapshotter
        if opts.unpack:
            self.unpacker.snapshots.backend(snapshotter)  # an unknown snapshotter fails before any download
        expire = leases.format_rfc3339(now() + LEASE_TTL)
        # JOB_LABEL: a daemon started after a crash deletes the lease at once (leasing.release_stale)
        lease = (await self.leases.create(ns, "", {leases.EXPIRE_LABEL: expire, JOB_LABEL: INSTANCE})).id
        try:
            async def work(emit: Callable[[PullEvent], None]) -> None:
                await self._pull(ns, ref, opts, matcher, snapshotter, lease, emit)

            async for event in pump(work):
                yield event
        finally:
            await asyncio.shield(self._release(ns, lease))

    async def _release(self, ns: str, lease: str) -> None:
        try:
            await self.leases.delete(ns, lease)
        except NotFound:
            pass
        except Exception:  # it expires by itself
            log.exception("could not delete pull lease %s", lease)
        self.on_release()

    async def _credentials(self, domain: str, opts: RemoteOptions) -> Credentials | None:
        if opts.credentials is not None:
            return opts.credentials
        try:
            return await asyncio.to_thread(self.credentials, domain)
        except Exception as exc:  # a broken credential file must not stop an anonymous pull
            log.warning("credentials for %s: %s", domain, exc)
            return None

    async def _pull(self, ns: str, ref: Reference, opts: PullOptions, matcher: Matcher, snapshotter: str,
                    lease: str, emit: Callable[[PullEvent], None]) -> None:
        name = str(ref)
        creds = await self._credentials(ref.domain, opts)
        hosts = [h for h in self.hosts.lookup(ref.domain, plain_http=opts.plain_http, skip_verify=opts.skip_verify)
                 if h.can(CAP_RESOLVE) or h.can(CAP_PULL)]
        if not hosts:
            raise InvalidArgument(f"registry {ref.domain}: no host is configured to pull from")
        async with RegistrySession(creds, self.tokens, opts.timeouts(self.timeouts)) as session:
            endpoints = [Endpoint(session, h, ref.path) for h in hosts]
            ep, target = await resolve(endpoints, ref)
            emit(Resolved(name, target, str(ep.reached)))
            fetcher = Fetcher(ep, self.content, ns, lease, emit)
            documents: list[tuple[Descriptor, list[Descriptor]]] = []
            layers: dict[str, Descriptor] = {}
            await self._walk(fetcher, target, matcher, _Walk(documents, layers), [])
            for layer in layers.values():
                emit(BlobProgress(ref_key(layer), layer, "waiting", 0, layer.size))
            # A layer is applied once it is fetched (verified and committed by the content
            # store) and the one below it is applied, while later layers still download.
            fetched = {digest: asyncio.Event() for digest in layers}

            async def fetch(desc: Descriptor) -> None:
                await fetcher.blob(desc)
                fetched[desc.digest].set()

            async def fetch_all() -> None:
                await run_bounded([lambda d=d: fetch(d) for d in layers.values()],  # type: ignore[misc]
                                  opts.max_concurrent)

            async def ready(layer: Descriptor) -> None:
                event = fetched.get(layer.digest)
                if event is not None:
                    await event.wait()

            chain = ""

            async def unpack() -> None:
                nonlocal chain
                unpack_matcher = Matcher.parse(opts.platform) if opts.platform else Matcher.default()
                async for step in self.unpacker.unpack(ns, target, snapshotter, unpack_matcher, lease, ready):
                    if isinstance(step, UnpackDone):
                        chain = step.chain_id
                    emit(step)

            # A failed fetch cancels the unpack waiting for it, and the other way round.
            await run_bounded([fetch_all, unpack] if opts.unpack else [fetch_all], 2)
            received = session.transferred.received

        for desc, children in documents:
            labels = child_gc_labels(children)
            if labels:
                await self.content.update(ns, desc.digest, labels, [f"labels.{k}" for k in labels])
        blobs = {d.digest for d, _ in documents} | {c.digest for _, kids in documents for c in kids}
        for digest in sorted(blobs):
            await add_source_label(self.content, ns, digest, ref.domain, ref.path)

        record = records.Image(name, target.record(), dict(opts.labels))
        try:
            await self.images.create(ns, record)
            created = True
        except AlreadyExists:
            await self.images.update(ns, record, ["target", *(f"labels.{k}" for k in opts.labels)])
            created = False
        emit(PullDone(name, target, created, received, chain, snapshotter if opts.unpack else ""))

    async def _walk(self, fetcher: Fetcher, desc: Descriptor, matcher: Matcher, walk: _Walk,
                    path: list[str]) -> None:
        if is_index(desc.media_type) and (desc.digest in path or len(path) > 8):
            raise InvalidArgument(f"index {desc.digest} refers to itself, or indexes nest too deep")
        if desc.digest in walk.seen:
            return  # listed again (by this index or another): walked once
        walk.enter(desc)
        if is_index(desc.media_type):
            index = parse_index(await fetcher.document(desc), desc.media_type, f"index {desc.digest}")
            walk.listed(desc, len(index.manifests))
            kids = [c for c in index.manifests if c.platform is None or matcher.match(c.platform)]
            if not matcher.everything:
                # containerd's LimitManifests(1): only the best manifest for the platform
                best = matcher.best([c for c in kids if is_manifest(c.media_type)])
                kids = [c for c in kids if c is best or not is_manifest(c.media_type)]
            if not kids:
                offered = sorted({str(c.platform) for c in index.manifests if c.platform is not None})
                raise NotFound(f"no manifest for platform {matcher} in index {desc.digest} (it offers "
                               f"{shown(', '.join(offered[:20])) or 'nothing'}; choose one with --platform, or pull "
                               "all platforms)")
            kids = [_bare(c) for c in kids]
            del index
            walk.documents.append((_bare(desc), kids))
            for kid in kids:
                await self._walk(fetcher, kid, matcher, walk, [*path, desc.digest])
            return
        if not is_manifest(desc.media_type):
            raise InvalidArgument(f"{desc.digest}: media type {desc.media_type!r} is not an image manifest or index")
        manifest = parse_manifest(await fetcher.document(desc), desc.media_type, f"manifest {desc.digest}")
        walk.listed(desc, 1 + len(manifest.layers))
        config = parse_config(await fetcher.document(manifest.config), f"image config {manifest.config.digest}")
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"manifest {desc.digest}: {len(manifest.layers)} layers but its config lists "
                                  f"{len(config.diff_ids)} diff IDs")
        children = [_bare(manifest.config), *(_bare(layer) for layer in manifest.layers)]
        walk.documents.append((_bare(desc), children))
        for layer in children[1:]:
            walk.layers.setdefault(layer.digest, layer)


def _bare(desc: Descriptor) -> Descriptor:
    """What a pull keeps of a descriptor it walked: media type, digest, size."""
    return Descriptor(desc.media_type, desc.digest, desc.size)


@dataclass
class _Walk:
    """What a pull's walk has found, and its bounds (module docstring)."""

    documents: list[tuple[Descriptor, list[Descriptor]]]
    layers: dict[str, Descriptor]
    seen: set[str] = field(default_factory=set)
    entries: int = 0

    def enter(self, desc: Descriptor) -> None:
        self.seen.add(desc.digest)
        if len(self.seen) > MAX_DOCUMENTS:
            raise InvalidArgument(f"{desc.digest}: the image lists more than {MAX_DOCUMENTS} indexes and manifests; "
                                  "refused")

    def listed(self, desc: Descriptor, count: int) -> None:
        self.entries += count
        if self.entries > MAX_ENTRIES_WALKED:
            raise InvalidArgument(f"{desc.digest}: the image's indexes and manifests list more than "
                                  f"{MAX_ENTRIES_WALKED} descriptors in all; refused")
