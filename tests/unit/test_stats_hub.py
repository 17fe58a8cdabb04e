"""The stats hub (supervisor.stats) on its own: sampler control, fan-out, bounds, joins and ends."""

from __future__ import annotations

import asyncio

import pytest

from dockyard_common.errors import InvalidArgument, NotFound, Unavailable
from supervisor.filters import Adaptor, adaptor_from
from supervisor.stats import Delivery, Sample, Selector, StatsHub, Subscription

NS = "default"
MS = 1_000_000


class Control:
    """Records what the hub asks of the shims."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.watching: dict[str, int] = {}

    async def watch(self, namespace: str, cid: str, interval_ms: int) -> None:
        self.calls.append(("watch", cid, interval_ms))
        self.watching[cid] = interval_ms

    async def unwatch(self, namespace: str, cid: str) -> None:
        self.calls.append(("unwatch", cid, 0))
        self.watching.pop(cid, None)


LABELS = {"web": {"app": "web"}, "db": {"app": "db"}}


async def describe(namespace: str, cid: str) -> Adaptor:
    if cid not in LABELS:
        raise NotFound(f'container "{cid}" in namespace "{namespace}"')
    return adaptor_from({"id": cid, "labels": LABELS[cid]})


def hub_with(*tasks: str, backlog: int = 1024) -> tuple[StatsHub, Control]:
    hub = StatsHub(describe, backlog=backlog)
    control = Control()
    hub.bind(control)
    for cid in tasks:
        hub.task_added(NS, cid)
    return hub, control


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def sample(cid: str, t_ms: int, seq: int = 0, end: bool = False) -> Sample:
    return Sample(NS, cid, t_ms * MS, seq or t_ms, end, b"x")


async def drain(sub: Subscription) -> list[Delivery]:
    out = []
    while sub.pending:
        out.append(await sub.__anext__())
    return out


async def test_one_sampler_at_the_smallest_interval_and_none_without_subscribers() -> None:
    hub, control = hub_with("web", "db")
    slow = await hub.subscribe(NS, Selector(all=True), 1000)
    await settle()
    assert control.watching == {"web": 1000, "db": 1000}
    fast = await hub.subscribe(NS, Selector(ids=frozenset({"web"})), 200)
    await settle()
    assert control.watching == {"web": 200, "db": 1000}
    fast.close()
    await settle()
    assert control.watching == {"web": 1000, "db": 1000}
    slow.close()
    await settle()
    assert control.watching == {}
    assert control.calls.count(("watch", "web", 1000)) == 2


async def test_each_subscriber_gets_samples_at_its_own_interval() -> None:
    hub, _ = hub_with("web")
    slow = await hub.subscribe(NS, Selector(all=True), 1000)
    fast = await hub.subscribe(NS, Selector(all=True), 200)
    await settle()  # the sampler now runs at 200 ms
    got_slow, got_fast = [], []
    for t in range(0, 3001, 200):
        hub.push(sample("web", t + (7 if t % 400 else 0)))  # a jittery timer
        got_slow += await drain(slow)
        got_fast += await drain(fast)
    assert len(got_fast) == 16
    assert [d.sample.timestamp_ns // MS for d in got_slow] == [0, 1007, 2000, 3007]
    assert all(d.dropped == 0 for d in got_slow + got_fast)


async def test_a_subscriber_at_the_samplers_interval_gets_every_sample() -> None:
    hub, _ = hub_with("web")
    sub = await hub.subscribe(NS, Selector(all=True), 200)
    await settle()
    got = []
    for t in (73, 200, 400, 590, 800, 1013):  # the first at Watch, off the grid; then jitter
        hub.push(sample("web", t))
        got += await drain(sub)
    assert [d.sample.seq for d in got] == [73, 200, 400, 590, 800, 1013]


async def test_a_reader_that_falls_behind_keeps_only_the_newest_sample_per_container() -> None:
    hub, _ = hub_with("web", "db")
    sub = await hub.subscribe(NS, Selector(all=True), 100)
    for t in range(0, 1000, 100):
        hub.push(sample("web", t))
        hub.push(sample("db", t))
    assert sub.pending == 2  # bounded by the containers, not by time
    first, second = await drain(sub)
    assert (first.sample.id, first.sample.seq) == ("web", 900)
    assert (second.sample.id, second.sample.seq) == ("db", 900)
    assert second.dropped == 18


async def test_the_backlog_bound_drops_the_oldest_but_never_an_end_marker() -> None:
    hub, _ = hub_with("a", "b", "c", "d", backlog=2)
    sub = await hub.subscribe(NS, Selector(all=True), 100)
    hub.push(sample("a", 0, end=True))
    hub.push(sample("b", 0))
    hub.push(sample("c", 0))  # b goes
    hub.push(sample("d", 0))  # c goes: a is an end marker and stays
    got = await drain(sub)
    assert [d.sample.id for d in got] == ["a", "d"]
    assert got[-1].dropped == 2


async def test_a_task_that_starts_later_joins_matching_streams() -> None:
    hub, control = hub_with()
    labelled = await hub.subscribe(NS, Selector(filters=('labels."app"==web',)), 100)
    everything = await hub.subscribe(NS, Selector(all=True), 500)
    other_ns = await hub.subscribe("elsewhere", Selector(all=True), 100)
    hub.task_added(NS, "db")
    hub.task_added(NS, "web")
    await settle()
    assert control.watching == {"db": 500, "web": 100}
    hub.push(sample("web", 0))
    hub.push(sample("db", 0))
    assert [d.sample.id for d in await drain(labelled)] == ["web"]
    assert [d.sample.id for d in await drain(everything)] == ["web", "db"]
    assert other_ns.pending == 0


async def test_an_exit_ends_with_the_final_sample_and_a_vanished_task_with_a_marker() -> None:
    hub, control = hub_with("web", "db")
    sub = await hub.subscribe(NS, Selector(all=True), 100)
    await settle()
    hub.push(sample("web", 0, seq=1))
    hub.push(sample("web", 100, end=True))  # its init exited: the shim's final sample
    hub.push(sample("web", 200))  # nothing may follow an end
    hub.task_removed(NS, "web")  # deleted later: no second end
    hub.task_removed(NS, "db")  # its shim died: the hub makes the end marker
    got = [(d.sample.id, d.sample.seq, d.sample.end, d.sample.payload) for d in await drain(sub)]
    # Unread, web's last ordinary sample still goes before its final one; no marker follows.
    assert got == [("web", 1, False, b"x"), ("web", 100, True, b"x"), ("db", 0, True, b"")]
    assert sub.dropped == 0
    await settle()
    assert [c for c in control.calls if c[0] == "unwatch"] == []  # a sampler stops by itself at the end


async def test_samples_nobody_asked_for_stop_their_sampler() -> None:
    hub, control = hub_with("web")
    hub.push(sample("web", 0))  # e.g. a sampler a previous daemon started
    await settle()
    assert control.calls == [("unwatch", "web", 0)]
    hub.push(sample("ghost", 0))  # a task we do not know: ignored
    await settle()
    assert control.calls == [("unwatch", "web", 0)]


async def test_bad_selectors_and_intervals_are_refused() -> None:
    hub, _ = hub_with("web")
    with pytest.raises(InvalidArgument, match="needs container ids, filters or all"):
        Selector()
    with pytest.raises(InvalidArgument, match="parse error"):
        Selector(filters=("labels.==",))
    with pytest.raises(InvalidArgument, match="interval_ms 50 is outside"):
        await hub.subscribe(NS, Selector(all=True), 50)
    with pytest.raises(NotFound, match="nope"):
        await hub.subscribe(NS, Selector(ids=frozenset({"nope"})), 100)


async def test_closing_the_hub_ends_every_stream_as_unavailable() -> None:
    hub, control = hub_with("web")
    sub = await hub.subscribe(NS, Selector(all=True), 100)
    await settle()
    reader = asyncio.ensure_future(sub.__anext__())
    await settle()
    await hub.close()
    with pytest.raises(Unavailable, match="shutting down"):
        await reader
    assert control.watching == {}
    with pytest.raises(Unavailable):
        await hub.subscribe(NS, Selector(all=True), 100)
