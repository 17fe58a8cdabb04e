"""Looking at stored images: what one is made of (`inspect`), and whether it is whole (`check`).

    info = await inspector.inspect(ns, "docker.io/library/busybox:latest", Matcher.default())
    info.config.config["Cmd"], info.layers[0].diff_id, info.size, info.platforms
    for r in await inspector.check(ns, [], Matcher.default(), "overlayfs"):   # [] = every image
        r.complete, r.missing, r.unpacked

`check` never fails for one broken image: what is missing, or why the image cannot be
read, is in its result (as `ctr images check` prints it); an unknown name is NotFound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.imagespec import Descriptor, ImageConfig, Matcher, Platform, chain_ids
from supervisor.images.resolve import Resolver
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.images import Image, ImageStore
from supervisor.metadata.snapshots import SnapshotStore


@dataclass
class LayerInfo:
    descriptor: Descriptor
    diff_id: str
    chain_id: str


@dataclass
class Inspection:
    name: str
    target: Descriptor
    manifest: Descriptor
    config_descriptor: Descriptor
    config: ImageConfig
    config_json: bytes
    layers: list[LayerInfo]
    size: int  # manifest + config + layers as stored (compressed)
    platform: Platform
    platforms: list[Platform]
    unpacked: list[str] = field(default_factory=list)  # snapshotters holding the rootfs


@dataclass
class CheckResult:
    name: str
    target: Descriptor
    complete: bool  # every blob the platform needs is present
    present_size: int
    total_size: int
    missing: list[Descriptor] = field(default_factory=list)
    unpacked: bool = False
    platforms: list[Platform] = field(default_factory=list)
    error: str = ""  # why the image could not be read, if it could not


class Inspector:
    def __init__(self, content: NamespacedContentStore, image_store: ImageStore, snapshots: SnapshotStore) -> None:
        self.content = content
        self.images = image_store
        self.snapshots = snapshots
        self.resolver = Resolver(content)

    async def inspect(self, ns: str, name: str, matcher: Matcher) -> Inspection:
        image = await self.images.get(ns, name)
        target = image.target.record()
        found = await self.resolver.resolve(ns, target, matcher)
        config_json = await self.resolver.read(ns, found.manifest.config)
        chain = chain_ids(found.config.diff_ids)
        layers = [LayerInfo(d, found.config.diff_ids[i], chain[i]) for i, d in enumerate(found.manifest.layers)]
        size = found.manifest_desc.size + found.manifest.config.size + sum(d.size for d in found.manifest.layers)
        unpacked = [sn for sn in sorted(self.snapshots.backends) if chain and await self._has(ns, sn, chain[-1])]
        return Inspection(image.name, target, found.manifest_desc, found.manifest.config, found.config, config_json,
                          layers, size, found.platform, await self.resolver.platforms(ns, target), unpacked)

    async def _has(self, ns: str, snapshotter: str, key: str) -> bool:
        try:
            await self.snapshots.stat(ns, snapshotter, key)
        except DockyardError:
            return False
        return True

    async def check(self, ns: str, names: list[str], matcher: Matcher, snapshotter: str) -> list[CheckResult]:
        images = [await self.images.get(ns, n) for n in names] if names else await self.images.list(ns)
        return [await self._check(ns, image, matcher, snapshotter) for image in images]

    async def _check(self, ns: str, image: Image, matcher: Matcher, snapshotter: str) -> CheckResult:
        target = image.target.record()
        result = CheckResult(image.name, target, False, 0, 0)
        try:
            for desc in await self.resolver.walk(ns, target, matcher, missing_ok=True):
                result.total_size += desc.size
                try:
                    info = await self.content.info(ns, desc.digest)
                except NotFound:
                    result.missing.append(desc)
                    continue
                result.present_size += info.size
            result.complete = not result.missing
            result.platforms = await self.resolver.platforms(ns, target) if result.complete else []
            if result.complete:
                found = await self.resolver.resolve(ns, target, matcher)
                chain = chain_ids(found.config.diff_ids)
                result.unpacked = bool(chain) and await self._has(ns, snapshotter, chain[-1])
        except DockyardError as exc:
            result.complete = False
            result.error = str(exc)
        return result
