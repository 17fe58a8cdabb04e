"""The last List response built from a store's cached read, reused while the read is the same.

Why: the container and image stores serve List from a cache of shared, read-only records
(supervisor/metadata/db.py `ReadCache`); building the protobuf answer from them again on every
call (timestamps through `Timestamp.FromDatetime` included) was a third of the daemon's CPU
under many concurrent List callers (bench/rpc.py --mixed). The same record objects, in the same
order, give the same answer, so the answer is kept per (namespace, filters) until they change.
Answers are shared between calls: nothing may modify them after they are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ListMemo(Generic[T, R]):
    def __init__(self, build: Callable[[Sequence[T]], R], size: int = 64) -> None:
        self._build = build
        self._size = size
        # key -> (the records the answer was built from, kept alive so their ids stay theirs; answer)
        self._last: dict[Hashable, tuple[Sequence[T], R]] = {}

    def get(self, key: Hashable, found: Sequence[T]) -> R:
        hit = self._last.get(key)
        if hit is not None and len(hit[0]) == len(found) and all(a is b for a, b in zip(hit[0], found, strict=True)):
            return hit[1]
        answer = self._build(found)
        self._last.pop(key, None)
        if len(self._last) >= self._size:
            del self._last[next(iter(self._last))]
        self._last[key] = (found, answer)
        return answer
