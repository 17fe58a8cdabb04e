"""The event exchange: publish once, fan out to every subscriber whose filter matches.

Events carry their payload already serialised (type URL + bytes), so the exchange never
touches protobuf. Each subscriber has a bounded queue: a subscriber that falls that far
behind is cut off with an error instead of slowing the publishers or other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from dockyard_common.errors import InvalidArgument, ResourceExhausted
from supervisor import filters, identifiers
from supervisor.timeutil import now

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096
# Bytes of event payloads one subscriber may fall behind by, too: a client publishes events of
# up to a message's size (4 MiB), and 4 096 of those queued for a subscriber that does not read
# were 16 GiB of daemon memory.
QUEUE_BYTES = 16 << 20


@dataclass(frozen=True)
class Event:
    timestamp: datetime
    namespace: str
    topic: str
    type_url: str  # containerd writes bare full names, e.g. containerd.events.TaskExit
    value: bytes
    fields: dict[str, str] = field(default_factory=dict)  # event.<path> values for filters


def validate_topic(topic: str) -> None:
    if not topic:
        raise InvalidArgument("topic must not be empty")
    if not topic.startswith("/"):
        raise InvalidArgument(f"topic {topic!r} must start with '/'")
    if len(topic) == 1:
        raise InvalidArgument("topic must have at least one component")
    for component in topic[1:].split("/"):
        identifiers.validate(component, what=f"topic {topic!r} component")


def _adaptor(event: Event) -> Callable[[list[str]], tuple[str, bool]]:
    def lookup(path: list[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        if path[0] == "namespace":
            return event.namespace, bool(event.namespace)
        if path[0] == "topic":
            return event.topic, bool(event.topic)
        if path[0] == "event" and len(path) > 1:
            value = event.fields.get(".".join(path[1:]), "")
            return value, bool(value)
        return "", False

    return lookup


class _Subscriber:
    def __init__(self, match: filters.Filter) -> None:
        self.match = match
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self.queued_bytes = 0  # payload bytes in `queue`
        self.overflowed = False


class Exchange:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

    def publish(self, namespace: str, topic: str, type_url: str, value: bytes,
                fields: dict[str, str] | None = None) -> None:
        self.forward(Event(now(), namespace, topic, type_url, value, fields or {}))

    def forward(self, event: Event) -> None:
        """Deliver an event as it is (timestamp included): used for relayed events too."""
        validate_topic(event.topic)
        identifiers.validate_namespace(event.namespace)
        adaptor = _adaptor(event)
        for sub in list(self._subscribers):
            if sub.overflowed or not sub.match.match(adaptor):
                continue
            size = len(event.value)
            try:
                if sub.queued_bytes + size > QUEUE_BYTES and sub.queued_bytes:
                    raise asyncio.QueueFull
                sub.queue.put_nowait(event)
                sub.queued_bytes += size
            except asyncio.QueueFull:
                sub.overflowed = True
                log.warning("event subscriber fell %d events (%d bytes) behind; disconnecting it",
                            sub.queue.qsize(), sub.queued_bytes)

    async def subscribe(self, filter_texts: list[str],
                        on_subscribed: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[Event]:
        """Events from every namespace (as containerd: the header does not filter).
        `on_subscribed` runs once the subscription is in place: every event published after it
        began is delivered (so a client can be told it may now start what it watches)."""
        sub = _Subscriber(filters.parse_all(filter_texts))
        self._subscribers.add(sub)
        try:
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise ResourceExhausted("event subscriber too slow: events were dropped")
                event = await sub.queue.get()
                if event is None:
                    return
                sub.queued_bytes -= len(event.value)
                yield event
        finally:
            self._subscribers.discard(sub)

    async def follow(self, filter_texts: list[str], on_event: Callable[[Event], Awaitable[None]],
                     on_subscribed: Callable[[], Awaitable[None]], *, who: str) -> None:
        """The daemon's own watchers (restart and health monitors): `on_event` for every event
        until the exchange closes. `on_subscribed` runs each time a subscription is in place: at
        first, and again after falling behind cut one off (the caller finds again what it missed)."""
        while True:
            try:
                async for event in self.subscribe(filter_texts, on_subscribed):
                    await on_event(event)
                return
            except ResourceExhausted:
                log.warning("%s fell behind the events: subscribing again", who)

    async def start_following(self, filter_texts: list[str], on_event: Callable[[Event], Awaitable[None]],
                              on_subscribed: Callable[[], Awaitable[None]], *, who: str,
                              on_closed: Callable[[], None] | None = None) -> asyncio.Task[None]:
        """`follow` in a task of its own, returned once the first subscription is in place (no
        event from then on is missed); what ended it before that is raised. `on_closed` runs
        when the exchange closes."""
        loop = asyncio.get_running_loop()
        subscribed: asyncio.Future[None] = loop.create_future()

        async def in_place() -> None:
            await on_subscribed()
            if not subscribed.done():
                subscribed.set_result(None)

        async def run() -> None:
            await self.follow(filter_texts, on_event, in_place, who=who)
            if on_closed is not None:
                on_closed()

        follower = loop.create_task(run())
        await asyncio.wait((subscribed, follower), return_when=asyncio.FIRST_COMPLETED)
        if not subscribed.done():
            subscribed.cancel()
            await follower
        return follower

    def close(self) -> None:
        """End every subscription (daemon shutdown)."""
        for sub in self._subscribers:
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                sub.overflowed = True
