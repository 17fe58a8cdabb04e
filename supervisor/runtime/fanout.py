"""Asking many shims for one listing (issue 18's rule): a stuck or overloaded shim costs a
listing call at most its deadline, never stalls it, and only so many shims are asked at once (a
listing of many containers does not hold a call open to every shim together). The runtime's
listings (Tasks/List, Metrics) and the CRI's stats and metrics both ask through `each_within`.

    answers = await each_within(containers, measure, what=lambda c: f"container {c.id}")
    for c, answer in zip(containers, answers):
        if isinstance(answer, DockyardError):   # DeadlineExceeded: no answer in time
            ...                                 # left out (and logged) by the caller
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from dockyard_common.errors import DeadlineExceeded, DockyardError

T = TypeVar("T")
R = TypeVar("R")

SHIM_DEADLINE = 5.0  # seconds a container's shim may take to answer for a listing
CONCURRENCY = 16  # shims asked at once


async def each_within(items: Sequence[T], ask: Callable[[T], Awaitable[R]], deadline: float | None = SHIM_DEADLINE,
                      concurrency: int = CONCURRENCY, what: Callable[[T], str] = str) -> list[R | DockyardError]:
    """`ask(item)` for every item, `concurrency` at a time, each within `deadline` seconds (the
    wait for a free slot not counted; None: `ask` keeps its own deadline, as a shim call's
    timeout). The answers in the items' order, a DockyardError in place of one that failed:
    DeadlineExceeded naming `what(item)` for one that did not answer in time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R | DockyardError:
        async with gate:
            try:
                return await asyncio.wait_for(ask(item), deadline)
            except TimeoutError:
                return DeadlineExceeded(f"{what(item)}: its shim did not answer within {deadline:g} s")
            except DockyardError as exc:
                return exc

    return list(await asyncio.gather(*(one(item) for item in items)))
