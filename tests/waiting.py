"""Waiting in tests for a state, not for a time: poll a predicate until it holds, with a deadline.

A sleep that guesses how long something takes fails on a loaded machine (CI shares its cores);
these return as soon as the state is there and fail with what was awaited when it never comes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float = 20, what: str = "the condition",
               interval: float = 0.02) -> T:
    """Call `predicate` until it returns something true, and return that; AssertionError naming
    `what` once `timeout` seconds have passed (the predicate is asked once more at the end)."""
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= deadline
        result = predicate()
        if result:
            return result
        if late:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@overload
async def wait_until_async(predicate: Callable[[], Awaitable[T | None]], timeout: float = ...,
                           what: str = ..., interval: float = ...) -> T: ...


@overload
async def wait_until_async(predicate: Callable[[], T | None], timeout: float = ...,
                           what: str = ..., interval: float = ...) -> T: ...


async def wait_until_async(predicate: Callable[[], object], timeout: float = 20,
                           what: str = "the condition", interval: float = 0.02) -> object:
    """`wait_until` for a running event loop; `predicate` may be a coroutine function. The
    deadline is on the monotonic clock, so a test that moves the loop's clock still times out."""
    deadline = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= deadline
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if late:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
