"""Trying again after transient registry failures: bounded, with exponential backoff and jitter.

    policy = RetryPolicy()                                   # 4 attempts, 0.5 s, 1 s, 2 s (jittered)
    data = await with_retries(policy, "fetch x", lambda attempt: fetch())

What is transient (raised as `TransientError` by client.py and fetcher.py):
- HTTP 408, 429, 502, 503 and 504 (a `Retry-After` in seconds or as an HTTP date is waited
  for instead of the backoff, unless it is longer than `max_retry_after`: then we give up at
  once rather than hold a pull for minutes);
- a connection reset or closed by the server before or while answering, a body cut short.

Not transient, never retried: other 4xx (the answer would be the same), 500 (a registry bug
more often than an overload), an unreachable host (a mirror that is down must not delay
the next one), a timeout (it already took `read` seconds), TLS failures. Only requests that
are safe to repeat are retried (GET and HEAD; client.py sends the others once); a blob whose
body was cut short is fetched again from the byte it stopped at (fetcher.py, with Range).

After the last attempt the error is a plain Unavailable saying how many attempts were made.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from dockyard_common.errors import Unavailable

log = logging.getLogger("dockyard.remote")

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})


class TransientError(Unavailable):
    """A failure that the same request, sent again a little later, may not meet."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # in all, the first one included; 1 = never try again
    base: float = 0.5  # the backoff before the first retry (then doubled each time)
    cap: float = 8.0  # the longest backoff
    max_retry_after: float = 30.0  # a registry asking for a longer wait gets an error instead

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): exponential, capped, and
        jittered to between half and all of it, so many clients do not come back in step."""
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def gave_up(exc: TransientError, attempts: int) -> Unavailable:
    if attempts <= 1:
        return Unavailable(exc.message)
    return Unavailable(f"{exc.message} (gave up after {attempts} attempts)")


async def with_retries(policy: RetryPolicy, fn: Callable[[int], Awaitable[T]]) -> T:
    """`fn(attempt)` until it does not raise TransientError, at most `policy.attempts` times."""
    attempt = 1
    while True:
        try:
            return await fn(attempt)
        except TransientError as exc:
            if attempt >= policy.attempts:
                raise gave_up(exc, attempt) from None
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
                raise Unavailable(f"{exc.message} (asks to wait {exc.retry_after:g}s: more than the "
                                  f"{policy.max_retry_after:g}s we wait)") from None
            delay = exc.retry_after if exc.retry_after is not None else policy.backoff(attempt)
            log.info("%s; trying again in %.2fs (attempt %d of %d)", exc.message, delay, attempt + 1,
                     policy.attempts)
            await asyncio.sleep(delay)
            attempt += 1
