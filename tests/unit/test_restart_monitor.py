"""The restart monitor's decisions (supervisor/runtime/restart.py) over a real container store and
event exchange, with the tasks faked: the orderings a real shim makes rare (an exit that arrives
while the restart is still under way, a delete during the back-off) are made certain here.
The real thing, with shims and containers: tests/integration/test_restart.py."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_common import restartpolicy as rp
from dockyard_common.errors import NotFound
from dockyard_common.types import AnyValue, Container
from supervisor.events import Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.db import Database
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.runtime.restart import SPEC_TYPE_URL, RestartMonitor
from supervisor.runtime.types import CreateOptions, Status, TaskState
from tests.waiting import wait_until_async

NS = "default"
_pids = itertools.count(1000)


def publish_exit(events: Exchange, cid: str, pid: int, status: int) -> None:
    exit = task_events.TaskExit(container_id=cid, id=cid, pid=pid, exit_status=status)
    events.publish(NS, "/tasks/exit", exit.DESCRIPTOR.full_name, exit.SerializeToString())


@dataclass
class FakeTask:
    tasks: FakeTasks
    id: str
    pid: int
    status: Status = Status.CREATED
    exit_status: int = 0

    async def state(self) -> TaskState:
        return TaskState(id=self.id, exec_id="", pid=self.pid, status=self.status, exit_status=self.exit_status)

    async def start(self) -> int:
        self.status = Status.RUNNING
        if self.tasks.exit_at_once is not None:  # the process ends before Start has even answered
            self.status, self.exit_status = Status.STOPPED, self.tasks.exit_at_once
            publish_exit(self.tasks.events, self.id, self.pid, self.tasks.exit_at_once)
            await asyncio.sleep(0.01)  # the answer comes after the exit event was delivered
        return self.pid


@dataclass
class FakeTasks:
    """The TaskManager surface the monitor uses."""

    events: Exchange
    live: dict[str, FakeTask] = field(default_factory=dict)
    created: list[tuple[str, CreateOptions]] = field(default_factory=list)
    exit_at_once: int | None = None

    def get(self, namespace: str, cid: str) -> FakeTask:
        if cid not in self.live:
            raise NotFound(f"task {cid} not found")
        return self.live[cid]

    async def delete(self, namespace: str, cid: str) -> None:
        self.get(namespace, cid)
        del self.live[cid]

    async def create(self, namespace: str, cid: str, runtime: str, spec: bytes, opts: CreateOptions,
                     labels: dict[str, str] | None = None) -> FakeTask:
        assert cid not in self.live
        self.created.append((cid, opts))
        self.live[cid] = FakeTask(self, cid, next(_pids))
        return self.live[cid]

    def exited(self, cid: str, status: int) -> None:
        """The task's init exits (as the shim tells it)."""
        task = self.live[cid]
        task.status, task.exit_status = Status.STOPPED, status
        publish_exit(self.events, cid, task.pid, status)


class FakeSnapshots:
    async def mounts(self, namespace: str, snapshotter: str, key: str) -> list[Any]:
        return []


@dataclass
class World:
    events: Exchange
    tasks: FakeTasks
    containers: ContainerStore
    namespaces: NamespaceStore

    def monitor(self) -> RestartMonitor:
        return RestartMonitor(self.containers, self.tasks, FakeSnapshots(), self.namespaces,  # type: ignore[arg-type]
                              self.events)

    async def container(self, cid: str, labels: dict[str, str], started: bool = True) -> None:
        await self.containers.create(NS, Container(id=cid, runtime_name="io.containerd.runc.v2",
                                                   spec=AnyValue(SPEC_TYPE_URL, b"{}"), labels=labels))
        if started:
            self.tasks.live[cid] = FakeTask(self.tasks, cid, next(_pids), Status.RUNNING)

    async def labels(self, cid: str) -> dict[str, str]:
        return (await self.containers.get(NS, cid)).labels


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(rp, "INITIAL_DELAY", 0.01)  # the same doubling, sooner
    db = await Database.open(tmp_path / "metadata.db")
    events = Exchange()
    try:
        yield World(events, FakeTasks(events), ContainerStore(db), NamespaceStore(db))
    finally:
        events.close()
        await db.close()


async def started(monitor: RestartMonitor) -> RestartMonitor:
    """Start it and wait until its start-up reconcile is done (it follows exits by then)."""
    await monitor.start()
    await asyncio.wait_for(monitor.reconciled.wait(), 20)
    return monitor


async def settled(monitor: RestartMonitor) -> None:
    await wait_until_async(lambda: not monitor._jobs, what="the monitor's jobs to finish")


async def test_an_exit_during_the_restart_is_judged_after_it(world: World) -> None:
    await world.container("fast", rp.labels_for(rp.parse("on-failure:2")))
    monitor = await started(world.monitor())
    try:
        world.tasks.exit_at_once = 7  # every restarted task exits before its Start returns
        world.tasks.exited("fast", 7)
        await wait_until_async(lambda: len(world.tasks.created) == 2, what="two restarts")

        async def gave_up() -> bool:
            labels = await world.labels("fast")
            return labels.get(rp.COUNT_LABEL) == "2" and world.tasks.live["fast"].status == Status.STOPPED \
                and not monitor._jobs and not monitor._pending
        await wait_until_async(gave_up, what="on-failure:2 to give up")
        labels = await world.labels("fast")
        assert labels[rp.EXIT_STATUS_LABEL] == "7"
        assert len(world.tasks.created) == 2  # no third restart
    finally:
        await monitor.close()


async def test_the_same_exit_told_twice_restarts_once(world: World) -> None:
    await world.container("twice", rp.labels_for(rp.parse("always")))
    monitor = await started(world.monitor())
    try:
        pid = world.tasks.live["twice"].pid
        world.tasks.exited("twice", 1)
        publish_exit(world.events, "twice", pid, 255)  # the dead shim's cleanup tells it again
        await wait_until_async(lambda: world.tasks.created, what="the restart")
        await settled(monitor)
        assert len(world.tasks.created) == 1
        assert (await world.labels("twice"))[rp.COUNT_LABEL] == "1"
    finally:
        await monitor.close()


async def test_delete_during_the_back_off_cancels_the_restart(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rp, "INITIAL_DELAY", 30.0)
    await world.container("gone", rp.labels_for(rp.parse("always")))
    monitor = await started(world.monitor())
    try:
        world.tasks.exited("gone", 1)
        await wait_until_async(lambda: ("default", "gone") in monitor._pending, what="a pending restart")
        await world.containers.delete(NS, "gone")
        await monitor.container_deleted(NS, "gone")
        await settled(monitor)
        assert world.tasks.created == []
    finally:
        await monitor.close()


async def test_explicit_stop_holds_and_a_user_start_lifts_it(world: World) -> None:
    await world.container("stop", rp.labels_for(rp.parse("unless-stopped")))
    monitor = await started(world.monitor())
    try:
        await monitor.user_killing(NS, "stop", signal.SIGHUP, "")  # not a stop
        assert rp.EXPLICITLY_STOPPED_LABEL not in await world.labels("stop")
        await monitor.user_killing(NS, "stop", signal.SIGTERM, "exec-1")  # an exec's, not the init's
        assert rp.EXPLICITLY_STOPPED_LABEL not in await world.labels("stop")
        await monitor.user_killing(NS, "stop", signal.SIGTERM, "")
        assert (await world.labels("stop"))[rp.EXPLICITLY_STOPPED_LABEL] == "true"
        world.tasks.exited("stop", 143)

        async def recorded() -> bool:
            return (await world.labels("stop")).get(rp.EXIT_STATUS_LABEL) == "143"
        await wait_until_async(recorded, what="the exit recorded")
        await settled(monitor)
        assert world.tasks.created == []

        await monitor.user_created(NS, await world.containers.get(NS, "stop"))
        labels = await world.labels("stop")
        assert labels[rp.EXPLICITLY_STOPPED_LABEL] == "false"
        assert labels[rp.STARTED_AT_LABEL] > labels[rp.EXITED_AT_LABEL]
    finally:
        await monitor.close()


async def test_the_daemon_start_brings_back_what_the_policies_want(world: World) -> None:
    lost = {**rp.labels_for(rp.parse("on-failure")), rp.STARTED_AT_LABEL: rp.rfc3339(2_000_000_000_000_000_000)}
    await world.container("lost", lost, started=False)  # ran, and its task is gone: a reboot
    await world.container("fresh", rp.labels_for(rp.parse("always")), started=False)  # never started
    held = {**rp.labels_for(rp.parse("unless-stopped")), rp.EXPLICITLY_STOPPED_LABEL: "true"}
    await world.container("held", held)
    world.tasks.live["held"].status = Status.STOPPED
    stopped_always = {**rp.labels_for(rp.parse("always")), rp.EXPLICITLY_STOPPED_LABEL: "true"}
    await world.container("manual", stopped_always)
    world.tasks.live["manual"].status = Status.STOPPED
    await world.container("plain", {})  # no policy at all
    world.tasks.live["plain"].status = Status.STOPPED

    monitor = await started(world.monitor())
    try:
        await settled(monitor)
        assert sorted(cid for cid, _ in world.tasks.created) == ["lost", "manual"]
        labels = await world.labels("lost")
        assert (labels[rp.COUNT_LABEL], labels[rp.EXIT_STATUS_LABEL]) == ("1", "255")
        assert (await world.labels("manual"))[rp.EXPLICITLY_STOPPED_LABEL] == "false"  # Docker's rule for always
        assert (await world.labels("held"))[rp.EXPLICITLY_STOPPED_LABEL] == "true"
        assert rp.COUNT_LABEL not in await world.labels("fresh")
    finally:
        await monitor.close()


async def test_close_cancels_pending_restarts(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rp, "INITIAL_DELAY", 30.0)
    await world.container("later", rp.labels_for(rp.parse("always")))
    monitor = await started(world.monitor())
    world.tasks.exited("later", 1)
    await wait_until_async(lambda: ("default", "later") in monitor._pending, what="a pending restart")
    await monitor.close()
    assert not monitor._jobs and world.tasks.created == []
