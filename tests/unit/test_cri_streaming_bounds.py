"""Hostile clients of the CRI streaming server (supervisor/cri/streaming/), the real server on a real
socket in this process, a fake runtime behind it: what a client can make the daemon hold, and
that honest exec and port-forward sessions keep working meanwhile.

- DATA frames announcing 16 MiB and trickled: their bytes go on as they arrive (to the process's
  stdin, or dropped for a stream nobody opened), so what the server holds stays within its
  per-session budget however many connections do it (tracemalloc's peak, the server's counters);
- a control frame announcing 16 MiB is refused from its header, a header block that inflates past
  the cap (a zlib bomb) is refused having inflated no more than the cap, each with GOAWAY;
- a WebSocket frame announcing more than a message may hold is refused from its header (1009);
- connections are counted: past the session cap an upgrade gets 503 (its token still good), past
  the handshake cap the oldest handshaking connection goes, and one that does not upgrade within
  the handshake timeout is closed (408), whether it sends nothing or its headers a byte at a time.

Clients are raw sockets: blocking ones in threads (so the server's loop runs meanwhile) or
asyncio streams for connections that only wait. Each test runs on asyncio's loop and on uvloop's
(the daemon's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvloop

from supervisor.cri.streaming import server as streaming_server
from supervisor.cri.streaming.backpressure import MAX_QUEUED
from supervisor.cri.streaming.server import StreamServer
from supervisor.cri.streaming.spdy import (
    SYN_REPLY,
    SYN_STREAM,
    control,
    data_frame,
    encode_headers,
)
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY
from supervisor.cri.streaming.types import STDOUT, ExecRequest, PortForwardRequest
from tests.spdy_raw import ANNOUNCED, PROTOCOL_ERROR, SpdyClient, goaway_status
from tests.waiting import wait_until_async

READ = 256 << 10  # what one read of asyncio's socket transport takes at most


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}
on_both_loops = pytest.mark.parametrize("loop", LOOPS)


# ----- the fake runtime ---------------------------------------------------------------------------


@dataclass
class Proc:
    """An exec's process: `cat` echoes its stdin, anything else swallows it."""

    echo: bool
    stdin_bytes: int = 0
    closed: bool = False
    stdin_eof_ends: bool = False
    _out: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        while (data := await self._out.get()) is not None:
            yield STDOUT, data

    async def write(self, data: bytes) -> None:
        self.stdin_bytes += len(data)
        if self.echo:
            self._out.put_nowait(data)

    async def close_stdin(self) -> None:
        self._out.put_nowait(None)

    async def resize(self, width: int, height: int) -> None:
        pass

    async def exit_code(self) -> int | None:
        return 0

    async def close(self) -> None:
        self.closed = True


class Backend:
    def __init__(self) -> None:
        self.procs: list[Proc] = []

    async def exec(self, request: ExecRequest) -> Proc:
        proc = Proc(echo=request.cmd == ("cat",))
        self.procs.append(proc)
        return proc

    async def attach(self, request: object) -> Proc:
        raise AssertionError("no attach in these tests")

    async def dial(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)


@dataclass
class Rig:
    server: StreamServer
    backend: Backend
    echo_port: int  # a TCP echo server: the pod's port for port-forward

    @property
    def port(self) -> int:
        return urlsplit(self.server._base).port or 0

    async def exec_url(self, cmd: tuple[str, ...] = ("cat",), stdin: bool = True) -> str:
        return await self.server.url(ExecRequest("ctr", cmd, stdin=stdin, stdout=True))

    async def forward_url(self) -> str:
        return await self.server.url(PortForwardRequest("pod", (self.echo_port,)))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def rig(server: StreamServer | None = None) -> AsyncIterator[Rig]:
    backend = Backend()
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    server = server or StreamServer(backend)
    server.backend = backend
    try:
        r = Rig(server, backend, echo.sockets[0].getsockname()[1])
        await r.exec_url()  # starts the server
        yield r
    finally:
        await server.close()
        echo.close()
        await echo.wait_closed()


# ----- raw clients --------------------------------------------------------------------------------


def honest_exec(url: str) -> dict[str, object]:
    """`kubectl exec -i ... cat` with "hello" as input: what came back on stdout, and the status."""
    c = SpdyClient(url, "v4.channel.k8s.io")
    try:
        head = c.upgrade()
        assert head.startswith(b"HTTP/1.1 101"), head
        c.syn(1, {"streamType": "error"})
        c.syn(3, {"streamType": "stdin"})
        c.syn(5, {"streamType": "stdout"})
        c.sock.sendall(data_frame(3, b"hello") + data_frame(3, b"", fin=True))
        out, status = b"", b""
        for is_control, sid, _, payload in c.until_end():
            if not is_control and sid == 5:
                out += payload
            elif not is_control and sid == 1:
                status += payload
        return {"stdout": out, "status": json.loads(status or b"{}")}
    finally:
        c.close()


def hold(url: str) -> SpdyClient:
    """A session that opens its streams (stdin to a process that swallows it) and holds on."""
    c = SpdyClient(url, "v4.channel.k8s.io")
    head = c.upgrade()
    assert head.startswith(b"HTTP/1.1 101"), head
    for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout")):
        c.syn(sid, {"streamType": kind})
    return c


def honest_forward(url: str, port: int) -> bytes:
    """`kubectl port-forward` of one connection sending "ping" to the pod's echo server."""
    c = SpdyClient(url, "portforward.k8s.io")
    try:
        head = c.upgrade()
        assert head.startswith(b"HTTP/1.1 101"), head
        c.syn(1, {"streamType": "error", "port": str(port), "requestID": "0"})
        c.syn(3, {"streamType": "data", "port": str(port), "requestID": "0"})
        c.sock.sendall(data_frame(3, b"ping"))
        got = b""
        while got != b"ping":
            f = c.frame()
            assert f is not None, f"the session ended with {got!r}"
            if not f[0] and f[1] == 3:
                got += f[3]
        return got
    finally:
        c.close()


def _tcp_queues(port: int) -> dict[tuple[int, int], tuple[int, int]]:
    """(local port, remote port) → (bytes sent not yet acknowledged, bytes received not yet read) of
    this network namespace's IPv4 TCP sockets with `port` at either end (/proc/net/tcp)."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            if port in (local, remote):
                tx, rx = (int(x, 16) for x in fields[4].split(":"))
                out[(local, remote)] = (tx, rx)
    return out


def _unread(server_port: int, clients: list[SpdyClient]) -> int:
    """Bytes the clients sent that the server process has not read yet, by the kernel's queues."""
    queues = _tcp_queues(server_port)
    total = 0
    for c in clients:
        mine = c.sock.getsockname()[1]
        total += queues.get((mine, server_port), (0, 0))[0] + queues.get((server_port, mine), (0, 0))[1]
    return total


async def _read_all(reader: asyncio.StreamReader, deadline: float = 30) -> bytes:
    """All a connection gets until the server closes it (AssertionError past the deadline)."""
    try:
        return await asyncio.wait_for(reader.read(), deadline)
    except TimeoutError:
        raise AssertionError(f"the server did not close the connection within {deadline} s") from None
    except ConnectionResetError:
        return b""


# ----- the tests ----------------------------------------------------------------------------------


@on_both_loops
def test_trickled_16_mib_data_frames_are_handed_on_not_held(loop: str) -> None:
    """16 connections each announce a 16 MiB DATA frame and send 4 MiB of it (64 MiB in all): half
    to their exec's stdin, half to a stream they never opened. The process gets its bytes before
    the frame ends and the rest is dropped, so the server never holds more than its per-session
    budget plus one read per connection (it held every byte before)."""
    LOOPS[loop](_trickled_16_mib_data_frames_are_handed_on_not_held())


async def _trickled_16_mib_data_frames_are_handed_on_not_held() -> None:
    n, trickle, piece = 16, 4 << 20, 64 << 10
    chunk = memoryview(os.urandom(piece))
    async with rig() as r:
        clients = []
        for _ in range(n):
            c = SpdyClient(await r.exec_url(("sink",)), "v4.channel.k8s.io")
            clients.append(c)
            head = await asyncio.to_thread(c.upgrade)
            assert head.startswith(b"HTTP/1.1 101"), head
            for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout")):
                await asyncio.to_thread(c.syn, sid, {"streamType": kind})
        await wait_until_async(lambda: len(r.backend.procs) == n, what="the execs to start")

        def send(c: SpdyClient, stream_id: int) -> None:
            c.sock.sendall(struct.pack(">II", stream_id, ANNOUNCED))  # a DATA frame's header
            for _ in range(trickle // piece):
                c.sock.sendall(chunk)

        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            await asyncio.gather(*(asyncio.to_thread(send, c, 3 if i % 2 else 99) for i, c in enumerate(clients)))
            await wait_until_async(lambda: _unread(r.port, clients) == 0, timeout=60,
                                   what="the server to read what the clients sent")
            expected = [0] * (n // 2) + [trickle] * (n // 2)  # what the processes get, before the frames end
            with contextlib.suppress(AssertionError):  # (checked below, after the memory)
                await wait_until_async(lambda: sorted(p.stdin_bytes for p in r.backend.procs) == expected,
                                       timeout=10)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        try:
            bound = n * (MAX_QUEUED + READ)
            assert peak < bound, f"the server's allocations peaked {peak >> 20} MiB above the start for " \
                                 f"{(n * trickle) >> 20} MiB sent (bound {bound >> 20} MiB)"
            assert sorted(p.stdin_bytes for p in r.backend.procs) == expected, "stdin bytes held back"
            assert r.server.stats().buffered == 0
        finally:
            for c in clients:
                c.close()


@on_both_loops
def test_a_control_frame_announcing_16_mib_is_refused_from_its_header(loop: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Control frames are collected whole, so one announcing 16 MiB ends the session with GOAWAY
    PROTOCOL_ERROR at its header, not once 16 MiB were held; on 16 connections at once."""
    LOOPS[loop](_a_control_frame_announcing_16_mib_is_refused_from_its_header(caplog))


async def _a_control_frame_announcing_16_mib_is_refused_from_its_header(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dockyard.cri.streaming")
    n = 16
    async with rig() as r:

        def hostile(url: str) -> list[tuple[bool, int, int, bytes]]:
            c = SpdyClient(url, "v4.channel.k8s.io")
            try:
                assert c.upgrade().startswith(b"HTTP/1.1 101")
                c.syn(1, {"streamType": "error"})
                with contextlib.suppress(OSError):  # the server may close before all is sent
                    c.sock.sendall(control(SYN_STREAM, 0, b"")[:4] + struct.pack(">I", ANNOUNCED) + bytes(64 << 10))
                return c.until_end()
            finally:
                c.close()

        urls = [await r.exec_url() for _ in range(n)]
        ends = await asyncio.gather(*(asyncio.to_thread(hostile, u) for u in urls))
        assert all(goaway_status(frames) == PROTOCOL_ERROR for frames in ends), ends
        await wait_until_async(lambda: r.server.stats().sessions == 0, what="the sessions to end")
        # an honest session still works
        result = await asyncio.to_thread(honest_exec, await r.exec_url())
        assert result == {"stdout": b"hello", "status": {"metadata": {}, "status": "Success"}}
    assert any("control frame" in m and str(ANNOUNCED) in m for m in caplog.messages), caplog.messages


@on_both_loops
def test_a_header_block_zlib_bomb_is_refused(loop: str) -> None:
    """A SYN_STREAM header block of ~8 KiB that inflates to 8 MiB, and one that inflates to just
    under 1 MiB (taken before, and kept as the stream's headers): GOAWAY PROTOCOL_ERROR, having
    inflated no more than the cap (tracemalloc's peak)."""
    LOOPS[loop](_a_header_block_zlib_bomb_is_refused())


async def _a_header_block_zlib_bomb_is_refused() -> None:
    async with rig() as r:

        def bomb(url: str, inflated: int) -> tuple[list[tuple[bool, int, int, bytes]], int]:
            c = SpdyClient(url, "v4.channel.k8s.io")
            try:
                assert c.upgrade().startswith(b"HTTP/1.1 101")
                block = encode_headers({"streamType": "error", "x": "\0" * (inflated - 40)})
                deflate = zlib.compressobj(9, zdict=DICTIONARY)  # made before the server's peak is measured
                wire = deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)
                del block
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                c.sock.sendall(control(SYN_STREAM, 0, struct.pack(">IIH", 1, 0, 0) + wire))
                frames = c.until_end()
                return frames, tracemalloc.get_traced_memory()[1] - base
            finally:
                c.close()

        tracemalloc.start()
        try:
            for inflated in (8 << 20, (1 << 20) - 64):
                frames, peak = await asyncio.to_thread(bomb, await r.exec_url(), inflated)
                assert not any(f[0] and f[1] == SYN_REPLY for f in frames), f"{inflated} bytes of headers taken"
                assert goaway_status(frames) == PROTOCOL_ERROR, frames
                assert peak < 512 << 10, f"{peak} bytes allocated for a {inflated}-byte header block"
        finally:
            tracemalloc.stop()


@on_both_loops
def test_a_websocket_frame_over_the_message_limit_is_refused_from_its_header(
        loop: str, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp collects a whole message: a frame announcing 8 MiB and trickled is refused from its
    header (close 1009), not held while it comes."""
    LOOPS[loop](_a_websocket_frame_over_the_message_limit_is_refused_from_its_header(caplog))


async def _a_websocket_frame_over_the_message_limit_is_refused_from_its_header(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dockyard.cri.streaming")
    async with rig() as r:
        url = urlsplit(await r.exec_url())
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            writer.write(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 8 << 20) + os.urandom(4))  # masked binary
            closing = b""
            for _ in range(16):  # 1 MiB of it, piece by piece, until the server answers
                writer.write(bytes(64 << 10))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                with contextlib.suppress(TimeoutError, ConnectionError):
                    closing = await asyncio.wait_for(reader.read(65536), 0.05)
                if closing:
                    break
            while 0 < len(closing) < 4:
                closing += await asyncio.wait_for(reader.read(65536), 20)
            if not closing:
                closing = await asyncio.wait_for(reader.read(65536), 20)
            assert closing[:1] == b"\x88" and struct.unpack(">H", closing[2:4])[0] == 1009, closing
            writer.write(bytes([0x88, 0x80 | 2]) + bytes(4) + struct.pack(">H", 1009))  # the client's close
            await _read_all(reader)
        finally:
            writer.close()
    assert any("WebSocket" in m and "exceeds limit" in m for m in caplog.messages), caplog.messages


@on_both_loops
def test_handshaking_connections_are_capped_and_honest_sessions_go_on(loop: str) -> None:
    """200 connections that say nothing: past the server's 128 in their handshake the oldest are
    closed (503), while an exec and a port-forward still get their sessions at once."""
    LOOPS[loop](_handshaking_connections_are_capped_and_honest_sessions_go_on())


async def _handshaking_connections_are_capped_and_honest_sessions_go_on() -> None:
    idle = 200
    async with rig() as r:
        conns = []
        try:
            for _ in range(idle):
                conns.append(await asyncio.open_connection("127.0.0.1", r.port))
            result = await asyncio.to_thread(honest_exec, await r.exec_url())
            assert result == {"stdout": b"hello", "status": {"metadata": {}, "status": "Success"}}
            assert await asyncio.to_thread(honest_forward, await r.forward_url(), r.echo_port) == b"ping"
            # the oldest went to make room (the exec's connection came when all 128 places were
            # taken, the port-forward's after the exec's upgrade freed one), each told why; the
            # newest wait on
            evicted = idle - 128 + 1
            for reader, _ in conns[:evicted]:
                got = await _read_all(reader)
                assert got.startswith(b"HTTP/1.1 503 Service Unavailable"), got
            stats = r.server.stats()
            # (those that timed out: a run slow enough for the idle ones' 10 s to pass)
            assert (stats.handshaking + stats.timed_out, stats.evicted) == (127, evicted), stats
        finally:
            for _, writer in conns:
                writer.close()
        await wait_until_async(lambda: r.server.stats().handshaking == 0, what="the connections to go")


@on_both_loops
def test_upgrades_past_the_session_cap_get_503_and_keep_their_token(loop: str) -> None:
    """With 4 sessions allowed and 4 open (a port-forward and 3 execs), the next upgrade gets 503
    and its token stays good; the port-forward carries bytes meanwhile, and once a session ended
    the refused client's retry gets its exec."""
    LOOPS[loop](_upgrades_past_the_session_cap_get_503_and_keep_their_token())


async def _upgrades_past_the_session_cap_get_503_and_keep_their_token() -> None:
    server = StreamServer(Backend())
    # Set after construction rather than passed, so that this test runs (and fails on what it
    # checks) against a server without caps too.
    limits: Any = getattr(streaming_server, "Limits", dict)(max_sessions=4)
    server.limits = limits
    async with rig(server) as r:
        holders: list[SpdyClient] = []
        try:
            forward = SpdyClient(await r.forward_url(), "portforward.k8s.io")
            holders.append(forward)
            assert (await asyncio.to_thread(forward.upgrade)).startswith(b"HTTP/1.1 101")
            for sid, kind in ((1, "error"), (3, "data")):
                await asyncio.to_thread(forward.syn, sid, {"streamType": kind, "port": str(r.echo_port),
                                                           "requestID": "0"})
            for _ in range(3):
                holders.append(await asyncio.to_thread(hold, await r.exec_url(("sink",))))
            url = await r.exec_url()
            refused = SpdyClient(url, "v4.channel.k8s.io")
            head = await asyncio.to_thread(refused.upgrade)
            refused.close()
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head and b"Connection: close" in head, head
            assert r.server.stats().refused == 1
            # the port-forward still carries bytes
            await asyncio.to_thread(forward.sock.sendall, data_frame(3, b"ping"))
            got = b""
            while got != b"ping":
                f = await asyncio.to_thread(forward.frame)
                assert f is not None, f"the session ended with {got!r}"
                if not f[0] and f[1] == 3:
                    got += f[3]
            # a session ends: the refused client's token gets one
            holders.pop().close()
            await wait_until_async(lambda: r.server.stats().sessions == 3, what="a session to end")
            result = await asyncio.to_thread(honest_exec, url)
            assert result == {"stdout": b"hello", "status": {"metadata": {}, "status": "Success"}}
        finally:
            for h in holders:
                h.close()
        await wait_until_async(lambda: r.server.stats().sessions == 0, what="the sessions to end")


@on_both_loops
def test_a_connection_that_does_not_upgrade_in_time_is_closed(loop: str, caplog: pytest.LogCaptureFixture) -> None:
    """Slowloris: request headers a byte at a time never finish; a connection that sends nothing,
    or a request answered 404 and then nothing, neither: each is closed once the handshake timeout
    passed since its accept (408), and an honest session meanwhile is not."""
    LOOPS[loop](_a_connection_that_does_not_upgrade_in_time_is_closed(caplog))


async def _a_connection_that_does_not_upgrade_in_time_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dockyard.cri.streaming")
    async with rig() as r, contextlib.AsyncExitStack() as held:
        silent = await asyncio.open_connection("127.0.0.1", r.port)
        held.callback(silent[1].close)
        answered = await asyncio.open_connection("127.0.0.1", r.port)
        held.callback(answered[1].close)
        answered[1].write(b"GET /exec/nosuchtoken HTTP/1.1\r\nHost: x\r\nUpgrade: SPDY/3.1\r\n\r\n")
        assert (await answered[0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 404")
        session = SpdyClient(await r.exec_url(("sink",)), "v4.channel.k8s.io")
        held.callback(session.close)
        assert (await asyncio.to_thread(session.upgrade)).startswith(b"HTTP/1.1 101")
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        held.callback(writer.close)
        request = b"GET /exec/x HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"y" * 100_000
        got, deadline = b"", time.monotonic() + 30
        for i in range(len(request)):  # a byte per 0.05 s until the server answers (30 s at most)
            writer.write(request[i:i + 1])
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(reader.read(65536), 0.05)
            if got or reader.at_eof() or time.monotonic() > deadline:
                break
        assert got.startswith(b"HTTP/1.1 408"), got
        assert (await _read_all(silent[0])).startswith(b"HTTP/1.1 408")
        assert b"HTTP/1.1 408" in await _read_all(answered[0])  # after its 404's body
        assert r.server.stats().timed_out == 3
        assert r.server.stats().sessions == 1  # the upgraded one stays
    assert any("did not upgrade within 10 s" in m for m in caplog.messages), caplog.messages

