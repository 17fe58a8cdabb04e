"""Calls between our ttrpc client and server over real unix sockets, and each against raw frames."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator

import pytest

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.containerd.services.events.v1 import events_pb2
from dockyard_common import errors
from dockyard_common.codes import Code
from dockyard_common.ttrpc import TTRPCClient, TTRPCServer, wire
from tests.unit.ttrpc_fixtures import (
    SERVICE,
    TASK,
    ScriptedTask,
    close_writer,
    fake_server,
    read_response,
    request_frame,
    response_frame,
    short_tmpdir,
)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    with short_tmpdir() as d:
        yield d


@pytest.fixture
async def task() -> ScriptedTask:
    return ScriptedTask()


@pytest.fixture
async def server(sock_dir: str, task: ScriptedTask) -> AsyncIterator[TTRPCServer]:
    srv = TTRPCServer()
    srv.register(TASK, task)
    await srv.listen(os.path.join(sock_dir, "shim.sock"))
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def client(server: TTRPCServer) -> AsyncIterator[TTRPCClient]:
    c = await TTRPCClient.connect(server.paths[0])
    try:
        yield c
    finally:
        await c.close()


async def state(client: TTRPCClient, id: str, **kw: object) -> shim_pb2.StateResponse:
    return await client.call(SERVICE, "State", shim_pb2.StateRequest(id=id), shim_pb2.StateResponse, **kw)  # type: ignore[arg-type]


async def test_round_trip_with_metadata_and_peer(client: TTRPCClient) -> None:
    resp = await state(client, "echo:web")
    assert resp.id == "web"
    md = await state(client, "md:containerd-namespace-ttrpc", metadata={"Containerd-Namespace-TTRPC": "default"})
    assert (md.id, md.bundle) == ("default", "containerd-namespace-ttrpc")
    conn = await client.call(SERVICE, "Connect", shim_pb2.ConnectRequest(id="x"), shim_pb2.ConnectResponse)
    assert conn.shim_pid == os.getpid() and conn.task_pid == os.getpid()  # peer credentials of this process


async def test_many_concurrent_calls_are_multiplexed(client: TTRPCClient, task: ScriptedTask) -> None:
    rng = random.Random(7)
    n = 300
    # sleeps in random order, so responses come back out of order on the one connection
    calls = [
        client.call(SERVICE, "State", shim_pb2.StateRequest(id=f"echo:{i}", exec_id=f"{rng.random() / 50}"),
                    shim_pb2.StateResponse)
        for i in range(n)
    ]
    slow = [state(client, f"sleep:{rng.random() / 20}") for _ in range(50)]
    results = await asyncio.gather(*calls, *slow)
    assert [r.id for r in results[:n]] == [str(i) for i in range(n)]
    assert task.finished == n + 50


async def test_client_stream_ids_are_odd_and_increasing(sock_dir: str) -> None:
    seen: list[int] = []

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(5):
            frame = await wire.read_frame(reader)
            seen.append(frame.stream_id)
            writer.write(response_frame(frame.stream_id, shim_pb2.StateResponse(id=str(frame.stream_id))))

    path = os.path.join(sock_dir, "fake.sock")
    async with fake_server(path, fake):
        async with await TTRPCClient.connect(path) as c:
            got = [(await state(c, "x")).id for _ in range(5)]
    assert seen == [1, 3, 5, 7, 9]
    assert got == ["1", "3", "5", "7", "9"]


@pytest.mark.parametrize(
    ("cmd", "kind", "text"),
    [
        ("missing:web", errors.NotFound, "container web: not found"),
        ("exists:web", errors.AlreadyExists, "container web: already exists"),
        ("precondition:not running", errors.FailedPrecondition, "not running: failed precondition"),
        ("nonsense", errors.InvalidArgument, "unknown command 'nonsense': invalid argument"),
        ("boom", errors.Unknown, "boom: unknown"),
        ("raw:7", errors.Unknown, "raw status: unknown"),  # PERMISSION_DENIED has no domain kind
        ("raw:14", errors.Unavailable, "raw status: unavailable"),
        ("none", errors.Unknown, "ttrpc: marshal called with nil: unknown"),
        ("wrong", errors.Internal, "ttrpc: error unsupported response type: ConnectResponse: internal"),
        ("self-cancel", errors.Cancelled, "ttrpc: containerd.task.v2.Task/State: context canceled"),
    ],
)
async def test_handler_errors_arrive_as_domain_errors(
    client: TTRPCClient, cmd: str, kind: type[errors.DockyardError], text: str
) -> None:
    with pytest.raises(errors.DockyardError) as info:
        await state(client, cmd)
    assert type(info.value) is kind
    assert str(info.value) == text
    assert (await state(client, "echo:after")).id == "after"  # the connection is still good


async def test_statuses_on_the_wire(server: TTRPCServer) -> None:
    reader, writer = await asyncio.open_unix_connection(server.paths[0])
    try:
        writer.write(request_frame(1, "State", shim_pb2.StateRequest(id="missing:a")))
        writer.write(request_frame(3, "Nope", b"", service="containerd.task.v2.Nope"))
        writer.write(request_frame(5, "Nope", b""))
        writer.write(request_frame(7, "State", b"\xff\xff"))  # not a StateRequest
        writer.write(request_frame(8, "State", shim_pb2.StateRequest(id="echo:x")))  # even id
        writer.write(wire.encode_frame(9, wire.TYPE_REQUEST, b"\x0a\xff"))  # not a Request
        writer.write(wire.encode_frame(11, wire.TYPE_RESPONSE, b""))  # ignored, as ttrpc does
        writer.write(request_frame(13, "State", shim_pb2.StateRequest(id="echo:ok")))
        got = dict([await read_response(reader) for _ in range(7)])
    finally:
        await close_writer(writer)
    assert sorted(got) == [1, 3, 5, 7, 8, 9, 13]
    assert (got[1].status.code, got[1].status.message) == (Code.NOT_FOUND, "container a: not found")
    assert (got[3].status.code, got[3].status.message) == (Code.UNIMPLEMENTED, "service containerd.task.v2.Nope")
    assert (got[5].status.code, got[5].status.message) == (Code.UNIMPLEMENTED, "method Nope")
    assert got[7].status.code == Code.INTERNAL
    assert got[7].status.message.startswith("ttrpc: error unmarshalling payload:")
    assert (got[8].status.code, got[8].status.message) == (
        Code.INVALID_ARGUMENT,
        "StreamID must be odd for client initiated streams",
    )
    assert got[9].status.code == Code.INVALID_ARGUMENT
    assert got[9].status.message.startswith("unmarshal request error:")
    assert got[13].HasField("status") and got[13].status.code == Code.OK  # ttrpc always sends a status
    assert shim_pb2.StateResponse.FromString(got[13].payload).id == "ok"


async def test_unknown_methods_through_the_client(client: TTRPCClient) -> None:
    with pytest.raises(errors.Unimplemented, match=r"^method Kill: not implemented$"):
        await client.call(SERVICE, "Kill", shim_pb2.KillRequest(id="a"), shim_pb2.StateResponse)
    with pytest.raises(errors.Unimplemented, match=r"^service x\.Y: not implemented$"):
        await client.call("x.Y", "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)


async def test_server_enforces_timeout_nano(server: TTRPCServer, task: ScriptedTask) -> None:
    reader, writer = await asyncio.open_unix_connection(server.paths[0])
    try:
        writer.write(request_frame(1, "State", shim_pb2.StateRequest(id="sleep:30"), timeout_nano=100_000_000))
        writer.write(request_frame(3, "State", shim_pb2.StateRequest(id="deadline"), timeout_nano=5_000_000_000))
        writer.write(request_frame(5, "State", shim_pb2.StateRequest(id="deadline")))
        got = dict([await read_response(reader) for _ in range(3)])
    finally:
        await close_writer(writer)
    assert got[1].status.code == Code.DEADLINE_EXCEEDED
    assert got[1].status.message == "ttrpc: containerd.task.v2.Task/State: context deadline exceeded"
    assert task.cancelled == 1  # the handler was stopped, not left running
    assert 4.0 < float(shim_pb2.StateResponse.FromString(got[3].payload).id) <= 5.0
    assert shim_pb2.StateResponse.FromString(got[5].payload).id == "none"


async def test_client_timeout(client: TTRPCClient, task: ScriptedTask) -> None:
    with pytest.raises(errors.DeadlineExceeded, match="State: context deadline exceeded"):
        await state(client, "block", timeout=0.1)
    # the server learnt the deadline too and stopped the handler
    await asyncio.wait_for(_until(lambda: task.cancelled == 1), 5)
    assert task.contexts[-1].deadline is not None
    with pytest.raises(errors.DeadlineExceeded):
        await state(client, "echo:x", timeout=0)
    assert (await state(client, "echo:still", timeout=5)).id == "still"


async def test_late_response_after_client_timeout_is_dropped(sock_dir: str) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await wire.read_frame(reader)
        second = await wire.read_frame(reader)
        writer.write(response_frame(first.stream_id, shim_pb2.StateResponse(id="late")))
        writer.write(response_frame(second.stream_id, shim_pb2.StateResponse(id="second")))
        await reader.read()

    path = os.path.join(sock_dir, "slow.sock")
    async with fake_server(path, slow):
        async with await TTRPCClient.connect(path) as c:
            with pytest.raises(errors.DeadlineExceeded):
                await state(c, "a", timeout=0.05)
            assert (await state(c, "b", timeout=5)).id == "second"


async def test_oversized_messages(server: TTRPCServer, client: TTRPCClient) -> None:
    # The client refuses to send what a peer would discard.
    with pytest.raises(errors.ResourceExhausted, match="exceed maximum message size of 4194304"):
        await state(client, "x" * (wire.MAX_MESSAGE_LENGTH + 1))
    # A handler's oversized response becomes RESOURCE_EXHAUSTED for that call only.
    with pytest.raises(errors.ResourceExhausted, match="exceed maximum message size"):
        await state(client, f"big:{wire.MAX_MESSAGE_LENGTH}")
    assert len((await state(client, f"big:{wire.MAX_MESSAGE_LENGTH - 100}")).bundle) == wire.MAX_MESSAGE_LENGTH - 100
    # A peer that sends one anyway gets RESOURCE_EXHAUSTED on that stream; the connection goes on.
    reader, writer = await asyncio.open_unix_connection(server.paths[0])
    try:
        writer.write(request_frame(1, "State", shim_pb2.StateRequest(id="x" * (wire.MAX_MESSAGE_LENGTH + 1))))
        writer.write(request_frame(3, "State", shim_pb2.StateRequest(id="echo:next")))
        got = dict([await read_response(reader) for _ in range(2)])
    finally:
        await close_writer(writer)
    assert got[1].status.code == Code.RESOURCE_EXHAUSTED
    assert got[1].status.message.startswith("message length 4194")
    assert shim_pb2.StateResponse.FromString(got[3].payload).id == "next"


async def test_client_gets_resource_exhausted_for_an_oversized_response_frame(sock_dir: str) -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await wire.read_frame(reader)
        writer.write(wire.encode_frame(first.stream_id, wire.TYPE_RESPONSE, b"\0" * (wire.MAX_MESSAGE_LENGTH + 1)))
        second = await wire.read_frame(reader)
        writer.write(response_frame(second.stream_id, shim_pb2.StateResponse(id="fine")))
        await reader.read()

    path = os.path.join(sock_dir, "huge.sock")
    async with fake_server(path, huge):
        async with await TTRPCClient.connect(path) as c:
            with pytest.raises(errors.ResourceExhausted):
                await state(c, "a")
            assert (await state(c, "b")).id == "fine"


async def test_connection_drop_cancels_in_flight_handlers(server: TTRPCServer, task: ScriptedTask) -> None:
    _, writer = await asyncio.open_unix_connection(server.paths[0])
    writer.write(request_frame(1, "State", shim_pb2.StateRequest(id="block")))
    await asyncio.wait_for(task.started.wait(), 5)
    await close_writer(writer)
    await asyncio.wait_for(_until(lambda: task.cancelled == 1), 5)


def test_register_refuses_misuse() -> None:
    srv = TTRPCServer()
    srv.register(TASK, ScriptedTask())
    with pytest.raises(errors.AlreadyExists):
        srv.register(TASK, ScriptedTask())

    class Sync:
        def State(self, req: object, ctx: object) -> None:
            return None

    with pytest.raises(errors.InvalidArgument, match="must be an async method"):
        TTRPCServer().register(TASK, Sync())

    class Streams:
        async def Subscribe(self, req: object, ctx: object) -> None:
            return None

    with pytest.raises(errors.InvalidArgument, match="no streams"):
        TTRPCServer().register(events_pb2.DESCRIPTOR.services_by_name["Events"], Streams())


async def _until(cond: object, interval: float = 0.01) -> None:
    while not cond():  # type: ignore[operator]
        await asyncio.sleep(interval)
