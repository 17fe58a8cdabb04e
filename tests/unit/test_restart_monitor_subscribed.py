"""The restart monitor's `start` returns once its exit subscription is in place (the exchange's
`on_subscribed`), so an exit published right after it, with no turn of the loop between, is judged."""

from __future__ import annotations

from pathlib import Path

from dockyard_common.types import AnyValue, Container
from supervisor.events import Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.db import Database
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.runtime.restart import SPEC_TYPE_URL, RestartMonitor
from tests.unit.test_restart_monitor import NS, FakeSnapshots, FakeTasks, publish_exit
from tests.waiting import wait_until_async


async def test_an_exit_published_as_start_returns_is_judged(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    events = Exchange()
    containers = ContainerStore(db)
    monitor = RestartMonitor(containers, FakeTasks(events), FakeSnapshots(), NamespaceStore(db),  # type: ignore[arg-type]
                             events)
    exits: list[str] = []

    async def observer(namespace: str, cid: str) -> None:
        exits.append(cid)

    monitor.exit_observers.append(observer)
    try:
        await containers.create(NS, Container(id="quick", runtime_name="io.containerd.runc.v2",
                                              spec=AnyValue(SPEC_TYPE_URL, b"{}")))
        await monitor.start()
        publish_exit(events, "quick", 4242, 3)  # at once: had the follower not subscribed yet, lost
        await wait_until_async(lambda: exits == ["quick"], 20, what="the exit to reach the monitor")
        await wait_until_async(monitor.reconciled.is_set, 20, what="the start-up reconcile")
    finally:
        await monitor.close()
        events.close()
        await db.close()


async def test_start_after_close_returns(tmp_path: Path) -> None:
    """A follower that ends before it subscribes (the monitor closed) does not hang `start`."""
    db = await Database.open(tmp_path / "metadata.db")
    events = Exchange()
    monitor = RestartMonitor(ContainerStore(db), FakeTasks(events), FakeSnapshots(), NamespaceStore(db),  # type: ignore[arg-type]
                             events)
    try:
        await monitor.close()
        await monitor.start()
        assert not monitor.reconciled.is_set()
    finally:
        await monitor.close()
        events.close()
        await db.close()
