"""What spares hot reads a thread hop: a bounded LRU, the bytes of small blobs by digest, open
descriptors of larger ones, and a reader over bytes.

Blobs are immutable per digest and verified at commit, so a copy of one (or a descriptor of its
file) stays right for as long as the blob exists; whoever removes a blob file must `discard` it
from both (LocalContentStore.delete). Filling happens on the event loop, after the read or open
in a worker thread; the only I/O here is closing the descriptors that leave.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from supervisor.content.store import ReaderBase

K = TypeVar("K")
V = TypeVar("V")

SMALL_BLOB = 16 << 10  # manifests, indexes and configs; layers are far larger
CACHE_TOTAL = 4 << 20
OPEN_BLOBS = 32  # descriptors held: ctr reads a blob one 32 KiB Read call at a time


class Lru(Generic[K, V]):
    """Least recently used first out, bounded by the sum of `weigh(value)` (1 each by default).

    A value heavier than the whole bound is never kept. `on_evict(value)` is called for every
    value that leaves (evicted, replaced, discarded, cleared, or refused as too heavy).
    """

    def __init__(self, max_weight: int, weigh: Callable[[V], int] = lambda _: 1,
                 on_evict: Callable[[V], None] = lambda _: None) -> None:
        if max_weight < 0:
            raise InvalidArgument(f"cache bound {max_weight} must not be negative")
        self.max_weight = max_weight
        self._weigh = weigh
        self._on_evict = on_evict
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
            self._on_evict(value)
            return
        self._items[key] = value
        self.weight += w
        while self.weight > self.max_weight:
            _, old = self._items.popitem(last=False)
            self.weight -= self._weigh(old)
            self._on_evict(old)

    def discard(self, key: K) -> None:
        value = self._items.pop(key, None)
        if value is not None:
            self.weight -= self._weigh(value)
            self._on_evict(value)

    def clear(self) -> None:
        items, self._items = self._items, OrderedDict()
        self.weight = 0
        for value in items.values():
            self._on_evict(value)


class _ByDigest(Generic[V]):
    """Values kept by blob digest in an `Lru`, under the epoch rule: `epoch` moves on every
    `discard`; a filler notes it before its thread hop and passes it to `_keep`, which refuses
    what a hop that a removal overlapped brought, so a blob deleted meanwhile never comes back."""

    def __init__(self, max_weight: int, weigh: Callable[[V], int] = lambda _: 1,
                 on_evict: Callable[[V], None] = lambda _: None) -> None:
        self._lru: Lru[str, V] = Lru(max_weight, weigh, on_evict)
        self._on_evict = on_evict
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, digest: str) -> bool:
        return digest in self._lru

    def get(self, digest: str) -> V | None:
        return self._lru.get(digest)

    def _keep(self, digest: str, value: V, epoch: int) -> bool:
        if epoch != self.epoch:
            self._on_evict(value)
            return False
        self._lru.put(digest, value)
        return digest in self._lru

    def discard(self, digest: str) -> None:
        self.epoch += 1
        self._lru.discard(digest)

    def clear(self) -> None:
        self.epoch += 1
        self._lru.clear()


class BlobCache(_ByDigest[bytes]):
    """The bytes of small blobs by digest: each at most `max_blob` bytes, `max_total` in all."""

    def __init__(self, max_blob: int = SMALL_BLOB, max_total: int = CACHE_TOTAL) -> None:
        if max_blob < 0:
            raise InvalidArgument(f"cache blob bound {max_blob} must not be negative")
        super().__init__(max_total, len)
        self.max_blob = max_blob

    @property
    def total(self) -> int:
        return self._lru.weight

    def fits(self, size: int) -> bool:
        return size <= self.max_blob

    def put(self, digest: str, data: bytes, epoch: int) -> bool:
        """Keep `data` unless it is too big or a discard happened since `epoch`; whether kept."""
        return self.fits(len(data)) and self._keep(digest, data, epoch)


class OpenBlobs(_ByDigest[tuple[int, int]]):
    """Open read-only descriptors of recently read blobs, by digest, with their sizes: a reader
    of one is a dup() on the event loop instead of an open() in a worker thread. `get` gives
    (descriptor, size), still ours: dup it to keep it. `put` takes the descriptor over (closed
    when it leaves, or at once when refused): a deleted blob's space is never held here."""

    def __init__(self, max_open: int = OPEN_BLOBS) -> None:
        super().__init__(max_open, on_evict=lambda held: os.close(held[0]))
        weakref.finalize(self, self._lru.clear)

    def put(self, digest: str, fd: int, size: int, epoch: int) -> bool:
        return self._keep(digest, (fd, size), epoch)


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
