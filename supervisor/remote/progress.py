"""Running a transfer as a task while its progress events are yielded to the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from dockyard_common.errors import DockyardError

E = TypeVar("E")
_DONE = object()


async def pump(work: Callable[[Callable[[E], None]], Awaitable[None]]) -> AsyncGenerator[E, None]:
    """Run `work(emit)` and yield what it emits, in order; its failure is raised here.

    Closing the generator early cancels the work and waits for it to stop, so whatever
    the caller cleans up afterwards (a lease) is no longer in use.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            await work(queue.put_nowait)
        finally:
            queue.put_nowait(_DONE)

    task = asyncio.create_task(run())
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            yield item
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def run_bounded(jobs: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs at most `limit` at a time; the first failure cancels the rest and is raised
    (a DockyardError in preference to the cancellations it caused)."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    try:
        async with asyncio.TaskGroup() as tg:
            for job in jobs:
                tg.create_task(one(job))
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        first = next((e for e in errors if isinstance(e, DockyardError)), errors[0])
        raise first from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out += _leaves(exc)
        else:
            out.append(exc)
    return out
