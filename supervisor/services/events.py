"""containerd.services.events.v1.Events, and the publisher helper other services use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, tzinfo

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.services.events.v1 import events_pb2 as pb
from dockyard_api.containerd.services.events.v1 import events_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument
from dockyard_common.eventstream import SUBSCRIBED_HEADER
from supervisor.events import Event, Exchange
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc, rpc_stream
from supervisor.timeutil import now


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def request_time(ts: timestamp_pb2.Timestamp, what: str, tz: tzinfo | None = None) -> datetime:
    """A caller's Timestamp as a datetime. One a datetime cannot hold (outside years 1-9999, or
    nanos outside 0-999 999 999) is the caller's mistake, not protobuf's ValueError (INTERNAL)."""
    try:
        return ts.ToDatetime(tzinfo=tz)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{what}: timestamp {ts.seconds}s {ts.nanos}ns is out of range") from None


def event_fields(message: Message) -> dict[str, str]:
    """Flatten an event's scalar fields and labels for `event.<path>` filters."""
    out: dict[str, str] = {}
    for desc, value in message.ListFields():
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            for k, v in value.items():
                out[f"{desc.name}.{k}"] = str(v)
        elif desc.type != desc.TYPE_MESSAGE and not desc.is_repeated:
            out[desc.name] = str(value)
    return out


def _unpack_any(event: any_pb2.Any) -> tuple[str, bytes]:
    # containerd writes bare type names; accept the type.googleapis.com/ form too.
    return event.type_url.removeprefix("type.googleapis.com/"), event.value


def publish(exchange: Exchange, namespace: str, topic: str, message: Message) -> None:
    """Publish a containerd event message under its bare full name, as containerd does."""
    exchange.publish(namespace, topic, message.DESCRIPTOR.full_name, message.SerializeToString(),
                     event_fields(message))


class EventsService(pb_grpc.EventsServicer):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    @rpc
    async def Publish(self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
                      ) -> empty_pb2.Empty:
        type_url, value = _unpack_any(request.event)
        self.exchange.forward(Event(now(), namespace_of(context), request.topic, type_url, value))
        return empty_pb2.Empty()

    @rpc
    async def Forward(self, request: pb.ForwardRequest, context: grpc.aio.ServicerContext
                      ) -> empty_pb2.Empty:
        env = request.envelope
        type_url, value = _unpack_any(env.event)
        when = request_time(env.timestamp, "envelope", now().tzinfo) if env.HasField("timestamp") else now()
        self.exchange.forward(Event(when, env.namespace, env.topic, type_url, value))
        return empty_pb2.Empty()

    @rpc_stream
    async def Subscribe(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[pb.Envelope]:
        async def subscribed() -> None:
            # Our headers go out once the subscription is in place (not with the first event),
            # saying so: a client that awaits them knows no later event can be missed (`dock run
            # --rm` subscribes to its task's exit before it starts it). Other clients ignore them.
            await context.send_initial_metadata(((SUBSCRIBED_HEADER, "true"),))

        async for ev in self.exchange.subscribe(list(request.filters), subscribed):
            yield pb.Envelope(
                timestamp=timestamp(ev.timestamp),
                namespace=ev.namespace,
                topic=ev.topic,
                event=any_pb2.Any(type_url=ev.type_url, value=ev.value),
            )
