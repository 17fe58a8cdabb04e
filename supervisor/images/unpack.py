"""Unpack an image into a chain of committed snapshots named by chain ID (containerd's unpacker).

For the manifest chosen for the platform, each layer i is applied on top of the snapshot of
layers 0..i-1:

    Stat(chainID_i)                         exists?  -> reuse it (images share lower layers)
    Prepare("extract-<unique> <chainID_i>", parent=chainID_i-1, labels={snapshot.ref: chainID_i})
    Diff.Apply(layer blob, mounts)          -> the uncompressed digest, checked against
                                               config.rootfs.diff_ids[i]
    Commit(chainID_i, key)
    layer blob label containerd.io/uncompressed = diff ID

and finally the config gets `containerd.io/gc.ref.snapshot.<snapshotter> = chainID_n`, which
keeps the whole chain alive for as long as the image keeps its config. Everything made is
held by a lease for the duration (the caller's, or one made and deleted here), so a
collection in between cannot take a half-finished chain.

A layer whose applied digest differs from its diff ID fails the unpack with InvalidArgument
(`wrong diff id calculated on extraction ...`), and its half-made snapshot is removed; the
layers committed before it stay (they are correct, and the next attempt reuses them). Two
unpacks of the same chain in this daemon wait for each other instead of racing; against
other clients (ctr unpacks client-side) the `containerd.io/snapshot.ref` label makes a
second Prepare fail with AlreadyExists, which reads as "already unpacked".

    async for event in unpacker.unpack(ns, image.target, "overlayfs", Matcher.default()):
        print(event)          # LayerProgress ..., then one UnpackDone
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.imagespec import LABEL_UNCOMPRESSED, Descriptor, Matcher, chain_ids, snapshot_gc_label
from supervisor.differ import Differ
from supervisor.images.leasing import temporary_lease
from supervisor.images.resolve import Resolver
from supervisor.metadata import leases
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.snapshots import TARGET_LABEL, SnapshotStore, resource

log = logging.getLogger("dockyard.unpack")

UNPACK_KEY_PREFIX = "extract-"
# Layer annotations with this prefix become labels of the layer's snapshot (containerd's
# snapshots.FilterInheritedLabels), e.g. for remote snapshotters.
INHERITED_LABEL_PREFIX = "containerd.io/snapshot/"


@dataclass
class LayerProgress:
    """One layer's step: "extracting" (started), "extracted" (applied and committed) or
    "exists" (its chain was already unpacked)."""

    index: int
    total: int
    layer: Descriptor
    diff_id: str
    chain_id: str
    state: str


@dataclass
class UnpackDone:
    manifest: Descriptor
    chain_id: str  # "" for an image with no layers
    snapshotter: str
    extracted: int
    reused: int


UnpackEvent = LayerProgress | UnpackDone
LayerReady = Callable[[Descriptor], Awaitable[None]]


def unpack_key(chain: str) -> str:
    """containerd's `extract-<nanoseconds>-<random> <chainID>`."""
    unique = f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"
    return f"{UNPACK_KEY_PREFIX}{unique} {chain}"


class Unpacker:
    def __init__(self, content: NamespacedContentStore, snapshots: SnapshotStore, differ: Differ,
                 lease_store: leases.LeaseStore, on_release: Callable[[], None] = lambda: None) -> None:
        self.content = content
        self.snapshots = snapshots
        self.differ = differ
        self.leases = lease_store
        self.on_release = on_release  # a lease was deleted: the collector may have work
        self.resolver = Resolver(content)
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, ns: str, snapshotter: str, chain: str) -> asyncio.Lock:
        key = (ns, snapshotter, chain)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def unpack(self, ns: str, target: Descriptor, snapshotter: str, matcher: Matcher,
                     lease: str = "", ready: LayerReady | None = None) -> AsyncGenerator[UnpackEvent, None]:
        """Unpack `target` for the best platform `matcher` accepts; see the module docstring.

        `ready(layer)`, when given, is awaited before a layer is applied: a pull passes one
        that returns once the blob is fetched and verified, so layer i is applied while
        later ones still download (containerd does the same).
        """
        self.snapshots.backend(snapshotter)  # an unknown snapshotter fails before any work
        if lease:
            async for event in self._unpack(ns, target, snapshotter, matcher, lease, ready):
                yield event
            return
        async with temporary_lease(self.leases, ns, self.on_release) as own:
            async for event in self._unpack(ns, target, snapshotter, matcher, own, ready):
                yield event

    async def _unpack(self, ns: str, target: Descriptor, snapshotter: str, matcher: Matcher,
                      lease: str, ready: LayerReady | None) -> AsyncIterator[UnpackEvent]:
        found = await self.resolver.resolve(ns, target, matcher)
        layers, diff_ids = found.manifest.layers, found.config.diff_ids
        chain = chain_ids(diff_ids)
        extracted = reused = 0
        for i, layer in enumerate(layers):
            progress = LayerProgress(i, len(layers), layer, diff_ids[i], chain[i], "extracting")
            async with self._lock(ns, snapshotter, chain[i]):
                if await self._exists(ns, snapshotter, chain[i], lease):
                    reused += 1
                    progress.state = "exists"
                    yield progress
                    continue
                yield progress
                if ready is not None:
                    await ready(layer)
                made = await self._apply(ns, snapshotter, layer, diff_ids[i], chain[i],
                                         chain[i - 1] if i else "", lease)
            if made:
                extracted += 1
                yield LayerProgress(i, len(layers), layer, diff_ids[i], chain[i], "extracted")
            else:
                reused += 1
                yield LayerProgress(i, len(layers), layer, diff_ids[i], chain[i], "exists")
        top = chain[-1] if chain else ""
        if top:
            label = snapshot_gc_label(snapshotter)
            await self.content.update(ns, found.manifest.config.digest, {label: top}, [f"labels.{label}"])
        yield UnpackDone(found.manifest_desc, top, snapshotter, extracted, reused)

    async def _exists(self, ns: str, snapshotter: str, chain: str, lease: str) -> bool:
        try:
            await self.snapshots.stat(ns, snapshotter, chain)
        except NotFound:
            return False
        # Hold it while we build on it: nothing may refer to it but an image about to go.
        with contextlib.suppress(NotFound):
            await self.leases.add_resource(ns, lease, resource(snapshotter, chain))
        return True

    async def _apply(self, ns: str, snapshotter: str, layer: Descriptor, diff_id: str, chain: str, parent: str,
                     lease: str) -> bool:
        """Extract one layer as snapshot `chain`; False if someone else made it meanwhile."""
        labels = {k: v for k, v in layer.annotations.items() if k.startswith(INHERITED_LABEL_PREFIX)}
        labels[TARGET_LABEL] = chain
        key = unpack_key(chain)
        try:
            mounts = await self.snapshots.prepare(ns, snapshotter, key, parent, labels, lease)
        except AlreadyExists:
            if await self._exists(ns, snapshotter, chain, lease):
                return False
            raise
        committed = False
        try:
            applied = await self.differ.apply(ns, layer.record(), mounts)
            if applied.digest != diff_id:
                raise InvalidArgument(f"layer {layer.digest}: wrong diff id calculated on extraction "
                                      f"{applied.digest!r}, the image config says {diff_id!r}")
            try:
                await self.snapshots.commit(ns, snapshotter, chain, key, labels, lease)
                committed = True
            except AlreadyExists:
                pass  # made by another client meanwhile: ours goes below
        finally:
            if not committed:
                await asyncio.shield(self._remove(ns, snapshotter, key))
        label = {LABEL_UNCOMPRESSED: applied.digest}
        await self.content.update(ns, layer.digest, label, [f"labels.{LABEL_UNCOMPRESSED}"])
        return committed

    async def _remove(self, ns: str, snapshotter: str, key: str) -> None:
        try:
            await self.snapshots.remove(ns, snapshotter, key)
        except NotFound:
            pass
        except Exception:  # the lease going away lets the collector finish the job
            log.exception("could not remove extraction snapshot %r", key)
