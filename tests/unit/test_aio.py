"""dockyard_common.aio.uninterrupted: a cancelled caller waits for its work to end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dockyard_common.aio import uninterrupted


async def test_the_result_when_not_cancelled() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert await uninterrupted(work()) == 7


async def test_a_cancelled_caller_waits_for_the_thread_and_asks_it_to_stop() -> None:
    started, stop, ended = threading.Event(), threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        stop.wait(30)  # until on_cancel asks it to stop
        ended.set()

    caller = asyncio.ensure_future(uninterrupted(asyncio.to_thread(blocking), stop.set))
    await asyncio.to_thread(started.wait, 30)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert stop.is_set() and ended.is_set()  # the thread was over before the cancellation surfaced


async def test_the_work_failing_after_a_cancel_still_raises_the_cancel() -> None:
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()
        raise RuntimeError("late failure")

    caller = asyncio.ensure_future(uninterrupted(work(), release.set))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
