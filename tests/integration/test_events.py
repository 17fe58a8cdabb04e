"""Events service: subscribe with filters, publish, forward, and service-generated events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2, timestamp_pb2

from dockyard_api.containerd.events import namespace_pb2 as ns_events
from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from tests.daemon import DaemonProcess, subscribed

NS = [("containerd-namespace", "evt")]


async def collect(call: AsyncIterator[events_pb2.Envelope], n: int) -> list[events_pb2.Envelope]:
    out = []
    async for env in call:
        out.append(env)
        if len(out) == n:
            break
    return out


@pytest.fixture
async def stub(daemon: DaemonProcess) -> AsyncIterator[events_pb2_grpc.EventsStub]:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        yield events_pb2_grpc.EventsStub(ch)


async def test_namespace_events_reach_subscribers_of_all_namespaces(
        stub: events_pb2_grpc.EventsStub, daemon: DaemonProcess) -> None:
    call = await subscribed(stub, namespace="evt")
    async with daemon.client("other") as c:
        await c.create_namespace("evt-ns", {"a": "b"})
        await c.update_namespace("evt-ns", {"a": "c"}, ["labels.a"])
        await c.delete_namespace("evt-ns")
    envs = await asyncio.wait_for(collect(call, 3), 10)
    call.cancel()
    assert [e.topic for e in envs] == ["/namespaces/create", "/namespaces/update", "/namespaces/delete"]
    assert [e.event.type_url for e in envs] == [
        "containerd.events.NamespaceCreate", "containerd.events.NamespaceUpdate",
        "containerd.events.NamespaceDelete"]
    created = ns_events.NamespaceCreate.FromString(envs[0].event.value)
    assert created.name == "evt-ns" and dict(created.labels) == {"a": "b"}
    assert envs[0].namespace == "evt-ns"
    assert envs[0].timestamp.seconds > 0


async def test_publish_and_topic_filter(stub: events_pb2_grpc.EventsStub) -> None:
    call = await subscribed(stub, 'topic~="^/mine/"', namespace="evt")
    event = any_pb2.Any(type_url="containerd.events.NamespaceCreate",
                        value=ns_events.NamespaceCreate(name="x").SerializeToString())
    await stub.Publish(events_pb2.PublishRequest(topic="/other/thing", event=event), metadata=NS)
    await stub.Publish(events_pb2.PublishRequest(topic="/mine/thing", event=event), metadata=NS)
    envs = await asyncio.wait_for(collect(call, 1), 10)
    call.cancel()
    assert envs[0].topic == "/mine/thing" and envs[0].namespace == "evt"
    assert envs[0].event.value == event.value


async def test_event_field_filter(stub: events_pb2_grpc.EventsStub, daemon: DaemonProcess) -> None:
    call = await subscribed(stub, "event.name==wanted", namespace="evt")
    async with daemon.client() as c:
        await c.create_namespace("unwanted")
        await c.create_namespace("wanted")
    envs = await asyncio.wait_for(collect(call, 1), 10)
    call.cancel()
    assert ns_events.NamespaceCreate.FromString(envs[0].event.value).name == "wanted"


async def test_forward_keeps_envelope(stub: events_pb2_grpc.EventsStub) -> None:
    call = await subscribed(stub, "namespace==far", namespace="evt")
    env = events_pb2.Envelope(timestamp=timestamp_pb2.Timestamp(seconds=1_700_000_000), namespace="far",
                              topic="/tasks/exit", event=any_pb2.Any(type_url="containerd.events.TaskExit"))
    await stub.Forward(events_pb2.ForwardRequest(envelope=env), metadata=NS)
    got = await asyncio.wait_for(collect(call, 1), 10)
    call.cancel()
    assert got[0].timestamp.seconds == 1_700_000_000 and got[0].topic == "/tasks/exit"


@pytest.mark.parametrize("topic", ["", "nope", "/", "/a//b", "/bad topic"])
async def test_bad_topics(stub: events_pb2_grpc.EventsStub, topic: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Publish(events_pb2.PublishRequest(topic=topic, event=any_pb2.Any(type_url="t")),
                           metadata=NS)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_subscribe_filter(stub: events_pb2_grpc.EventsStub) -> None:
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=["topic=="]), metadata=NS)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call, 1)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
