"""Which calls may be in their first steps at once, shared fairly between connections.

The daemon serves every connection on one event loop, and a task gets the loop in turn with all
the others that are ready. A client that opens 1 000 streams at once (a SETTINGS frame allows it)
had 1 000 handlers starting side by side, each reading its first 1 MiB chunk before the send
buffer's bound could refuse it; 40 connections of 100 such streams kept a Version call from
another client waiting 15 s. Go servers do not see this: goroutines run on several threads, and
one client's streams do not queue everyone else's behind them.

So a new call takes a slot before its handler starts: at most `per_connection` of one
connection's calls and `total` of all hold one. A call gives its slot back at its first answer,
at its end, or once it has held it `hold` seconds of a loop that is not behind (a call waiting
for an event, Tasks.Wait or Events.Subscribe, must not keep a slot: thousands of them on one
connection are normal); a timer that fires late means the loop is busy, and the slot stays (for
`MAX_HOLDS` holds at most). A freed slot goes to the connections with waiting calls in turn
(round robin), so a client with one call waits for at most one turn per other client, not for all
of their calls. A call that waited starts after the send buffer's bounds have seen what the
earlier ones parked: a peer that does not read has its later calls refused before their handlers
do any work.
"""

from __future__ import annotations

import asyncio
from collections import deque

PER_CONNECTION = 32
TOTAL = 64
HOLD = 0.02
MAX_HOLDS = 10  # a slot goes back after this many holds whatever the loop's lag


class Queue:
    """One connection's share: its calls holding a slot, and those waiting for one."""

    __slots__ = ("in_use", "waiting")

    def __init__(self) -> None:
        self.in_use = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class Slot:
    """One call's slot. `release` is idempotent: the first answer, the end and the timer call it."""

    __slots__ = ("_admission", "_due", "_held", "_queue", "_taken", "_timer")

    def __init__(self, admission: Admission, queue: Queue) -> None:
        self._admission, self._queue = admission, queue
        self._held = True
        loop = asyncio.get_running_loop()
        self._taken = loop.time()
        self._due = self._taken + admission.hold
        self._timer = loop.call_at(self._due, self._expired)

    def _expired(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        hold = self._admission.hold
        # The loop is behind: the call may not have run yet. But never past MAX_HOLDS holds: on a
        # loop that stays behind, calls waiting for events must not keep every slot for good.
        if now - self._due > hold and now - self._taken < MAX_HOLDS * hold:
            self._due = now + hold
            self._timer = loop.call_at(self._due, self._expired)
            return
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._timer.cancel()
            self._admission._give_back(self._queue)


class Admission:
    def __init__(self, per_connection: int = PER_CONNECTION, total: int = TOTAL, hold: float = HOLD) -> None:
        self.per_connection, self.total, self.hold = per_connection, total, hold
        self.in_use = 0
        self._turns: deque[Queue] = deque()  # connections with waiting calls, in turn

    async def enter(self, queue: Queue) -> Slot:
        """A slot for one of `queue`'s calls: at once if one is free and nobody waits, else in turn."""
        if self.in_use < self.total and queue.in_use < self.per_connection and not self._turns:
            self.in_use += 1
            queue.in_use += 1
            return Slot(self, queue)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not queue.waiting:
            self._turns.append(queue)
        queue.waiting.append(fut)
        self._hand_out()  # a slot may be free: only the order made this call queue
        try:
            await fut  # the slot is handed over already counted (see _hand_out)
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_back(queue)  # handed a slot in the same step it was cancelled
            else:
                self._forget(queue, fut)
            raise
        return Slot(self, queue)

    def _forget(self, queue: Queue, fut: asyncio.Future[None]) -> None:
        if fut in queue.waiting:
            queue.waiting.remove(fut)
        if not queue.waiting and queue in self._turns:
            self._turns.remove(queue)
        self._hand_out()  # this waiter may have been what held the others back

    def _give_back(self, queue: Queue) -> None:
        self.in_use -= 1
        queue.in_use -= 1
        self._hand_out()

    def _hand_out(self) -> None:
        """Free slots to waiting calls, one connection's call at a time in turn."""
        skipped = 0
        while self.in_use < self.total and self._turns and skipped < len(self._turns):
            queue = self._turns.popleft()
            if queue.in_use >= self.per_connection:
                self._turns.append(queue)  # its own share is full: the next connection's turn
                skipped += 1
                continue
            skipped = 0
            fut = queue.waiting.popleft()
            if queue.waiting:
                self._turns.append(queue)
            if not fut.done():
                self.in_use += 1
                queue.in_use += 1
                fut.set_result(None)
