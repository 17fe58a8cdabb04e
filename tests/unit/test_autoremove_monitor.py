"""The daemon's `--rm` (supervisor/runtime/autoremove.py, driven by the restart monitor's exits) over a
real container store and event exchange, tasks, snapshots and volumes faked: the orderings a real
daemon makes rare (the exit told twice, a container replaced under the same name, a task started
again) are made certain here. The real thing: tests/integration/test_run_edges.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dockyard_common import autoremove, volumelabels
from dockyard_common import restartpolicy as rp
from dockyard_common.errors import NotFound
from dockyard_common.types import AnyValue, Container
from supervisor.events import Event, Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.db import Database
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.runtime.autoremove import DELETE_TOPIC, AutoRemover
from supervisor.runtime.restart import SPEC_TYPE_URL, RestartMonitor
from supervisor.runtime.types import Status
from tests.unit.test_restart_monitor import NS, FakeTask, FakeTasks, World, _pids, publish_exit, settled, started
from tests.waiting import wait_until_async

RM = autoremove.labels()


@dataclass
class Pruned:
    removed: list[str]


@dataclass
class FakeVolumes:
    filters: list[list[str]] = field(default_factory=list)

    async def prune(self, ns: str, filter_texts: Iterable[str] = ()) -> Pruned:
        self.filters.append(list(filter_texts))
        return Pruned(["v1"])


@dataclass
class FakeSnapshots:
    removed: list[str] = field(default_factory=list)

    async def mounts(self, namespace: str, snapshotter: str, key: str) -> list[object]:
        return []

    async def remove(self, namespace: str, snapshotter: str, key: str) -> None:
        self.removed.append(key)


@dataclass
class Rig:
    world: World
    snapshots: FakeSnapshots
    volumes: FakeVolumes
    deleted_hooks: list[str]
    deletes: list[Event]

    def monitor(self) -> RestartMonitor:
        w = self.world
        monitor = RestartMonitor(w.containers, w.tasks, self.snapshots, w.namespaces, w.events)  # type: ignore[arg-type]
        monitor.remover = self.remover()
        return monitor

    def remover(self) -> AutoRemover:
        async def on_deleted(ns: str, cid: str) -> None:
            self.deleted_hooks.append(cid)

        w = self.world
        return AutoRemover(w.containers, w.tasks, self.snapshots, self.volumes, w.events,  # type: ignore[arg-type]
                           on_deleted)

    async def exists(self, cid: str) -> bool:
        try:
            await self.world.containers.get(NS, cid)
        except NotFound:
            return False
        return True


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = await Database.open(tmp_path / "metadata.db")
    events = Exchange()
    deletes: list[Event] = []

    subscribed = asyncio.Event()

    async def in_place() -> None:
        subscribed.set()

    async def follow() -> None:
        async for event in events.subscribe([f'topic=="{DELETE_TOPIC}"'], in_place):
            deletes.append(event)

    follower = asyncio.ensure_future(follow())
    await subscribed.wait()  # every delete from here on is seen
    try:
        world = World(events, FakeTasks(events), ContainerStore(db), NamespaceStore(db))
        yield Rig(world, FakeSnapshots(), FakeVolumes(), [], deletes)
    finally:
        events.close()
        await follower
        await db.close()


async def _container(rig: Rig, cid: str, labels: dict[str, str], started: bool = True) -> None:
    """A container with a rootfs snapshot (key = its id); with `started`, a running task."""
    await rig.world.containers.create(NS, Container(id=cid, runtime_name="io.containerd.runc.v2",
                                                    spec=AnyValue(SPEC_TYPE_URL, b"{}"), labels=labels,
                                                    snapshotter="overlayfs", snapshot_key=cid))
    if started:
        rig.world.tasks.live[cid] = FakeTask(rig.world.tasks, cid, next(_pids), Status.RUNNING)


async def test_an_exit_removes_task_snapshot_container_and_anonymous_volumes_then_tells(rig: Rig) -> None:
    await _container(rig, "gone", RM)
    monitor = await started(rig.monitor())
    try:
        pid = rig.world.tasks.live["gone"].pid
        rig.world.tasks.exited("gone", 3)
        publish_exit(rig.world.events, "gone", pid, 3)  # told twice: removed once
        await wait_until_async(lambda: rig.deletes, what="the delete event")
        await settled(monitor)
        assert not await rig.exists("gone") and "gone" not in rig.world.tasks.live
        assert rig.snapshots.removed == ["gone"] and rig.deleted_hooks == ["gone"]
        assert rig.volumes.filters == [[volumelabels.anonymous_filter("gone")]]
        assert [e.fields for e in rig.deletes] == [{"id": "gone"}]
    finally:
        await monitor.close()


async def test_a_restart_policy_wins_and_plain_containers_stay(rig: Rig) -> None:
    await _container(rig, "both", {**RM, **rp.labels_for(rp.parse("on-failure:1"))})
    await _container(rig, "plain", {})
    monitor = await started(rig.monitor())
    try:
        rig.world.tasks.exited("plain", 0)
        rig.world.tasks.exited("both", 1)
        await wait_until_async(lambda: rig.world.tasks.created, what="the restart")
        await settled(monitor)
        assert await rig.exists("both") and await rig.exists("plain")
        assert rig.deletes == [] and rig.volumes.filters == []
    finally:
        await monitor.close()


async def test_a_replaced_or_restarted_container_is_left_alone(rig: Rig) -> None:
    await _container(rig, "again", RM)
    judged = await rig.world.containers.get(NS, "again")
    remover = rig.remover()
    assert not await remover.remove(NS, judged)  # its task runs (started again): nothing done
    assert await rig.exists("again") and "again" in rig.world.tasks.live
    # Removed by a client and made anew under the same name: the new one is not ours to remove.
    rig.world.tasks.live["again"].status = Status.STOPPED
    await rig.world.containers.delete(NS, "again")
    await _container(rig, "again", RM, started=False)
    assert not await remover.remove(NS, judged)
    assert await rig.exists("again") and rig.deletes == [] and rig.volumes.filters == []


async def test_the_daemon_start_removes_what_ended_unwatched_but_not_what_is_being_made(rig: Rig) -> None:
    await _container(rig, "stopped", RM)
    rig.world.tasks.live["stopped"].status = Status.STOPPED
    await _container(rig, "lost", RM, started=False)  # its task is gone: a reboot
    await _container(rig, "running", RM)
    monitor = rig.monitor()
    await _container(rig, "new", RM, started=False)  # a client's `dock run -d --rm` under way
    await started(monitor)
    try:
        await wait_until_async(lambda: len(rig.deletes) == 2, what="two removals")
        await settled(monitor)
        assert sorted(e.fields["id"] for e in rig.deletes) == ["lost", "stopped"]
        assert await rig.exists("running") and await rig.exists("new")
    finally:
        await monitor.close()
