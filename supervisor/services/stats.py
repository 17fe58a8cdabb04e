"""dockyard.stats.v1.Stats: stream the cgroup samples of selected containers (see supervisor.stats)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc

from dockyard_api.dockyard.stats.v1 import stats_pb2 as pb
from dockyard_api.dockyard.stats.v1 import stats_pb2_grpc as pb_grpc
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc_stream
from supervisor.stats import DEFAULT_INTERVAL_MS, Sample, Selector, StatsHub

# How long a stream waits after a sample for others to send along in the same message: shims
# sample on the same clock ticks, and one message per tick costs far less than one per sample.
MAX_LINGER = 0.02


def response(samples: Iterable[Sample], dropped: int) -> pb.StreamResponse:
    out = pb.StreamResponse(dropped=dropped)
    for s in samples:
        msg = out.samples.add()
        if s.payload:
            msg.MergeFromString(s.payload)  # the shim's message, as it sent it
        else:  # an end marker the daemon made: the task went away without a final sample
            msg.id, msg.namespace, msg.seq, msg.end = s.id, s.namespace, s.seq, s.end
            msg.timestamp.FromNanoseconds(s.timestamp_ns)
        if s.network is not None:
            out.networks.append(pb.NetworkStats(id=s.id, seq=s.seq, interfaces=[
                pb.InterfaceStats(name=name, rx_bytes=c.rx_bytes, rx_packets=c.rx_packets, rx_errors=c.rx_errors,
                                  rx_dropped=c.rx_dropped, tx_bytes=c.tx_bytes, tx_packets=c.tx_packets,
                                  tx_errors=c.tx_errors, tx_dropped=c.tx_dropped)
                for name, c in sorted(s.network.items())]))
    return out


class StatsService(pb_grpc.StatsServicer):
    def __init__(self, hub: StatsHub) -> None:
        self.hub = hub

    @rpc_stream
    async def Stream(self, request: pb.StreamRequest, context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[pb.StreamResponse]:
        selector = Selector(frozenset(request.ids), tuple(request.filters), request.all)
        sub = await self.hub.subscribe(namespace_of(context), selector, request.interval_ms)
        linger = min(MAX_LINGER, (request.interval_ms or DEFAULT_INTERVAL_MS) / 1000 / 10)
        async with sub:
            while True:
                try:
                    samples, dropped = await sub.batch(linger)
                except StopAsyncIteration:
                    return
                yield response(samples, dropped)

