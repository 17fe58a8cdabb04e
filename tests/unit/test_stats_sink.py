"""The push path of stats samples: the shim's hand-built Push request, the daemon's inline StatsSink."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from dockyard_api.dockyard.shim.v1 import stats_pb2 as pb
from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import RequestContext, TTRPCClient, TTRPCServer, inline, wire
from shim.stats import SINK_SERVICE, _Sink
from supervisor.runtime.stats import StatsSink
from supervisor.stats import Sample

SINK = pb.DESCRIPTOR.services_by_name["StatsSink"]


class Hub:
    """What StatsSink needs of the hub: somewhere to push."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def push(self, sample: Sample) -> None:
        self.samples.append(sample)


@pytest.mark.parametrize("id_length", [0, 5, 127, 128, 300, 70_000])
def test_the_shims_push_request_is_a_ttrpc_request(id_length: int) -> None:
    sink = _Sink("unix:///nonexistent", "ns1", lambda: None)
    sample = pb.Sample(id="a" * id_length, namespace="ns1", seq=7, end=True)
    sample.timestamp.FromNanoseconds(1_700_000_000_123_456_789)
    frame = sink._frame(sample)
    header = wire.decode_header(frame[:wire.HEADER_LENGTH])
    assert (header.stream_id, header.type, header.length) == (1, wire.TYPE_REQUEST, len(frame) - wire.HEADER_LENGTH)
    req = ttrpc_pb2.Request.FromString(frame[wire.HEADER_LENGTH:])
    assert (req.service, req.method) == (SINK_SERVICE, "Push")
    assert [(kv.key, kv.value) for kv in req.metadata] == [("containerd-namespace-ttrpc", "ns1")]
    assert pb.Sample.FromString(req.payload) == sample


@pytest.fixture
async def served() -> AsyncIterator[tuple[TTRPCServer, TTRPCClient, Hub]]:
    hub = Hub()
    server = TTRPCServer()
    server.register(SINK, StatsSink(hub))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="sink-") as tmp:
        path = Path(tmp) / "ttrpc.sock"
        await server.listen(path)
        client = await TTRPCClient.connect(f"unix://{path}")
        try:
            yield server, client, hub
        finally:
            await client.close()
            await server.close()


async def test_pushes_are_answered_inline_and_reach_the_hub(served: tuple[TTRPCServer, TTRPCClient, Hub]) -> None:
    server, client, hub = served
    calls = [client.call(SINK_SERVICE, "Push", pb.Sample(id=f"c{i}", namespace="ns", seq=i + 1), empty_pb2.Empty)
             for i in range(20)]
    assert await asyncio.gather(*calls) == [empty_pb2.Empty()] * 20
    assert [(s.id, s.seq) for s in hub.samples] == [(f"c{i}", i + 1) for i in range(20)]
    assert all(conn.idle for conn in server._connections)  # no task was made for them


class Inline:
    @inline
    def Push(self, req: pb.Sample, ctx: RequestContext) -> empty_pb2.Empty:
        if not req.id:
            raise errors.NotFound("container not created")
        if req.id == "wrong":
            return pb.Sample()  # type: ignore[return-value]
        assert ctx.metadata.get("containerd-namespace-ttrpc") == ["ns"]
        return empty_pb2.Empty()


async def test_inline_handlers_fail_like_any_other() -> None:
    server = TTRPCServer()
    server.register(SINK, Inline())
    with tempfile.TemporaryDirectory(prefix="sink-") as tmp:
        path = Path(tmp) / "ttrpc.sock"
        await server.listen(path)
        async with await TTRPCClient.connect(f"unix://{path}") as client:
            md = {"containerd-namespace-ttrpc": "ns"}
            assert await client.call(SINK_SERVICE, "Push", pb.Sample(id="c1"), empty_pb2.Empty,
                                     metadata=md) == empty_pb2.Empty()
            with pytest.raises(errors.NotFound, match="container not created"):
                await client.call(SINK_SERVICE, "Push", pb.Sample(), empty_pb2.Empty, metadata=md)
            with pytest.raises(errors.DockyardError, match="unsupported response type"):
                await client.call(SINK_SERVICE, "Push", pb.Sample(id="wrong"), empty_pb2.Empty, metadata=md)
        await server.close()


def test_inline_marks_plain_methods_only() -> None:
    class AsyncMarked:
        @inline  # type: ignore[arg-type]
        async def Push(self, req: pb.Sample, ctx: RequestContext) -> empty_pb2.Empty:
            return empty_pb2.Empty()

    with pytest.raises(errors.InvalidArgument, match="must be a plain method"):
        TTRPCServer().register(SINK, AsyncMarked())
