"""Reading image documents out of a namespace's content, and walking from a target to its blobs.

    r = Resolver(content)
    found = await r.resolve(ns, image.target, Matcher.default())   # index -> manifest -> config
    found.manifest.layers, found.config.diff_ids, found.chain_id
    for d in await r.walk(ns, image.target, Matcher.all()):         # every blob, parents first
        ...

An index is followed to the best manifest for the platform; nested indexes are followed too,
at most MAX_INDEX_DEPTH deep and never back to one already on the path (an index that lists
itself is InvalidArgument, not an endless loop), and each index once however often it is
listed (one child listed 10 000 times at each of a few levels is not 10 000^levels visits).
A blob the namespace lacks is NotFound (`content digest sha256:…: not found`); a blob whose
size differs from its descriptor, or that is not the document its media type says, is
InvalidArgument naming the descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import (
    MAX_DOCUMENT_SIZE,
    MAX_INDEX_DEPTH,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Matcher,
    Platform,
    chain_id,
    is_index,
    is_manifest,
    parse_config,
    parse_index,
    parse_manifest,
)
from supervisor.metadata.content import NamespacedContentStore


@dataclass
class Resolved:
    """One image for one platform: the manifest chosen, its config, and the rootfs chain ID."""

    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig

    @property
    def chain_id(self) -> str:
        return chain_id(self.config.diff_ids)

    @property
    def platform(self) -> Platform:
        return self.manifest_desc.platform or self.config.platform


class Resolver:
    def __init__(self, content: NamespacedContentStore) -> None:
        self.content = content

    async def read(self, ns: str, desc: Descriptor, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
        """The whole blob, checked against the descriptor's size (documents only: it is capped)."""
        if desc.size > limit:
            raise InvalidArgument(f"{desc.media_type} {desc.digest}: size {desc.size} is larger than "
                                  f"the limit of {limit} for a document")
        reader = await self.content.reader(ns, desc.digest)
        try:
            if reader.size != desc.size:
                raise InvalidArgument(f"{desc.media_type} {desc.digest}: blob has {reader.size} bytes, "
                                      f"its descriptor says {desc.size}")
            data = await reader.read_at(0, reader.size) if reader.size else b""
        finally:
            await reader.close()
        if len(data) != desc.size:
            raise InvalidArgument(f"{desc.digest}: short read ({len(data)} of {desc.size} bytes)")
        return data

    async def index(self, ns: str, desc: Descriptor) -> Index:
        return parse_index(await self.read(ns, desc), desc.media_type, f"index {desc.digest}")

    async def manifest(self, ns: str, desc: Descriptor) -> Manifest:
        return parse_manifest(await self.read(ns, desc), desc.media_type, f"manifest {desc.digest}")

    async def config(self, ns: str, desc: Descriptor) -> ImageConfig:
        return parse_config(await self.read(ns, desc), f"image config {desc.digest}")

    async def manifests(self, ns: str, target: Descriptor, matcher: Matcher) -> list[Descriptor]:
        """The manifests under `target` that `matcher` accepts, best first.

        A manifest listed with no platform in an index is judged by its config. A plain
        manifest target is always returned (as containerd does for a single-platform image)
        when its config matches, or when the matcher matches everything.
        """
        found: list[tuple[int, int, Descriptor]] = []
        await self._collect(ns, target, matcher, found, [], None, set())
        found.sort(key=lambda t: (t[0], t[1]))
        return [d for _, _, d in found]

    async def _collect(self, ns: str, desc: Descriptor, matcher: Matcher, out: list[tuple[int, int, Descriptor]],
                       path: list[str], listed: Platform | None, seen: set[tuple[str, Platform | None]]) -> None:
        if is_index(desc.media_type):
            self._enter(desc, path)  # (a cycle is an error, not something seen before)
        key = (desc.digest, desc.platform or listed if is_manifest(desc.media_type) else None)
        if key in seen:
            return  # listed again: the same manifest (for the same platform) or index gives the same answer
        seen.add(key)
        if is_manifest(desc.media_type):
            platform = desc.platform or listed
            if platform is None:
                manifest = await self.manifest(ns, desc)
                platform = (await self.config(ns, manifest.config)).platform
            rank = matcher.rank(platform)
            if rank is not None:
                out.append((rank, len(out), Descriptor(desc.media_type, desc.digest, desc.size,
                                                       dict(desc.annotations), platform, list(desc.urls))))
            return
        if not is_index(desc.media_type):
            raise InvalidArgument(f"{desc.digest}: media type {desc.media_type!r} is not an image index or manifest")
        index = await self.index(ns, desc)
        for child in index.manifests:
            if child.platform is not None and not matcher.match(child.platform) and is_manifest(child.media_type):
                continue  # not wanted: its blobs need not even be present
            await self._collect(ns, child, matcher, out, [*path, desc.digest], child.platform, seen)

    @staticmethod
    def _enter(desc: Descriptor, path: list[str]) -> None:
        if desc.digest in path:
            raise InvalidArgument(f"index {desc.digest} refers to itself (through {len(path)} level(s) of indexes)")
        if len(path) >= MAX_INDEX_DEPTH:
            raise InvalidArgument(f"index {desc.digest}: indexes nested more than {MAX_INDEX_DEPTH} deep")

    async def resolve(self, ns: str, target: Descriptor, matcher: Matcher) -> Resolved:
        """The manifest and config for the best platform under `target`."""
        candidates = await self.manifests(ns, target, matcher)
        if not candidates:
            raise NotFound(f"no manifest for platform {matcher} in {target.digest}")
        chosen = candidates[0]
        manifest = await self.manifest(ns, chosen)
        config = await self.config(ns, manifest.config)
        if len(manifest.layers) != len(config.diff_ids):
            raise InvalidArgument(f"manifest {chosen.digest}: {len(manifest.layers)} layers but the config "
                                  f"lists {len(config.diff_ids)} diff IDs")
        return Resolved(chosen, manifest, config)

    async def platforms(self, ns: str, target: Descriptor) -> list[Platform]:
        """Every platform the image offers (what `ctr images ls` shows)."""
        found = await self.manifests(ns, target, Matcher.all())
        out: list[Platform] = []
        for d in found:
            if d.platform is not None and d.platform not in out:
                out.append(d.platform)
        return out

    async def children(self, ns: str, desc: Descriptor) -> list[Descriptor]:
        """What a manifest (config, then layers) or an index (its entries) refers to."""
        if is_manifest(desc.media_type):
            m = await self.manifest(ns, desc)
            return [m.config, *m.layers]
        if is_index(desc.media_type):
            return list((await self.index(ns, desc)).manifests)
        return []

    async def walk(self, ns: str, target: Descriptor, matcher: Matcher, *,
                   missing_ok: bool = False) -> list[Descriptor]:
        """Every descriptor reachable from `target` (itself first, then depth-first, no repeats),
        keeping only the index entries `matcher` wants. With `missing_ok`, a missing manifest
        or index is listed but not descended into (for `check`)."""
        out: list[Descriptor] = []
        seen: set[str] = set()
        await self._walk(ns, target, matcher, out, seen, [], missing_ok)
        return out

    async def _walk(self, ns: str, desc: Descriptor, matcher: Matcher, out: list[Descriptor], seen: set[str],
                    path: list[str], missing_ok: bool) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        out.append(desc)
        if not (is_manifest(desc.media_type) or is_index(desc.media_type)):
            return
        try:
            if is_index(desc.media_type):
                self._enter(desc, path)
                entries = (await self.index(ns, desc)).manifests
                kids = [c for c in entries if c.platform is None or matcher.match(c.platform)]
            else:
                kids = await self.children(ns, desc)
        except NotFound:
            if missing_ok:
                return
            raise
        for child in kids:
            await self._walk(ns, child, matcher, out, seen, [*path, desc.digest], missing_ok)
