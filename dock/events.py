"""Events in the SDK: `client.events.subscribe(...)`, over containerd's Events service.

    async for env in client.events.subscribe('topic~="/tasks/"', 'namespace==default'):
        print(env.topic, env.event)          # e.g. /tasks/exit {'container_id': 'web', ...}

The daemon sends every namespace's events (as containerd does) unless a filter says
otherwise. Each payload is decoded by its type name (containerd writes bare full names such
as `containerd.events.TaskExit`); one whose type this client does not know keeps `event`
empty and `decoded` False, so a newer daemon cannot break an older subscriber.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from dock.tasks import message_dict
from dockyard_api.containerd.events import (
    container_pb2,
    content_pb2,
    image_pb2,
    namespace_pb2,
    snapshot_pb2,
    task_pb2,
)
from dockyard_api.containerd.services.events.v1 import events_pb2 as pb
from dockyard_api.containerd.services.events.v1 import events_pb2_grpc as pb_grpc
from dockyard_api.dockyard.containers.v1 import health_pb2
from dockyard_api.dockyard.network.v1 import events_pb2 as network_events_pb2
from dockyard_common.errors import Unavailable
from dockyard_common.eventstream import SUBSCRIBED_HEADER

if TYPE_CHECKING:
    from dock.client import Client

_EVENT_MODULES = (container_pb2, content_pb2, image_pb2, namespace_pb2, snapshot_pb2, task_pb2,
                  network_events_pb2,  # ours: /network/attach, /network/detach
                  health_pb2)  # /containers/health_status


@dataclass
class Envelope:
    timestamp: datetime | None
    namespace: str
    topic: str
    type_url: str
    event: dict[str, Any] = field(default_factory=dict)
    decoded: bool = True


def _event_types() -> dict[str, type[Message]]:
    out: dict[str, type[Message]] = {}
    for module in _EVENT_MODULES:
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            out[desc.full_name] = message_factory.GetMessageClass(desc)
    return out


EVENT_TYPES = _event_types()


def decode_event(type_url: str, value: bytes) -> tuple[dict[str, Any], bool]:
    """(fields, True) for a known event type; ({}, False) for one this client cannot read."""
    kind = EVENT_TYPES.get(type_url.removeprefix("type.googleapis.com/"))
    if kind is None:
        return {}, False
    msg = kind()
    try:
        msg.ParseFromString(value)
    except DecodeError:
        return {}, False
    data = message_dict(msg)
    return data, True


def _envelope(msg: pb.Envelope) -> Envelope:
    when = msg.timestamp.ToDatetime(tzinfo=UTC) if msg.HasField("timestamp") else None
    data, ok = decode_event(msg.event.type_url, msg.event.value)
    return Envelope(when, msg.namespace, msg.topic, msg.event.type_url, data, ok)


class EventsAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.EventsStub(client.channel)

    async def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Events as they are published, until the caller stops iterating (any of the
        containerd filters matches: `topic=="/tasks/exit"`, `namespace==ns`, `event.container_id==x`)."""
        call = self.stub.Subscribe(pb.SubscribeRequest(filters=list(filters)), metadata=self.client.metadata())
        try:
            async for env in self._envelopes(call):
                yield env
        finally:
            call.cancel()

    @contextlib.asynccontextmanager
    async def subscribed(self, *filters: str) -> AsyncIterator[AsyncIterator[Envelope]]:
        """`subscribe`, entered once the daemon has the subscription in place (it sends its
        headers then), so whatever is published after that is seen: subscribe, then start what
        is watched, without a race (as Docker's client waits for a wait's headers before it
        starts a container). The stream ends when the block does."""
        call = self.stub.Subscribe(pb.SubscribeRequest(filters=list(filters)), metadata=self.client.metadata())
        envelopes = self._envelopes(call)
        try:
            try:
                headers = await call.initial_metadata()
            except grpc.aio.AioRpcError as exc:
                raise self.client._error(exc) from None
            if SUBSCRIBED_HEADER not in (headers or ()):
                # No subscription: refused (a bad filter; its error, raised here), or a daemon
                # that does not say (its headers came with a first event).
                async for _ in envelopes:
                    break
                raise Unavailable("the daemon did not confirm the event subscription (is it an older dockyardd?)")
            yield envelopes
        finally:
            call.cancel()
            await envelopes.aclose()

    async def _envelopes(self, call: grpc.aio.UnaryStreamCall[Any, pb.Envelope]) -> AsyncGenerator[Envelope, None]:
        try:
            async for msg in call:
                yield _envelope(msg)
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None
