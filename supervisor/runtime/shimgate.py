"""Starts that join a shared (grouped) shim, kept apart from that shim's shutdown.

A group's shim serves several tasks (a pod's containers, or several pods'). A task joining it
finds the live shim in `start`, then registers with the manager; the last task leaving asks it
to exit. Without a gate the two cross: the leaver finds no other task (the joiner is not yet
registered), the shim exits, and the joiner's create fails on a closed connection. So a
joiner holds its group shared from before `start` until it is registered, and a leaver holds
it exclusively while it decides and asks the shim to exit (the shim stops listening before it
answers; a later joiner's `start` makes a new shim). Leavers are preferred: a joiner arriving
while one waits queues behind it, so a stream of starts cannot hold a shutdown off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class ShimGate:
    def __init__(self) -> None:
        self._joining: dict[Hashable, int] = {}
        self._leaving: dict[Hashable, asyncio.Event] = {}  # set when the leaver is done
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def joining(self, group: Hashable) -> AsyncIterator[None]:
        while (leaver := self._leaving.get(group)) is not None:
            await leaver.wait()
        self._joining[group] = self._joining.get(group, 0) + 1
        try:
            yield
        finally:
            left = self._joining[group] - 1
            if left:
                self._joining[group] = left
            else:
                del self._joining[group]
            async with self._changed:
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def leaving(self, group: Hashable) -> AsyncIterator[None]:
        while (leaver := self._leaving.get(group)) is not None:
            await leaver.wait()
        done = self._leaving[group] = asyncio.Event()
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: group not in self._joining)
            yield
        finally:
            del self._leaving[group]
            done.set()

    def idle(self) -> bool:
        """Nothing joins or leaves (for tests)."""
        return not self._joining and not self._leaving
