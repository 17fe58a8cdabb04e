"""The gate every store shares with the garbage collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class GcGuard:
    """Shared/exclusive gate between a store's writers and the garbage collector.

    Writers hold it shared from "the backend data exists" to "its record is committed"; the
    collector holds it exclusively while it sweeps (`gc.Guard`), so it never takes data for an
    orphan in between. A waiting collector goes before new writers (no starvation). Releasing
    is synchronous: a cancelled holder cannot leak its hold.
    """

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting = 0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        # A waiting collector goes first, so steady writes cannot starve it.
        await self._until(lambda: not self._exclusive and not self._waiting)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._waiting += 1
        try:
            await self._until(lambda: not self._exclusive and not self._shared)
        finally:
            self._waiting -= 1
            self._notify()
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._notify()
