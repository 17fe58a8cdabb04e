"""Network counters in the stats stream: the hub reads them for the samples it delivers, the
service puts them next to their sample (id, seq), the SDK puts them back on the sample."""

from __future__ import annotations

import asyncio

from dock.stats import decode_network, decode_sample
from dockyard_api.dockyard.shim.v1 import stats_pb2 as shim_pb
from supervisor.network.counters import Counters
from supervisor.services.stats import response
from supervisor.stats import Sample, Selector, StatsHub

NS = "default"
ETH0 = Counters(rx_bytes=1500, rx_packets=3, rx_errors=0, rx_dropped=1, tx_bytes=700, tx_packets=2, tx_errors=0,
                tx_dropped=0)


class Control:
    async def watch(self, namespace: str, cid: str, interval_ms: int) -> None:
        pass

    async def unwatch(self, namespace: str, cid: str) -> None:
        pass


async def test_counters_travel_with_their_sample() -> None:
    reads: list[str] = []

    def network(namespace: str, cid: str) -> dict[str, Counters] | None:
        reads.append(cid)
        return {"eth0": ETH0} if cid == "web" else None

    hub = StatsHub(network=network)
    hub.bind(Control())
    for cid in ("web", "plain", "unwatched"):
        hub.task_added(NS, cid)
    hub.push(Sample(NS, "unwatched", 1, 1, payload=b""))  # nobody subscribed: nothing is read
    sub = await hub.subscribe(NS, Selector(frozenset({"web", "plain"})), 100)
    payload = shim_pb.Sample(id="web", namespace=NS, seq=7).SerializeToString()
    hub.push(Sample(NS, "web", 2, 7, payload=payload))
    hub.push(Sample(NS, "plain", 2, 4, payload=shim_pb.Sample(id="plain", namespace=NS, seq=4).SerializeToString()))
    hub.push(Sample(NS, "web", 3, 8, end=True))  # the end marker: no read
    samples, _ = await asyncio.wait_for(sub.batch(0.01), 5)
    sub.close()
    assert reads == ["web", "plain"]
    msg = response(samples, 0)
    assert [(n.id, n.seq) for n in msg.networks] == [("web", 7)]
    got = {s.id + str(s.seq): decode_sample(s, 0, next((n for n in msg.networks if (n.id, n.seq) == (s.id, s.seq)),
                                                        None)) for s in msg.samples}
    web = got["web7"]
    assert web.network_io == (1500, 700)
    assert web.networks == decode_network(msg.networks[0]) and web.networks[0].name == "eth0"
    assert web.networks[0].rx_dropped == 1 and web.networks[0].tx_packets == 2
    assert got["plain4"].networks is None and got["plain4"].network_io is None
    await hub.close()
