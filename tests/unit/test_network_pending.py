"""A task created while its network is still being attached (supervisor/network/wiring.py's
PendingNetwork, resolv.rewrite_hosts): what waits for the plugins, and what a failed or cancelled
create gets back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition
from supervisor.network import resolv
from supervisor.network.wiring import PendingNetwork, _needs_network_at_create


@pytest.mark.parametrize(("spec", "waits"), [
    ({}, False),
    ({"linux": {"sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"}}}, False),
    ({"linux": {"sysctl": {"net.ipv4.conf.all.forwarding": "1", "net.ipv6.conf.default.accept_ra": "0",
                           "net.ipv4.conf.lo.rp_filter": "0"}}}, False),
    ({"linux": {"sysctl": {"net.ipv4.conf.eth0.route_localnet": "1"}}}, True),
    ({"linux": {"sysctl": {"net/ipv6/neigh/eth1/retrans_time_ms": "100"}}}, True),
    ({"linux": {"sysctl": "not a map"}}, False),
    ({"hooks": {"createRuntime": [{"path": "/bin/true"}]}}, True),
])
def test_what_waits_for_the_plugins(spec: dict[str, object], waits: bool) -> None:
    assert _needs_network_at_create(spec) is waits  # type: ignore[arg-type]


def test_rewrite_hosts_keeps_the_inode(tmp_path: Path) -> None:
    resolv_path, hosts = resolv.write_files(tmp_path, hostname="web", addresses=[])
    before = os.stat(hosts).st_ino
    assert "web" not in hosts.read_text().split()
    resolv.rewrite_hosts(hosts, hostname="web", addresses=["10.88.0.7"], extra_hosts=["db:10.1.2.3"])
    assert os.stat(hosts).st_ino == before  # a bind mount of the file shows the new text
    lines = [line.split() for line in hosts.read_text().splitlines()]
    assert ["10.88.0.7", "web"] in lines and ["10.1.2.3", "db"] in lines
    assert resolv_path.exists()


def test_a_failed_attach_is_the_cause() -> None:
    async def main() -> None:
        async def attach() -> None:
            await asyncio.sleep(0)
            raise FailedPrecondition("plugin bridge failed")

        pending = PendingNetwork(asyncio.get_running_loop().create_task(attach()))
        with pytest.raises(FailedPrecondition):
            await pending.settle()
        assert isinstance(await pending.abandon(), FailedPrecondition)
        assert await PendingNetwork(None).abandon() is None

    asyncio.run(main())


def test_a_cancelled_settle_leaves_the_attach_running_to_its_end() -> None:
    async def main() -> None:
        release = asyncio.Event()
        ended: list[str] = []

        async def attach() -> None:
            await release.wait()
            ended.append("attached")

        pending = PendingNetwork(asyncio.get_running_loop().create_task(attach()))
        waiter = asyncio.ensure_future(pending.settle())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not ended  # the attach goes on: the caller's cleanup waits for it, then releases
        abandoning = asyncio.ensure_future(pending.abandon())
        await asyncio.sleep(0)
        assert not abandoning.done()
        release.set()
        assert await abandoning is None and ended == ["attached"]

    asyncio.run(main())
