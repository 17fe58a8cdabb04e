"""supervisor/grpcserver against a hostile or unlucky peer (issue 11, items 4-11).

Each test pins one bound: the connection window comes back however calls end, PINGs are
limited and every answer waits for the peer to read, what one connection may buffer and keep
pending is bounded, silent/slow peers are cut off, header blocks are bounded in frames, every
frame's length and value rules hold with the right GOAWAY/RST code, and a malformed request
message is INTERNAL with a plain message on both servers the daemon can run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2 as ns_pb
from supervisor.grpcserver import Server, h2
from supervisor.grpcserver.decode import DecodeGuard
from tests.integration.grpc_stress import serving
from tests.integration.h2_raw import RawClient, grpc_message, request_headers

MiB = 1 << 20
LIMITS = h2.Limits(max_streams=32, handshake_timeout=0.5, read_timeout=0.5, idle_timeout=1.0,
                   close_grace=0.5)
gate: dict[str, asyncio.Event] = {}


async def unary(request: bytes, context: Any) -> bytes:
    if request == b"sleep":
        await asyncio.sleep(30)
    return request[::-1]


async def sleeper(requests: AsyncIterator[bytes], context: Any) -> bytes:
    """Reads one message, then sleeps: whatever else the client sends stays unread."""
    async for _ in requests:
        await asyncio.sleep(30)
    return b""


async def drain(requests: AsyncIterator[bytes], context: Any) -> bytes:
    n = 0
    async for msg in requests:
        n += len(msg)
    return str(n).encode()


async def stubborn(request: bytes, context: Any) -> bytes:
    """Outlives its stream: a reset cancels it, and it takes its time to finish."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await gate["release"].wait()
        raise
    return b""


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield msg


async def get_namespace(request: ns_pb.GetNamespaceRequest, context: Any) -> ns_pb.GetNamespaceResponse:
    return ns_pb.GetNamespaceResponse(namespace=ns_pb.Namespace(name=request.name))


async def list_stream(requests: AsyncIterator[ns_pb.GetNamespaceRequest], context: Any) -> ns_pb.GetNamespaceResponse:
    names = [r.name async for r in requests]
    return ns_pb.GetNamespaceResponse(namespace=ns_pb.Namespace(name=",".join(names)))


def _proto(fn: Any, kind: str) -> grpc.RpcMethodHandler:
    make = {"uu": grpc.unary_unary_rpc_method_handler, "su": grpc.stream_unary_rpc_method_handler}[kind]
    return make(fn, request_deserializer=ns_pb.GetNamespaceRequest.FromString,
                response_serializer=ns_pb.GetNamespaceResponse.SerializeToString)


HANDLERS = grpc.method_handlers_generic_handler("test.Hostile", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Sleeper": grpc.stream_unary_rpc_method_handler(sleeper),
    "Drain": grpc.stream_unary_rpc_method_handler(drain),
    "Stubborn": grpc.unary_unary_rpc_method_handler(stubborn),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Get": _proto(get_namespace, "uu"),
    "Names": _proto(list_stream, "su"),
})


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    gate.clear()
    gate["release"] = asyncio.Event()
    path = str(tmp_path / "h.sock")
    async with serving(path, HANDLERS, max_message_size=4 * MiB, limits=LIMITS) as server:
        try:
            yield server, path
        finally:
            gate["release"].set()  # before the server stops: a stubborn handler waits for it


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records of the server and of asyncio (an exception out of a protocol callback is
    asyncio's 'Fatal error on transport'); a test asserts it stays empty."""
    caplog.set_level(logging.WARNING)
    return caplog.records


def _errors(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info]


async def _ok_call(path: str) -> None:
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        assert await asyncio.wait_for(ch.unary_unary("/test.Hostile/Unary")(b"ab"), 10) == b"ba"


async def _settled(server: Server) -> None:
    """Until every call has ended (their tasks done)."""
    async with asyncio.timeout(10):
        while server._calls:
            await asyncio.sleep(0.02)


def _assert_books_balanced(server: Server) -> None:
    for conn in server._connections:
        assert conn.held == 0 and not conn.streams
        assert conn.recv_window + conn.recv_unacked == server.limits.buffer


# -- item 4: the connection window comes back however a stream ends ----------------------------

async def test_deadlines_on_sleeping_handlers_do_not_shrink_the_window(served: tuple[Server, str]) -> None:
    """The issue's hang: a deadline expires on a handler that left request data unread; the
    client's RST_STREAM must give that data back. 40 x 1 MiB > the 16 MiB window."""
    server, path = served
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        fn = ch.stream_unary("/test.Hostile/Sleeper")
        for _ in range(40):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(fn(iter([b"first", b"x" * MiB]), timeout=0.2), 10)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await asyncio.wait_for(ch.unary_unary("/test.Hostile/Unary")(b"ok"), 10) == b"ko"
        await _settled(server)
        _assert_books_balanced(server)


async def test_window_returns_to_its_size_after_any_mix_of_endings(served: tuple[Server, str]) -> None:
    server, path = served
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        sleeper_, drain_ = ch.stream_unary("/test.Hostile/Sleeper"), ch.stream_unary("/test.Hostile/Drain")
        unary_ = ch.unary_unary("/test.Hostile/Unary")

        async def completed() -> None:
            assert await drain_(iter([b"y" * 300_000] * 3)) == b"900000"

        async def timed_out() -> None:
            with pytest.raises(grpc.aio.AioRpcError):
                await sleeper_(iter([b"a", b"b" * 700_000]), timeout=0.3)

        async def cancelled() -> None:
            call = sleeper_(iter([b"a", b"c" * 500_000]))
            await asyncio.sleep(0.1)
            call.cancel()

        async def unary_timeout() -> None:
            with pytest.raises(grpc.aio.AioRpcError):
                await unary_(b"sleep", timeout=0.2)

        await asyncio.gather(*(f() for _ in range(5) for f in (completed, timed_out, cancelled, unary_timeout)))
    # raw resets: RST_STREAM with request data queued and unread, and stream errors
    raw = await RawClient.connect(path)
    await raw.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Sleeper"))
                   + h2.frame(h2.DATA, 0, 1, grpc_message(b"one") + grpc_message(b"z" * 9000)))
    await asyncio.sleep(0.1)
    await raw.send(h2.frame(h2.DATA, 0, 1, b"q" * 10000) + h2.frame(h2.RST_STREAM, 0, 1, struct.pack(">I", 8))
                   + h2.frame(h2.HEADERS, h2.END_HEADERS, 3, request_headers("/test.Hostile/Sleeper"))
                   + h2.frame(h2.DATA, 0, 3, grpc_message(b"x" * 100))
                   + h2.frame(h2.WINDOW_UPDATE, 0, 3, struct.pack(">I", 0)))  # a stream error
    assert await raw.until(lambda f: f[0] == h2.RST_STREAM and f[2] == 3, 5)
    await _settled(server)
    _assert_books_balanced(server)
    raw.close()


# -- item 5: PINGs are limited, answers wait for the peer to read ------------------------------

async def test_ping_flood_is_answered_with_too_many_pings(served: tuple[Server, str],
                                                          errors_logged: list[logging.LogRecord]) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    with contextlib.suppress(ConnectionError):
        await raw.send(h2.frame(h2.PING, 0, 0, b"12345678") * 1000)
    goaway = await raw.goaway()
    assert goaway is not None and goaway.code == h2.ENHANCE_YOUR_CALM and goaway.debug == b"too_many_pings"
    assert sum(1 for f in raw.frames if f[0] == h2.PING) <= LIMITS.ping_strikes + 1
    assert await raw.closed()
    await _ok_call(path)
    assert not _errors(errors_logged)


async def test_pings_between_answers_are_fine(served: tuple[Server, str]) -> None:
    """A client that gets data between its PINGs (grpc's BDP probes) is never a striker."""
    _, path = served
    raw = await RawClient.connect(path)
    for sid in range(1, 20, 2):
        await raw.send(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, request_headers("/test.Hostile/Unary"))
                       + h2.frame(h2.DATA, h2.END_STREAM, sid, grpc_message(b"x")))
        answer = await raw.until(lambda f: f[0] == h2.HEADERS and f[1] & h2.END_STREAM)
        assert answer is not None and answer[2] == sid
        await raw.send_frame(h2.PING, 0, 0, b"pingpong")
        assert await raw.until(lambda f: f[0] == h2.PING and f[1] & h2.ACK)
    raw.close()


async def test_a_peer_that_never_reads_cannot_grow_our_write_buffer(served: tuple[Server, str]) -> None:
    """SETTINGS (each one ACKed, no rate limit of its own) from a peer that reads nothing: the
    server stops reading once its write buffer is full, so what it queues stays bounded."""
    server, path = served
    loop = asyncio.get_running_loop()
    flood = h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0) * 100_000  # 900 kB in, 900 kB of ACKs out
    with socket.socket(socket.AF_UNIX) as s:  # a plain socket: nothing reads what arrives
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        await loop.sock_connect(s, path)
        sending = asyncio.ensure_future(loop.sock_sendall(s, flood * 20))  # blocks: the server stops reading
        async with asyncio.timeout(5):
            while not server._connections or not next(iter(server._connections)).reading_paused:
                await asyncio.sleep(0.01)
        (conn,) = server._connections
        await asyncio.sleep(0.2)  # were it still reading, its buffer would grow meanwhile
        assert conn.reading_paused and not sending.done()
        assert conn.transport is not None and conn.transport.get_write_buffer_size() < 2 * MiB
        sending.cancel()
        with contextlib.suppress(BaseException):
            await sending
    await _ok_call(path)


# -- item 6: what one connection may buffer ----------------------------------------------------

async def test_partial_messages_cannot_hold_more_than_the_connection_buffer(served: tuple[Server, str]) -> None:
    """Five streams each start a 4 MiB message and stop short, all within the windows we
    granted. The server holds at most its buffer (16 MiB), and refuses one call
    (RESOURCE_EXHAUSTED) rather than stall: the others then complete."""
    server, path = served
    assert server.limits.buffer == 16 * MiB
    raw = await RawClient.connect(path)
    sids = [1, 3, 5, 7, 9]
    await raw.send(b"".join(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, request_headers("/test.Hostile/Drain"))
                            for sid in sids))
    body = b"m" * (4 * MiB - 100)
    sent = 0
    window = server.limits.buffer
    for sid in sids:  # as much of each message as the connection window allows
        part = (grpc_message(body[:0], declared=4 * MiB) + body)[:max(0, min(len(body), window - sent))]
        for i in range(0, len(part), 16384):
            await raw.send_frame(h2.DATA, 0, sid, part[i:i + 16384])
        sent += len(part)
    (conn,) = server._connections
    refused = await raw.until(lambda f: f[0] == h2.HEADERS and b"grpc-status" in f[3], 10)
    assert refused is not None
    status = raw.headers_of(refused[3])
    assert status["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "partial requests" in status["grpc-message"]
    assert conn.held <= server.limits.buffer
    # the refused stream's bytes came back: the others can finish their messages
    credit = await raw.until(lambda f: f[0] == h2.WINDOW_UPDATE and f[2] == 0, 10)
    assert credit is not None
    rest = [sid for sid in sids if sid != refused[2]][:2]
    for sid in rest:
        await raw.send_frame(h2.DATA, h2.END_STREAM, sid, b"")
    raw.close()
    await _settled(server)


async def test_concurrent_large_messages_from_grpcio_end_without_hanging(served: tuple[Server, str]) -> None:
    """grpcio's client interleaves streams: several ~4 MiB messages at once either all fit or
    some are refused; every call ends, and the connection serves on."""
    server, path = served
    async with grpc.aio.insecure_channel(f"unix:{path}", options=[("grpc.max_send_message_length", 8 * MiB)]) as ch:
        fn = ch.stream_unary("/test.Hostile/Drain")
        results = await asyncio.wait_for(asyncio.gather(
            *(fn(iter([os.urandom(4 * MiB - 64)])) for _ in range(6)), return_exceptions=True), 60)
        for r in results:
            if isinstance(r, grpc.aio.AioRpcError):
                assert r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, r
            else:
                assert r == str(4 * MiB - 64).encode()
        assert await ch.unary_unary("/test.Hostile/Unary")(b"ok") == b"ko"
    await _settled(server)
    _assert_books_balanced(server)


# -- item 7: calls outliving their streams are bounded -----------------------------------------

async def test_rapid_resets_cannot_pile_up_pending_calls(served: tuple[Server, str]) -> None:
    server, path = served
    raw = await RawClient.connect(path)
    request = request_headers("/test.Hostile/Stubborn")
    flood = b"".join(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, request)
                     + h2.frame(h2.RST_STREAM, 0, sid, struct.pack(">I", h2.CANCEL)) for sid in range(1, 4001, 2))
    await raw.send(flood)
    refused = await raw.until(lambda f: f[0] == h2.RST_STREAM and f[3] == struct.pack(">I", h2.REFUSED_STREAM), 10)
    assert refused is not None
    await asyncio.sleep(0.2)
    assert len(server._calls) <= LIMITS.max_streams
    (conn,) = server._connections
    assert conn.calls <= LIMITS.max_streams and not conn.streams
    gate["release"].set()
    await _settled(server)
    assert conn.calls == 0
    raw.close()
    await _ok_call(path)


# -- item 8: handshake, slow and idle peers are cut off ----------------------------------------

@pytest.mark.parametrize("sent", [b"", h2.PREFACE[:10], h2.PREFACE], ids=["silent", "half-preface", "no-settings"])
async def test_handshake_timeout(served: tuple[Server, str], sent: bytes) -> None:
    _, path = served
    raw = await RawClient.connect(path, handshake=False)
    await raw.send(sent)
    assert await raw.closed(5)
    assert any(f[0] == h2.GOAWAY for f in raw.frames)


async def test_idle_connection_is_closed(served: tuple[Server, str]) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    goaway = await raw.goaway(5)
    assert goaway is not None and goaway.code == h2.NO_ERROR and goaway.debug == b"idle"
    assert await raw.closed(5)


async def test_a_call_in_progress_keeps_the_connection(served: tuple[Server, str]) -> None:
    """Idle means no open stream: a quiet bidi call (2x the idle timeout) is not idle."""
    _, path = served
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        call = ch.stream_stream("/test.Hostile/Bidi")()
        await call.write(b"1")
        assert await call.read() == b"1"
        await asyncio.sleep(2 * LIMITS.idle_timeout)
        await call.write(b"2")
        assert await call.read() == b"2"
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("trickle", [
    h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Unary")),  # a frame a byte at a time
    h2.frame(h2.HEADERS, 0, 1, request_headers("/test.Hostile/Unary")) + h2.frame(h2.CONTINUATION, 0, 1) * 40,
], ids=["frame", "header-block"])
async def test_slowloris_is_cut_off(served: tuple[Server, str], trickle: bytes) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    reader = asyncio.ensure_future(raw.goaway(10))
    with contextlib.suppress(ConnectionError):
        for i in range(0, len(trickle), 5):  # the header block or frame would end after ~3 s
            if reader.done():
                break
            await raw.send(trickle[i:i + 5])
            await asyncio.sleep(0.1)
    goaway = await reader
    assert goaway is not None and goaway.code == h2.PROTOCOL_ERROR and b"not completed in time" in goaway.debug


async def test_a_request_message_sent_a_byte_at_a_time_is_refused(served: tuple[Server, str]) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    await raw.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Unary")))
    message = grpc_message(b"x" * 200)
    answered = asyncio.ensure_future(raw.until(lambda f: f[0] == h2.HEADERS and f[1] & h2.END_STREAM, 10))
    for i in range(len(message)):  # whole frames, one byte each: every frame completes
        if answered.done():
            break
        await raw.send_frame(h2.DATA, 0, 1, message[i:i + 1])
        await asyncio.sleep(0.02)
    trailers = await answered
    assert trailers is not None
    status = raw.headers_of(trailers[3])
    assert status["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "not completed within" in status["grpc-message"]
    raw.close()


# -- item 9: header blocks are bounded in frames, not only bytes --------------------------------

async def test_empty_continuation_flood(served: tuple[Server, str]) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    with contextlib.suppress(ConnectionError):
        await raw.send(h2.frame(h2.HEADERS, 0, 1, request_headers("/test.Hostile/Unary"))
                       + h2.frame(h2.CONTINUATION, 0, 1) * 10_000)
    goaway = await raw.goaway()
    assert goaway is not None and goaway.code == h2.ENHANCE_YOUR_CALM
    await _ok_call(path)


# -- item 10: every frame's length and value rules ----------------------------------------------

_OPEN = h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Sleeper"))
CONNECTION_ERRORS = [
    ("window update of 3 bytes", h2.frame(h2.WINDOW_UPDATE, 0, 0, b"\0\0\1"), h2.FRAME_SIZE_ERROR),
    ("window update of 5 bytes on a stream", _OPEN + h2.frame(h2.WINDOW_UPDATE, 0, 1, b"\0\0\0\1\0"),
     h2.FRAME_SIZE_ERROR),
    ("connection window update of 0", h2.frame(h2.WINDOW_UPDATE, 0, 0, bytes(4)), h2.PROTOCOL_ERROR),
    ("connection window overflow", h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW)),
     h2.FLOW_CONTROL_ERROR),
    ("window update on an idle stream", h2.frame(h2.WINDOW_UPDATE, 0, 7, struct.pack(">I", 1)), h2.PROTOCOL_ERROR),
    ("ping of 7 bytes", h2.frame(h2.PING, 0, 0, bytes(7)), h2.FRAME_SIZE_ERROR),
    ("ping on a stream", h2.frame(h2.PING, 0, 1, bytes(8)), h2.PROTOCOL_ERROR),
    ("settings of 5 bytes", h2.frame(h2.SETTINGS, 0, 0, bytes(5)), h2.FRAME_SIZE_ERROR),
    ("settings ack with payload", h2.frame(h2.SETTINGS, h2.ACK, 0, bytes(6)), h2.FRAME_SIZE_ERROR),
    ("settings on a stream", h2.frame(h2.SETTINGS, 0, 1), h2.PROTOCOL_ERROR),
    ("enable push 2", h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.ENABLE_PUSH, 2)), h2.PROTOCOL_ERROR),
    ("initial window too large", h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.INITIAL_WINDOW_SIZE, 1 << 31)),
     h2.FLOW_CONTROL_ERROR),
    ("max frame size too small", h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.MAX_FRAME_SIZE, 100)),
     h2.PROTOCOL_ERROR),
    ("rst_stream of 3 bytes", _OPEN + h2.frame(h2.RST_STREAM, 0, 1, bytes(3)), h2.FRAME_SIZE_ERROR),
    ("rst_stream on stream 0", h2.frame(h2.RST_STREAM, 0, 0, bytes(4)), h2.PROTOCOL_ERROR),
    ("rst_stream on an idle stream", h2.frame(h2.RST_STREAM, 0, 5, bytes(4)), h2.PROTOCOL_ERROR),
    ("goaway of 7 bytes", h2.frame(h2.GOAWAY, 0, 0, bytes(7)), h2.FRAME_SIZE_ERROR),
    ("goaway on a stream", h2.frame(h2.GOAWAY, 0, 1, bytes(8)), h2.PROTOCOL_ERROR),
    ("data on stream 0", h2.frame(h2.DATA, 0, 0, b"x"), h2.PROTOCOL_ERROR),
    ("data on an idle stream", h2.frame(h2.DATA, 0, 9, b"x"), h2.PROTOCOL_ERROR),
    ("padding longer than the frame", _OPEN + h2.frame(h2.DATA, h2.PADDED, 1, b"\x05abc"), h2.PROTOCOL_ERROR),
    ("padded frame without pad length", _OPEN + h2.frame(h2.DATA, h2.PADDED, 1, b""), h2.FRAME_SIZE_ERROR),
    ("headers on stream 0", h2.frame(h2.HEADERS, h2.END_HEADERS, 0, b""), h2.PROTOCOL_ERROR),
    ("headers on an even stream", h2.frame(h2.HEADERS, h2.END_HEADERS, 2, b""), h2.PROTOCOL_ERROR),
    ("headers priority cut short", h2.frame(h2.HEADERS, h2.END_HEADERS | h2.PRIORITY_FLAG, 1, b"\0\0"),
     h2.FRAME_SIZE_ERROR),
    ("frame over max size", h2.frame(h2.DATA, 0, 1, bytes(16385)), h2.FRAME_SIZE_ERROR),
    ("continuation without headers", h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, b""), h2.PROTOCOL_ERROR),
    ("header block interrupted", h2.frame(h2.HEADERS, 0, 1, b"") + h2.frame(h2.PING, 0, 0, bytes(8)),
     h2.PROTOCOL_ERROR),
    ("push promise", h2.frame(h2.PUSH_PROMISE, h2.END_HEADERS, 1, bytes(4)), h2.PROTOCOL_ERROR),
    ("priority on stream 0", h2.frame(h2.PRIORITY, 0, 0, bytes(5)), h2.PROTOCOL_ERROR),
    ("bad hpack", h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), h2.COMPRESSION_ERROR),
]


@pytest.mark.parametrize(("what", "frames", "code"), CONNECTION_ERRORS, ids=[c[0] for c in CONNECTION_ERRORS])
async def test_connection_errors_are_goaways(served: tuple[Server, str], errors_logged: list[logging.LogRecord],
                                             what: str, frames: bytes, code: int) -> None:
    _, path = served
    raw = await RawClient.connect(path)
    with contextlib.suppress(ConnectionError):
        await raw.send(frames)
    goaway = await raw.goaway()
    assert goaway is not None and goaway.code == code, goaway
    assert await raw.closed()
    await _ok_call(path)
    assert not _errors(errors_logged)


STREAM_ERRORS = [
    ("stream window update of 0", _OPEN + h2.frame(h2.WINDOW_UPDATE, 0, 1, bytes(4)), h2.PROTOCOL_ERROR),
    ("stream window overflow", _OPEN + h2.frame(h2.WINDOW_UPDATE, 0, 1, struct.pack(">I", h2.MAX_WINDOW)),
     h2.FLOW_CONTROL_ERROR),
    ("priority of 4 bytes", h2.frame(h2.PRIORITY, 0, 3, bytes(4)), h2.FRAME_SIZE_ERROR),
    ("priority on itself", h2.frame(h2.PRIORITY, 0, 3, struct.pack(">IB", 3, 0)), h2.PROTOCOL_ERROR),
    ("data after end of stream", h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1,
                                          request_headers("/test.Hostile/Stubborn")) + h2.frame(h2.DATA, 0, 1, b"x"),
     h2.STREAM_CLOSED),
    ("trailers without end of stream", _OPEN + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, h2.encode_headers([("a", "b")])),
     h2.PROTOCOL_ERROR),
    ("missing :path", h2.frame(h2.HEADERS, h2.END_HEADERS, 1, h2.encode_headers(
        [(":method", "POST"), (":scheme", "http"), ("content-type", "application/grpc")])), h2.PROTOCOL_ERROR),
    ("uppercase header", h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Unary", X="y")),
     h2.PROTOCOL_ERROR),
    ("connection header", h2.frame(h2.HEADERS, h2.END_HEADERS, 1, request_headers("/test.Hostile/Unary",
                                                                                  connection="close")),
     h2.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(("what", "frames", "code"), STREAM_ERRORS, ids=[c[0] for c in STREAM_ERRORS])
async def test_stream_errors_are_resets(served: tuple[Server, str], errors_logged: list[logging.LogRecord],
                                        what: str, frames: bytes, code: int) -> None:
    server, path = served
    raw = await RawClient.connect(path)
    await raw.send(frames)
    rst = await raw.until(lambda f: f[0] == h2.RST_STREAM, 5)
    assert rst is not None and struct.unpack(">I", rst[3])[0] == code
    # the connection lives on
    await raw.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 11, request_headers("/test.Hostile/Unary"))
                   + h2.frame(h2.DATA, h2.END_STREAM, 11, grpc_message(b"ab")))
    answer = await raw.until(lambda f: f[0] == h2.DATA and f[2] == 11, 5)
    assert answer is not None and answer[3][5:] == b"ba"
    raw.close()
    gate["release"].set()
    await _settled(server)
    assert not _errors(errors_logged)


async def test_the_last_resort_guard_turns_a_bug_into_goaway(served: tuple[Server, str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """An exception out of frame handling (a bug) is GOAWAY INTERNAL_ERROR and one log line,
    not asyncio's 'Fatal error on transport'."""
    _, path = served

    def broken(self: h2.Connection, flags: int, sid: int, payload: bytes) -> None:
        raise KeyError("bug")
    monkeypatch.setattr(h2.Connection, "_ping", broken)
    raw = await RawClient.connect(path)
    await raw.send(h2.frame(h2.PING, 0, 0, bytes(8)) * 50)
    goaway = await raw.goaway()
    assert goaway is not None and goaway.code == h2.INTERNAL_ERROR
    assert await raw.closed()
    mine = [r for r in caplog.records if r.name == "dockyard.grpc"]
    assert len(mine) == 1 and "failed unexpectedly" in mine[0].getMessage()
    assert not [r for r in caplog.records if r.name == "asyncio"]
    monkeypatch.undo()
    await _ok_call(path)


# -- item 11: a malformed request message ------------------------------------------------------

def _assert_unmarshal_error(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details().startswith("grpc: error unmarshalling request: ")
    assert "<class" not in err.details() and "Error'>" not in err.details() and "DecodeError" not in err.details()


async def _malformed_calls(path: str, service: str) -> None:
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary(f"/{service}/Get")(b"\xff\xff\xff")
        _assert_unmarshal_error(err.value)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.stream_unary(f"/{service}/Names")(iter([ns_pb.GetNamespaceRequest(name="a").SerializeToString(),
                                                              b"\x0a\xff"]))
        _assert_unmarshal_error(err.value)
        good = ns_pb.GetNamespaceRequest(name="ok").SerializeToString()
        reply = await ch.unary_unary(f"/{service}/Get")(good)
        assert ns_pb.GetNamespaceResponse.FromString(reply).namespace.name == "ok"


async def test_malformed_protobuf_on_our_server(served: tuple[Server, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await _malformed_calls(served[1], "test.Hostile")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_malformed_protobuf_on_grpcio_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """grpcio's aio server, with the guard the daemon puts on its generic handler."""
    caplog.set_level(logging.DEBUG)
    path = str(tmp_path / "g.sock")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((DecodeGuard(HANDLERS),))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    try:
        await _malformed_calls(path, "test.Hostile")
    finally:
        await server.stop(0)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("which", ["dockyard", "grpcio"])
async def test_malformed_protobuf_on_the_daemon(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.daemon import remove_base, start_daemon
    monkeypatch.setenv("DOCKYARD_GRPC_SERVER", which)
    d = start_daemon()
    try:
        async with grpc.aio.insecure_channel(f"unix:{d.address}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/containerd.services.namespaces.v1.Namespaces/Get")(
                    b"\x0a\xff\x01", metadata=[("containerd-namespace", "default")])
            _assert_unmarshal_error(err.value)
    finally:
        assert d.stop() == 0
        log = d.log()
        remove_base(d)
    assert "Traceback" not in log and "DecodeError" not in log
