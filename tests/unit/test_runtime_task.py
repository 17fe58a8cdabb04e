"""The runtime's typed task over real ttrpc connections to scripted shims (no containers).

What is checked: the typed calls turn the shim's messages into values and back; a shim that
does not answer makes a control call fail with DeadlineExceeded naming the task; a listing asks
shims concurrently and shows a stuck one as UNKNOWN within its deadline; listed states come
from the cache until an event about the task, or a call that may change it, invalidates them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.containerd.types.task import task_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import RequestContext, TTRPCServer
from supervisor.events import Exchange
from supervisor.runtime.bundle import Bundle
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.shim import ShimClient
from supervisor.runtime.task import Task
from supervisor.runtime.types import AnyValue, Status, TaskState
from tests.unit.ttrpc_fixtures import TASK, short_tmpdir

NS = "unit"
EXITED_NS = 1_700_000_000_123_456_789  # nanoseconds survive the round trip


class FakeShim:
    """A Task service for one container: answers State/Kill/Pids/Stats, or blocks when stuck."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.stuck = False
        self.status = task_pb2.RUNNING
        self.state_calls = 0
        self.killed: list[tuple[int, bool, str]] = []
        self._never = asyncio.Event()

    async def _maybe_stuck(self) -> None:
        if self.stuck:
            await self._never.wait()

    async def State(self, req: shim_pb2.StateRequest, ctx: RequestContext) -> Message:
        self.state_calls += 1
        await self._maybe_stuck()
        resp = shim_pb2.StateResponse(id=req.id, pid=4242, status=self.status, stdout="/out", terminal=True,
                                      exit_status=3)
        resp.exited_at.FromNanoseconds(EXITED_NS)
        return resp

    async def Kill(self, req: shim_pb2.KillRequest, ctx: RequestContext) -> Message:
        await self._maybe_stuck()
        self.killed.append((req.signal, req.all, req.exec_id))
        return empty_pb2.Empty()

    async def Pids(self, req: shim_pb2.PidsRequest, ctx: RequestContext) -> Message:
        return shim_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=7), task_pb2.ProcessInfo(
            pid=8, info=any_pb2.Any(type_url="x/info", value=b"i"))])

    async def Stats(self, req: shim_pb2.StatsRequest, ctx: RequestContext) -> Message:
        await self._maybe_stuck()
        return shim_pb2.StatsResponse(stats=any_pb2.Any(type_url="x/metrics", value=self.cid.encode()))


class Fleet:
    def __init__(self, manager: TaskManager, shims: dict[str, FakeShim], tasks: dict[str, Task]) -> None:
        self.manager = manager
        self.shims = shims
        self.tasks = tasks


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Three tasks (a, b, c), each behind a fake shim on its own socket, in one TaskManager."""
    exchange = Exchange()
    manager = TaskManager(Path("/nonexistent"), lambda runtime: pytest.fail("no shim is launched here"), exchange)
    servers: list[TTRPCServer] = []
    shims: dict[str, FakeShim] = {}
    tasks: dict[str, Task] = {}
    with short_tmpdir() as tmp:
        try:
            for cid in ("c", "a", "b"):
                shims[cid] = FakeShim(cid)
                server = TTRPCServer()
                server.register(TASK, shims[cid])
                await server.listen(Path(tmp) / f"{cid}.sock")
                servers.append(server)
                bundle = Bundle(Path(tmp) / cid, NS, cid)
                client = await ShimClient.connect(str(Path(tmp) / f"{cid}.sock"), bundle, lambda: None)
                tasks[cid] = Task(bundle, "io.containerd.runc.v2", client, 4242)
                manager._tasks[(NS, cid)] = tasks[cid]
            yield Fleet(manager, shims, tasks)
        finally:
            for shim in shims.values():
                shim._never.set()
            await manager.close()
            exchange.close()
            for server in servers:
                await server.close()


async def test_typed_calls_convert_the_shims_messages(fleet: Fleet) -> None:
    task = fleet.tasks["a"]
    state = await task.state()
    assert state == TaskState(id="a", exec_id="", pid=4242, status=Status.RUNNING, stdout="/out", terminal=True,
                              exit_status=3, exited_at_ns=EXITED_NS)
    await task.kill(9, all=True, exec_id="e1")
    assert fleet.shims["a"].killed == [(9, True, "e1")]
    pids = await task.pids()
    assert [(p.pid, p.info) for p in pids] == [(7, None), (8, AnyValue("x/info", b"i"))]
    assert await task.stats() == AnyValue("x/metrics", b"a")


async def test_a_stuck_shim_is_a_deadline_naming_the_task(fleet: Fleet) -> None:
    fleet.shims["b"].stuck = True
    with pytest.raises(errors.DeadlineExceeded, match=r"task b: its shim did not answer State within 0\.2 s"):
        await fleet.tasks["b"].state(timeout=0.2)


async def test_listing_shows_a_stuck_shim_as_unknown_within_its_deadline(fleet: Fleet) -> None:
    fleet.shims["b"].stuck = True
    t0 = time.monotonic()
    states = await fleet.manager.states(NS, deadline=0.5)
    took = time.monotonic() - t0
    assert [(s.id, s.status) for s in states] == [("a", Status.RUNNING), ("b", Status.UNKNOWN),
                                                  ("c", Status.RUNNING)]
    assert states[1].pid == 4242
    # asked concurrently: one deadline, not one per shim (a bound loose enough for a loaded host)
    assert took < 5
    metrics = await fleet.manager.metrics(list(fleet.tasks.values()), deadline=0.5)
    assert sorted((t.id, data) for t, data in metrics) == [("a", AnyValue("x/metrics", b"a")),
                                                           ("c", AnyValue("x/metrics", b"c"))]


async def test_listing_uses_cached_states_until_something_happens(fleet: Fleet) -> None:
    manager, shims = fleet.manager, fleet.shims
    await manager.states(NS)
    assert [shims[c].state_calls for c in "abc"] == [1, 1, 1]
    await manager.states(NS)
    assert [shims[c].state_calls for c in "abc"] == [1, 1, 1]  # nothing happened: no round trips

    # an event about b (as its shim publishes it) makes the next listing ask b again
    shims["b"].status = task_pb2.PAUSED
    paused = task_events.TaskPaused(container_id="b")
    manager.events.publish(NS, "/tasks/paused", paused.DESCRIPTOR.full_name, paused.SerializeToString())
    states = await manager.states(NS)
    assert [shims[c].state_calls for c in "abc"] == [1, 2, 1]
    assert states[1].status == Status.PAUSED

    # so does a call of ours that may change the task
    shims["c"].status = task_pb2.STOPPED
    await fleet.tasks["c"].kill(15)
    states = await manager.states(NS)
    assert [shims[c].state_calls for c in "abc"] == [1, 2, 2]
    assert states[2].status == Status.STOPPED

    # an event of another namespace, or about no task, changes nothing
    manager.events.publish("other", "/tasks/paused", paused.DESCRIPTOR.full_name, paused.SerializeToString())
    manager.events.publish(NS, "/containers/delete", "containerd.events.ContainerDelete", b"")
    await manager.states(NS)
    assert [shims[c].state_calls for c in "abc"] == [1, 2, 2]


async def test_a_status_answer_uses_the_cached_state_as_a_listing_does(fleet: Fleet) -> None:
    """The CRI's ContainerStatus/PodSandboxStatus (`reported_state`): no round trip while nothing
    happened to the task since its state was read; an event or a call of ours asks again."""
    manager, shims = fleet.manager, fleet.shims
    assert (await manager.reported_state(NS, "a")).status == Status.RUNNING
    assert (await manager.reported_state(NS, "a")).pid == 4242
    assert shims["a"].state_calls == 1
    await manager.states(NS)  # a listing reads a's cached state too, and warms b's and c's
    assert [shims[c].state_calls for c in "abc"] == [1, 1, 1]
    await manager.reported_state(NS, "b")
    assert shims["b"].state_calls == 1

    shims["a"].status = task_pb2.STOPPED
    exited = task_events.TaskExit(container_id="a", id="a", pid=4242, exit_status=3)
    manager.events.publish(NS, "/tasks/exit", exited.DESCRIPTOR.full_name, exited.SerializeToString())
    assert (await manager.reported_state(NS, "a")).status == Status.STOPPED
    assert shims["a"].state_calls == 2
    shims["b"].status = task_pb2.PAUSED
    await fleet.tasks["b"].kill(19)
    assert (await manager.reported_state(NS, "b")).status == Status.PAUSED
    with pytest.raises(errors.NotFound):
        await manager.reported_state(NS, "nope")


async def test_a_stuck_shim_is_asked_again_next_time(fleet: Fleet) -> None:
    fleet.shims["a"].stuck = True
    assert (await fleet.manager.states(NS, deadline=0.3))[0].status == Status.UNKNOWN
    fleet.shims["a"].stuck = False
    fleet.shims["a"]._never.set()  # the first call answers late; its answer must not count
    await asyncio.sleep(0)
    states = await fleet.manager.states(NS, deadline=5)
    assert states[0].status == Status.RUNNING
