"""The daemon's ttrpc endpoint for shims: they forward task events here (TTRPC_ADDRESS).

Other services of ours for shims share the socket (stats samples: `supervisor.runtime.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from pathlib import Path

from google.protobuf import descriptor, empty_pb2

from dockyard_api.containerd.services.ttrpc.events.v1 import events_pb2 as pb
from dockyard_common.ttrpc import RequestContext, TTRPCServer
from supervisor.events import Event, Exchange
from supervisor.timeutil import now


class ShimEvents:
    """containerd.services.events.ttrpc.v1.Events: Forward only."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def Forward(self, request: pb.ForwardRequest, ctx: RequestContext) -> empty_pb2.Empty:
        env = request.envelope
        when = env.timestamp.ToDatetime(tzinfo=UTC) if env.HasField("timestamp") else now()
        type_url = env.event.type_url.removeprefix("type.googleapis.com/")
        self.exchange.forward(Event(when, env.namespace, env.topic, type_url, env.event.value))
        return empty_pb2.Empty()


async def serve_shim_events(path: Path, exchange: Exchange,
                            extra: Sequence[tuple[descriptor.ServiceDescriptor, object]] = ()) -> TTRPCServer:
    server = TTRPCServer(require_same_user=True)
    server.register(pb.DESCRIPTOR.services_by_name["Events"], ShimEvents(exchange))
    for service, handler in extra:  # registered before we listen: no call finds them missing
        server.register(service, handler)
    await server.listen(path)
    return server
