"""The daemon's call admission (supervisor/grpcserver/admission.py): slots per connection and in
all, handed out to the connections in turn, given back at an answer, an end or after the hold."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.grpcserver.admission import MAX_HOLDS, Admission, Queue, Slot


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_connection_holds_at_most_its_share() -> None:
    adm = Admission(per_connection=2, total=10, hold=60)
    q = Queue()
    a, b = await adm.enter(q), await adm.enter(q)
    third = asyncio.ensure_future(adm.enter(q))
    await _settle()
    assert not third.done() and q.in_use == 2
    a.release()
    slot = await asyncio.wait_for(third, 1)
    assert q.in_use == 2 and adm.in_use == 2
    b.release()
    slot.release()
    slot.release()  # idempotent
    assert q.in_use == 0 and adm.in_use == 0


async def test_freed_slots_go_to_the_connections_in_turn() -> None:
    """A flood of calls on one connection does not keep another's one call waiting behind them."""
    adm = Admission(per_connection=10, total=2, hold=60)
    flood, other = Queue(), Queue()
    held = [await adm.enter(flood), await adm.enter(flood)]
    order: list[str] = []

    async def call(q: Queue, name: str) -> Slot:
        slot = await adm.enter(q)
        order.append(name)
        return slot

    waiting = [asyncio.ensure_future(call(flood, f"flood-{i}")) for i in range(5)]
    await _settle()
    mine = asyncio.ensure_future(call(other, "other"))
    await _settle()
    held.pop().release()
    held.append(await asyncio.wait_for(waiting[0], 1))
    held.pop(0).release()
    await asyncio.wait_for(mine, 1)
    assert order == ["flood-0", "other"]  # the other connection's turn came after one of the flood's
    for t in waiting[1:]:
        t.cancel()
    await asyncio.gather(*waiting[1:], return_exceptions=True)
    for s in [*held, mine.result()]:
        s.release()
    assert adm.in_use == 0 and flood.in_use == 0 and other.in_use == 0


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    adm = Admission(per_connection=5, total=1, hold=60)
    q1, q2 = Queue(), Queue()
    first = await adm.enter(q1)
    gone = asyncio.ensure_future(adm.enter(q1))
    nxt = asyncio.ensure_future(adm.enter(q2))
    await _settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    first.release()
    (await asyncio.wait_for(nxt, 1)).release()
    assert adm.in_use == 0 and not q1.waiting and not q2.waiting


async def test_cancelled_in_the_step_it_was_handed_a_slot() -> None:
    adm = Admission(per_connection=5, total=1, hold=60)
    q = Queue()
    first = await adm.enter(q)
    waiter = asyncio.ensure_future(adm.enter(q))
    await _settle()
    first.release()  # the waiter's future gets the slot...
    waiter.cancel()  # ...and its task is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.in_use == 0 and q.in_use == 0


async def test_the_slot_goes_back_after_the_hold() -> None:
    """A call that waits for an event (Tasks.Wait) holds its slot only for the hold."""
    adm = Admission(per_connection=1, total=1, hold=0.01)
    q = Queue()
    await adm.enter(q)  # never released by the call itself
    await asyncio.wait_for(adm.enter(q), 5)


async def test_a_busy_loop_keeps_the_slot() -> None:
    """The timer fired late: the call may not have had the loop yet, so the slot stays (and is
    looked at again one hold later); a timer on time gives it back."""
    adm = Admission(per_connection=1, total=1, hold=30)
    slot = await adm.enter(Queue())
    loop = asyncio.get_running_loop()
    slot._timer.cancel()
    slot._due = loop.time() - 3 * adm.hold  # as if the loop had been busy for three holds
    slot._expired()
    assert adm.in_use == 1 and slot._due > loop.time()
    slot._timer.cancel()
    slot._due = loop.time()
    slot._expired()
    assert adm.in_use == 0


async def test_a_loop_that_stays_behind_still_gets_the_slot_back() -> None:
    adm = Admission(per_connection=1, total=1, hold=30)
    slot = await adm.enter(Queue())
    loop = asyncio.get_running_loop()
    slot._timer.cancel()
    slot._taken = loop.time() - MAX_HOLDS * adm.hold  # held that long already
    slot._due = loop.time() - 3 * adm.hold  # and the timer late again
    slot._expired()
    assert adm.in_use == 0
