"""asyncio helpers the programs share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def uninterrupted(work: Awaitable[T], on_cancel: Callable[[], object] | None = None) -> T:
    """Await `work` to its end even when the caller is cancelled meanwhile: then `on_cancel` runs
    (e.g. setting a worker thread's stop flag), `work` is awaited out, and the cancellation is
    raised. A thread cannot be interrupted, so whoever cleans up after a cancellation (removes a
    snapshot, a directory) must not race work still inside it."""
    job = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        with contextlib.suppress(BaseException):
            await job
        raise
