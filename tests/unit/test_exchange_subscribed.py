"""Exchange.subscribe's `on_subscribed`: it runs once the subscriber is in place, so an event
published from it (or after it) reaches the subscription; a bad filter fails before it runs."""

from __future__ import annotations

import asyncio

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.events import Exchange


def test_an_event_published_once_subscribed_is_delivered() -> None:
    async def go() -> None:
        exchange = Exchange()

        async def subscribed() -> None:  # what the Events service does: tell the client, who then acts
            exchange.publish("default", "/tasks/exit", "containerd.events.TaskExit", b"")

        stream = exchange.subscribe(['topic=="/tasks/exit"'], subscribed)
        event = await asyncio.wait_for(anext(stream), 5)
        assert (event.namespace, event.topic) == ("default", "/tasks/exit")

    asyncio.run(go())


def test_a_bad_filter_fails_before_on_subscribed() -> None:
    async def go() -> None:
        called = []

        async def subscribed() -> None:
            called.append(True)

        with pytest.raises(InvalidArgument):
            await anext(Exchange().subscribe(['topic=="/x" ,y'], subscribed))
        assert not called

    asyncio.run(go())
