"""Which build cache records go: `dock builder prune` and the daemon's size limit.

    report = await prune_cache(cache, content, images, "default", PruneOptions(all=True), on_release)

Words: the cache's *size* is what it alone holds: the compressed sizes of the distinct layer
blobs of its records that no image of the namespace uses (an image's layers stay whatever
happens to the cache, so they cost the cache nothing). A record is *dangling* when it holds no
such layer of an image: a config-only record, or a layer no image uses.

- `prune` without `all` takes the dangling records, with `all` every record; `unused_for`
  keeps those used more recently than that (docker's `--filter until=`); `keep_storage` removes
  the chosen records least recently used first only until the size is at most that.
- The size limit (`[build] cache_max_size` in the daemon's config) is a prune of all records
  with `keep_storage` = the limit, run after each build of the namespace.

`describe` says the same in `docker system df`'s words (Builder/ListCache): each record with its
layer's size, `shared` when an image or another record has that layer too.

Deleting records releases their gc roots (metadata/buildcache.py); `on_release` schedules the
collector, which frees the blobs and snapshots nothing else holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dockyard_common.containerlog import parse_size
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import LABEL_GC_REF_CONTENT
from supervisor.metadata import images as records
from supervisor.metadata.buildcache import BuildCacheStore, Record
from supervisor.metadata.content import NamespacedContentStore
from supervisor.timeutil import now, parse_iso


@dataclass(frozen=True)
class PruneOptions:
    all: bool = False
    unused_for: timedelta = timedelta()
    keep_storage: int = 0  # bytes; 0: no floor


@dataclass(frozen=True)
class PruneReport:
    removed: tuple[str, ...]  # record keys, least recently used first
    reclaimed: int  # bytes of layer blobs nothing kept refers to any more


def parse_limit(text: str) -> int:
    """`[build] cache_max_size`: bytes, or a number with k, m or g (binary); "" or "0": no limit."""
    if text.strip() in ("", "0"):
        return 0
    try:
        return parse_size(text)
    except InvalidArgument:
        raise InvalidArgument(f"build cache size {text!r}: want bytes, or a number with k, m or g") from None


async def image_blobs(content: NamespacedContentStore, images: records.ImageStore, ns: str) -> set[str]:
    """Every blob the namespace's images reach through their gc.ref.content labels (indexes,
    manifests, configs, layers): what the collector keeps for them."""
    seen: set[str] = set()
    todo = [image.target.digest for image in await images.list(ns)]
    while todo:
        digest = todo.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            info = await content.info(ns, digest)
        except NotFound:  # a platform never pulled
            continue
        todo.extend(v for k, v in info.labels.items() if k.startswith(LABEL_GC_REF_CONTENT) and v not in seen)
    return seen


def cache_size(recs: Iterable[Record], in_use: set[str]) -> int:
    """Bytes of the distinct layers of `recs` that no image uses."""
    sizes = {r.layer.digest: r.layer.size for r in recs if r.layer is not None and r.layer.digest not in in_use}
    return sum(sizes.values())


def choose(recs: Sequence[Record], in_use: set[str], options: PruneOptions, at: datetime) -> list[Record]:
    """The records `options` removes from `recs` (any order), least recently used first."""
    if options.keep_storage < 0:
        raise InvalidArgument("prune: keep-storage must not be negative")
    ordered = sorted(recs, key=lambda r: (r.last_used, r.key))
    candidates = [r for r in ordered
                  if (options.all or r.layer is None or r.layer.digest not in in_use)
                  and (not options.unused_for or _last_used(r) <= at - options.unused_for)]
    if not options.keep_storage:
        return candidates
    # what the cache alone holds, kept up to date as records go (a layer goes with its last record)
    users: dict[str, int] = {}
    for r in ordered:
        if r.layer is not None and r.layer.digest not in in_use:
            users[r.layer.digest] = users.get(r.layer.digest, 0) + 1
    size = cache_size(ordered, in_use)
    out: list[Record] = []
    for r in candidates:
        if size <= options.keep_storage:
            break
        out.append(r)
        if r.layer is not None and r.layer.digest in users:
            users[r.layer.digest] -= 1
            if not users[r.layer.digest]:
                size -= r.layer.size
    return out


def reclaimed(removed: Sequence[Record], kept: Iterable[Record], in_use: set[str]) -> int:
    """Bytes of the layers of `removed` that no kept record and no image refers to."""
    still = in_use | {r.layer.digest for r in kept if r.layer is not None}
    sizes = {r.layer.digest: r.layer.size for r in removed if r.layer is not None and r.layer.digest not in still}
    return sum(sizes.values())


async def prune_cache(cache: BuildCacheStore, content: NamespacedContentStore, images: records.ImageStore,
                      ns: str, options: PruneOptions, on_release: Callable[[], None]) -> PruneReport:
    recs = await cache.list(ns)
    in_use = await image_blobs(content, images, ns)
    gone = choose(recs, in_use, options, now())
    if not gone:
        return PruneReport((), 0)
    keys = {r.key for r in gone}
    await cache.delete_keys(ns, [r.key for r in gone])
    on_release()
    return PruneReport(tuple(r.key for r in gone), reclaimed(gone, [r for r in recs if r.key not in keys], in_use))


@dataclass(frozen=True)
class CacheEntry:
    """One thing the build cache keeps, as `docker system df -v` lists it."""

    id: str  # a record's key, or "cachemount:<id>" (the names prune reports)
    type: str  # Docker's: "regular" (a step's result), "exec.cachemount" (a cache directory)
    size: int  # the record's layer blob (compressed), or the directory's disk usage
    created_at: datetime | None = None
    last_used: datetime | None = None
    in_use: bool = False
    shared: bool = False  # the layer is an image's too, or another record's
    description: str = ""


@dataclass(frozen=True)
class CacheUsage:
    entries: tuple[CacheEntry, ...]
    size: int  # what the cache alone holds (cache_size, plus the cache directories)
    reclaimable: int  # what a prune of everything frees: all but the directories in use


def describe(recs: Sequence[Record], in_use: set[str], dirs: Sequence[CacheEntry] = ()) -> CacheUsage:
    """The records (and cache directories) as entries, with the cache's size in prune's words."""
    users: dict[str, int] = {}
    for r in recs:
        if r.layer is not None:
            users[r.layer.digest] = users.get(r.layer.digest, 0) + 1
    entries = [CacheEntry(r.key, "regular", r.layer.size if r.layer else 0,
                          parse_iso(r.created_at) if r.created_at else None, _last_used(r) if r.last_used else None,
                          shared=r.layer is not None and (r.layer.digest in in_use or users[r.layer.digest] > 1),
                          description=r.diff_id)
               for r in recs]
    size = cache_size(recs, in_use) + sum(d.size for d in dirs)
    return CacheUsage(tuple(entries) + tuple(dirs), size, size - sum(d.size for d in dirs if d.in_use))


def _last_used(r: Record) -> datetime:
    return parse_iso(r.last_used or r.created_at)
