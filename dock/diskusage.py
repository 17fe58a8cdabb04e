"""What images and containers hold on disk, from the daemon's API (`dock system df`).

    prints = await image_footprints(client, await client.images.list())
    prints[name].size, prints[name].shared      # bytes of its own items, of those another image has too
    sizes = await snapshot_sizes(client, [("overlayfs", "web")])   # a container's writable layer

Words: an image's *items* are what keeps it on disk: the blobs it reaches through containerd's
gc.ref.content labels (index, manifests, configs, layers: what the collector keeps for it), at
their content store Info size, and the committed snapshots of each chain it is unpacked to (the
config's gc.ref.snapshot.<snapshotter> label names the top; parents from the snapshot list), at
their Usage. Two images that share a layer share its blob and its snapshot: an item is counted
once in any total. The calls: one Content.List, one Snapshots.List per snapshotter in play, one
Usage per distinct snapshot (at most `AT_ONCE` in flight); no blob is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import LABEL_GC_REF_CONTENT, LABEL_GC_REF_SNAPSHOT

if TYPE_CHECKING:
    from dock.client import Client
    from dock.content import ContentInfo
    from dock.images import ImageInfo

AT_ONCE = 16  # Usage calls in flight at once
Item = tuple[str, str, str]  # ("content", "", digest) or ("snapshot", snapshotter, key)


@dataclass(frozen=True)
class Footprint:
    items: frozenset[Item]
    size: int  # all its items
    shared: int  # its items another image has too


async def snapshot_sizes(client: Client, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(snapshotter, key) -> Usage size, `AT_ONCE` at a time; a snapshot gone meanwhile is left out."""
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(sn: str, key: str) -> int | None:
        async with gate:
            try:
                return (await client.snapshots.using(sn).usage(key)).size
            except (NotFound, InvalidArgument):  # gone meanwhile; a snapshotter not loaded
                return None

    wanted = sorted(set(keys))
    sizes = await asyncio.gather(*(one(sn, key) for sn, key in wanted))
    return {k: s for k, s in zip(wanted, sizes, strict=True) if s is not None}


def reach(target: str, infos: Mapping[str, ContentInfo]) -> set[str]:
    """The blobs present in the store that `target` reaches through gc.ref.content labels."""
    seen: set[str] = set()
    todo = [target]
    while todo:
        digest = todo.pop()
        if digest in seen or digest not in infos:
            continue  # a platform never pulled is not on disk
        seen.add(digest)
        todo.extend(v for k, v in infos[digest].labels.items() if k.startswith(LABEL_GC_REF_CONTENT))
    return seen


def chain_tops(blobs: Iterable[str], infos: Mapping[str, ContentInfo]) -> set[tuple[str, str]]:
    """(snapshotter, top snapshot) of every chain the configs among `blobs` are unpacked to."""
    prefix = LABEL_GC_REF_SNAPSHOT + "."
    return {(k.removeprefix(prefix), v) for d in blobs for k, v in infos[d].labels.items()
            if k.startswith(prefix) and v}


def footprints(items: Mapping[str, frozenset[Item]], sizes: Mapping[Item, int]) -> dict[str, Footprint]:
    """Each name's size and shared size, given its items and every item's size (pure)."""
    holders: dict[Item, int] = {}
    for held in items.values():
        for item in held:
            holders[item] = holders.get(item, 0) + 1
    return {name: Footprint(held, sum(sizes.get(i, 0) for i in held),
                            sum(sizes.get(i, 0) for i in held if holders[i] > 1))
            for name, held in items.items()}


def total(items: Iterable[frozenset[Item]], sizes: Mapping[Item, int]) -> int:
    """The bytes of the union of item sets: a shared item once."""
    return sum(sizes.get(i, 0) for i in frozenset().union(*items))


async def image_footprints(client: Client, images: list[ImageInfo]) -> tuple[dict[str, Footprint], dict[Item, int]]:
    """Each image's footprint (by name), and every item's size."""
    infos = {i.digest: i for i in await client.content.list()}
    blobs = {img.name: reach(img.target.digest, infos) for img in images}
    tops = {name: chain_tops(found, infos) for name, found in blobs.items()}
    parents: dict[str, dict[str, str]] = {}
    for sn in sorted({sn for found in tops.values() for sn, _ in found}):
        try:
            parents[sn] = {s.name: s.parent for s in await client.snapshots.using(sn).all()}
        except InvalidArgument:  # a label naming a snapshotter this daemon has not loaded
            parents[sn] = {}
    items: dict[str, frozenset[Item]] = {}
    for name, found in blobs.items():
        held: set[Item] = {("content", "", d) for d in found}
        for sn, key in tops[name]:
            while key in parents[sn]:  # a chain the collector took is not on disk
                held.add(("snapshot", sn, key))
                key = parents[sn][key]
        items[name] = frozenset(held)
    sizes: dict[Item, int] = {("content", "", d): infos[d].size for found in blobs.values() for d in found}
    layer_keys = {(i[1], i[2]) for held in items.values() for i in held if i[0] == "snapshot"}
    for (sn, key), size in (await snapshot_sizes(client, layer_keys)).items():
        sizes[("snapshot", sn, key)] = size
    return footprints(items, sizes), sizes
