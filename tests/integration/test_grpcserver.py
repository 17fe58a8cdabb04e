"""supervisor/grpcserver: our HTTP/2 gRPC server, driven by grpcio's own client.

The daemon serves through it by default (the whole suite runs on it); these tests pin the
transport itself: all four call kinds, flow control beyond the default windows in both
directions, metadata, status codes, deadlines, cancellation, limits and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from supervisor.grpcserver import Server, h2

MiB = 1 << 20
events: dict[str, asyncio.Event] = {}


async def unary(request: bytes, context: Any) -> bytes:
    md = dict(context.invocation_metadata())
    if request == b"abort":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: ü%")
    if request == b"boom":
        raise RuntimeError("boom")
    if request == b"own-timeout":
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    if request == b"sleep":
        try:
            await asyncio.sleep(30)
        finally:
            events["sleep-ended"].set()
    context.set_trailing_metadata([("echo-trailer", md.get("echo", "")), ("echo-bin", md.get("blob-bin", b""))])
    return request[::-1]


async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size = (int(x) for x in request.split(b"x"))
    try:
        for i in range(count):
            yield bytes([i % 256]) * size
            if count > 1000:
                await asyncio.sleep(0.01)
    finally:
        events["stream-ended"].set()


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    h, n = hashlib.sha256(), 0
    async for chunk in requests:
        h.update(chunk)
        n += len(chunk)
    return f"{n} {h.hexdigest()}".encode()


async def first_only(requests: AsyncIterator[bytes], context: Any) -> bytes:
    async for msg in requests:
        await asyncio.sleep(0.1)  # the rest arrives meanwhile and waits, unread
        return msg  # answers without reading it
    return b""


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield b"echo:" + msg


HANDLERS = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "FirstOnly": grpc.stream_unary_rpc_method_handler(first_only),
})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    events.clear()
    events.update({"sleep-ended": asyncio.Event(), "stream-ended": asyncio.Event()})
    path = str(tmp_path / "s.sock")
    server = Server(max_message_size=4 * MiB)
    server.add_generic_rpc_handlers((HANDLERS,))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    try:
        yield server, path
    finally:
        await server.stop(1)


@contextlib.asynccontextmanager
async def one_method(path: str, service: str, handler: grpc.RpcMethodHandler) -> AsyncIterator[Server]:
    """A server on `path` answering `/<service>/Call` with `handler`."""
    server = Server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Call": handler}),))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def channel(served: tuple[Server, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix:{served[1]}", options=[
            ("grpc.max_receive_message_length", 16 * MiB), ("grpc.max_send_message_length", 16 * MiB),
            ("grpc.max_metadata_size", MiB)]) as ch:
        yield ch


async def test_unary_with_metadata_both_ways(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/test.Echo/Unary")(b"hello", metadata=[("echo", "x1"), ("blob-bin", b"\x00\xff")])
    assert await call == b"olleh"
    trailers = dict(await call.trailing_metadata())
    assert trailers["echo-trailer"] == "x1" and trailers["echo-bin"] == b"\x00\xff"
    assert await call.code() == grpc.StatusCode.OK


async def test_header_blocks_over_one_frame_both_ways(channel: grpc.aio.Channel) -> None:
    """A 40 KiB metadata value spans HEADERS + CONTINUATION frames, in and out."""
    big = "v" * (40 * 1024)
    call = channel.unary_unary("/test.Echo/Unary")(b"x", metadata=[("echo", big)])
    assert await call == b"x"
    assert dict(await call.trailing_metadata())["echo-trailer"] == big


async def test_server_stream_beyond_the_default_windows(channel: grpc.aio.Channel) -> None:
    got = [m async for m in channel.unary_stream("/test.Echo/ServerStream")(b"8x1048576")]
    assert [len(m) for m in got] == [MiB] * 8
    assert all(m == bytes([i]) * MiB for i, m in enumerate(got))


async def test_client_stream_beyond_the_default_windows(channel: grpc.aio.Channel) -> None:
    chunks = [os.urandom(MiB) for _ in range(12)]
    reply = await channel.stream_unary("/test.Echo/ClientStream")(iter(chunks))
    assert reply == f"{12 * MiB} {hashlib.sha256(b''.join(chunks)).hexdigest()}".encode()


async def test_bidi_ping_pong(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream("/test.Echo/Bidi")()
    for i in range(100):
        await call.write(str(i).encode())
        assert await call.read() == f"echo:{i}".encode()
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_many_concurrent_calls(channel: grpc.aio.Channel) -> None:
    fn = channel.unary_unary("/test.Echo/Unary")
    replies = await asyncio.gather(*(fn(str(i).encode()) for i in range(300)))
    assert replies == [str(i).encode()[::-1] for i in range(300)]


@pytest.mark.parametrize(("request_", "code", "details"), [
    (b"abort", grpc.StatusCode.NOT_FOUND, "no such thing: ü%"),
    (b"boom", grpc.StatusCode.UNKNOWN, "Unexpected <class 'RuntimeError'>: boom"),
    (b"own-timeout", grpc.StatusCode.UNKNOWN, "Unexpected <class 'TimeoutError'>: "),  # not the call's deadline
])
async def test_errors_carry_code_and_details(channel: grpc.aio.Channel, request_: bytes, code: grpc.StatusCode,
                                             details: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/test.Echo/Unary")(request_)
    assert err.value.code() == code and err.value.details() == details


async def test_unknown_method(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/test.Echo/Nope")(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_message_over_the_limit(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/test.Echo/Unary")(b"x" * (5 * MiB))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await channel.unary_unary("/test.Echo/Unary")(b"ok") == b"ko"  # the connection lives on


async def test_deadline_cancels_the_handler(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/test.Echo/Unary")(b"sleep", timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(events["sleep-ended"].wait(), 5)


async def test_client_cancel_stops_a_stream(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream("/test.Echo/ServerStream")(b"100000x10")
    assert await call.read() == bytes([0]) * 10
    call.cancel()
    await asyncio.wait_for(events["stream-ended"].wait(), 5)


async def test_garbage_client_does_not_hurt_others(served: tuple[Server, str], channel: grpc.aio.Channel) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX) as s:
        s.setblocking(False)
        await loop.sock_connect(s, served[1])
        await loop.sock_sendall(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(_read_until_closed(loop, s), 5)
    assert await channel.unary_unary("/test.Echo/Unary")(b"ab") == b"ba"


async def _read_until_closed(loop: asyncio.AbstractEventLoop, s: socket.socket) -> bool:
    while await loop.sock_recv(s, 65536):
        pass
    return True


async def test_stop_lets_calls_finish_and_removes_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "stop.sock")
    gate, entered = asyncio.Event(), asyncio.Event()

    async def slow(request: bytes, context: Any) -> bytes:
        entered.set()
        await gate.wait()
        return b"done"

    async with one_method(path, "test.Slow", grpc.unary_unary_rpc_method_handler(slow)) as server, \
            grpc.aio.insecure_channel(f"unix:{path}") as ch:
        call = ch.unary_unary("/test.Slow/Call")(b"")
        await asyncio.wait_for(entered.wait(), 20)  # the call is in flight
        stopping = asyncio.ensure_future(server.stop(5))
        await asyncio.sleep(0.2)  # a window: the stop is under way and must wait for the call
        gate.set()
        assert await call == b"done"
        await stopping
        assert not os.path.exists(path)


async def test_requests_answered_before_they_are_read_do_not_stall_the_connection(
        channel: grpc.aio.Channel) -> None:
    """Request data a handler never reads is given back to the connection's window when the
    call ends: 40 calls that each leave 1 MiB unread (40 MiB > the 16 MiB window) all work."""
    fn = channel.stream_unary("/test.Echo/FirstOnly")
    for _ in range(40):
        assert await asyncio.wait_for(fn(iter([b"first", b"x" * MiB])), 10) == b"first"


async def test_a_client_ignoring_flow_control_is_cut_off(tmp_path: Path) -> None:
    """Request data beyond the windows we granted ends the connection (FLOW_CONTROL_ERROR): a
    client cannot make the daemon buffer more than it allowed."""
    path = str(tmp_path / "fc.sock")

    async def lazy(requests: AsyncIterator[bytes], context: Any) -> bytes:
        await asyncio.sleep(5)  # reads nothing meanwhile, so nothing is credited back
        return b""

    async with one_method(path, "test.Lazy", grpc.stream_unary_rpc_method_handler(lazy)):
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX) as s:
            s.setblocking(False)
            await loop.sock_connect(s, path)
            headers = h2.encode_headers([(":method", "POST"), (":scheme", "http"), (":path", "/test.Lazy/Call"),
                                         (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
            await loop.sock_sendall(s, h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)
                                    + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, headers))
            chunk = h2.frame(h2.DATA, 0, 1, b"\0" * 16384)
            with contextlib.suppress(OSError):  # the server may close before all of it is sent
                await asyncio.wait_for(loop.sock_sendall(s, chunk * (17 * 64)), 10)
            received = bytearray()
            with contextlib.suppress(OSError):
                while data := await asyncio.wait_for(loop.sock_recv(s, 65536), 10):
                    received += data
        codes = [int.from_bytes(received[i + 13:i + 17], "big") for i in _frames_of(received, h2.GOAWAY)]
        assert codes == [h2.FLOW_CONTROL_ERROR]


def _frames_of(buf: bytearray, kind: int) -> list[int]:
    """Offsets of the frames of `kind` in a byte stream of frames."""
    out, pos = [], 0
    while pos + 9 <= len(buf):
        length = int.from_bytes(buf[pos:pos + 3], "big")
        if buf[pos + 3] == kind:
            out.append(pos)
        pos += 9 + length
    return out
