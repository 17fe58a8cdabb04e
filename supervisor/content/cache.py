"""In-memory copies that spare hot small reads a thread hop: a bounded LRU, the bytes of small
blobs by digest, and a reader over bytes.

Blobs are immutable per digest and verified at commit, so a copy of one stays right for as long
as the blob exists; whoever removes a blob file must `discard` it (LocalContentStore.delete).
Nothing here does I/O: filling happens after a read in a worker thread, on the event loop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from supervisor.content.store import ReaderBase
from supervisor.errors import FailedPrecondition, InvalidArgument

K = TypeVar("K")
V = TypeVar("V")

SMALL_BLOB = 16 << 10  # manifests, indexes and configs; layers are far larger
CACHE_TOTAL = 4 << 20


class Lru(Generic[K, V]):
    """Least recently used first out, bounded by the sum of `weigh(value)` (1 each by default).

    A value heavier than the whole bound is never kept.
    """

    def __init__(self, max_weight: int, weigh: Callable[[V], int] = lambda _: 1) -> None:
        if max_weight < 0:
            raise InvalidArgument(f"cache bound {max_weight} must not be negative")
        self.max_weight = max_weight
        self._weigh = weigh
        self._items: OrderedDict[K, V] = OrderedDict()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.discard(key)
        w = self._weigh(value)
        if w > self.max_weight:
            return
        self._items[key] = value
        self.weight += w
        while self.weight > self.max_weight:
            _, old = self._items.popitem(last=False)
            self.weight -= self._weigh(old)

    def discard(self, key: K) -> None:
        value = self._items.pop(key, None)
        if value is not None:
            self.weight -= self._weigh(value)

    def clear(self) -> None:
        self._items.clear()
        self.weight = 0


class BlobCache:
    """The bytes of small blobs by digest: each at most `max_blob` bytes, `max_total` in all.

    `epoch` moves on every `discard`. A filler notes it before its thread hop and passes it to
    `put`, which then refuses bytes read by a hop that a removal overlapped: a blob deleted
    while it was being read never comes back into the cache.
    """

    def __init__(self, max_blob: int = SMALL_BLOB, max_total: int = CACHE_TOTAL) -> None:
        if max_blob < 0:
            raise InvalidArgument(f"cache blob bound {max_blob} must not be negative")
        self.max_blob = max_blob
        self._lru: Lru[str, bytes] = Lru(max_total, len)
        self.epoch = 0

    @property
    def total(self) -> int:
        return self._lru.weight

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, digest: str) -> bool:
        return digest in self._lru

    def fits(self, size: int) -> bool:
        return size <= self.max_blob

    def get(self, digest: str) -> bytes | None:
        return self._lru.get(digest)

    def put(self, digest: str, data: bytes, epoch: int) -> bool:
        """Keep `data` unless it is too big or a discard happened since `epoch`; whether kept."""
        if epoch != self.epoch or not self.fits(len(data)):
            return False
        self._lru.put(digest, data)
        return digest in self._lru

    def discard(self, digest: str) -> None:
        self.epoch += 1
        self._lru.discard(digest)


class MemoryBlobReader(ReaderBase):
    """A `BlobReader` over bytes already in memory; reads never leave the event loop."""

    def __init__(self, data: bytes, digest: str) -> None:
        self.data = data
        self._digest = digest
        self._closed = False

    @property
    def size(self) -> int:
        return len(self.data)

    async def read_at(self, offset: int, size: int) -> bytes:
        self.check_range(offset, size)
        if self._closed:
            raise FailedPrecondition(f"reader of content {self._digest} is closed")
        return self.data[offset:offset + size]

    async def close(self) -> None:
        self._closed = True
