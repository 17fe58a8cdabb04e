"""What the CRI decoded from a record's stored bytes (a container's metadata, a pod's config),
kept by record id while those bytes stay the same: kubelet asks about the same containers and pods
again and again, and decoding every record per call made its status calls O(records)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Decoded(Generic[T]):
    def __init__(self) -> None:
        self._by_id: dict[str, tuple[bytes, T]] = {}

    def get(self, record_id: str, raw: bytes | None, decode: Callable[[], T | None]) -> T | None:
        """The value decoded from `raw` before, else `decode()` (which may raise: nothing is kept
        then); a record without bytes (`raw` None) is decoded every time and kept never."""
        if raw is not None:
            hit = self._by_id.get(record_id)
            if hit is not None and hit[0] == raw:
                return hit[1]
        value = decode()
        if raw is not None and value is not None:
            self._by_id[record_id] = (raw, value)
        return value

    def keep_only(self, record_ids: Iterable[str]) -> None:
        """Forget the records not among `record_ids` (called with a full listing)."""
        for gone in self._by_id.keys() - set(record_ids):
            del self._by_id[gone]
