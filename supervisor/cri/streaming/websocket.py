"""The WebSocket transports client-go speaks besides SPDY (crictl --transport websocket,
critest -websocket-*; kubelet's own default from Kubernetes 1.31).

Exec and attach: sub-protocols `v5.channel.k8s.io` / `v4.channel.k8s.io`, each binary message
one channel's data behind a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error status, 4
resize); v5 adds 255, a client's "close channel N" (how it ends stdin). Port-forward:
`SPDY/3.1+portforward.k8s.io`, the SPDY session tunnelled as a byte stream in binary messages.

Input not yet taken is bounded (backpressure.py): past the budget the next message is not read
(aiohttp then stops reading the socket) until the consumer caught up or the client is gone; a
channel the session does not read (stdin without stdin, resize without a terminal) is dropped.
aiohttp hands on only whole messages, so one is collected before it is looked at: MAX_MESSAGE
bounds that, a frame announcing more is refused from its header (close 1009, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMessage, WSMsgType, web

from supervisor.cri.streaming.backpressure import InputBudget
from supervisor.cri.streaming.remotecommand import PROTOCOL_V4, PROTOCOL_V5
from supervisor.cri.streaming.spdy import SpdySession

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
REMOTECOMMAND_PROTOCOLS = (PROTOCOL_V5, PROTOCOL_V4)
PORTFORWARD_TUNNEL = "SPDY/3.1+portforward.k8s.io"
# aiohttp collects a message whole: this is what a connection can make the server hold. client-go
# sends a message per write: what one read of stdin or of a forwarded connection gave (io.Copy's
# 32 KiB from a terminal, a file or a socket), a resize's JSON, or a tunnelled SPDY frame's header
# or data (the same 32 KiB). 1 MiB is 32 of those; only stdin handed to client-go as one in-memory
# buffer can come in a bigger message, and is refused (close 1009).
MAX_MESSAGE = 1 << 20
SEND_QUEUE = 64  # tunnelled frames waiting to be sent before writers wait

log = logging.getLogger("dockyard.cri.streaming")


def _log_error(msg: WSMessage, label: str) -> None:
    """aiohttp answered a bad message (one over MAX_MESSAGE: close 1009) and ends the WebSocket."""
    log.warning("WebSocket session%s: %s; closed", f" of {label}" if label else "", msg.data)


class WsChannels:
    """Remote command channels over one WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, stdin: bool, tty: bool,
                 transport: asyncio.BaseTransport | None = None, label: str = "") -> None:
        self.ws = ws
        self.label = label
        self.has_stdin = stdin
        self.has_resize = tty
        self._transport = transport  # the connection's, watched while reading waits for room
        self.budget = InputBudget()
        self._queues: dict[int, asyncio.Queue[bytes]] = {}
        if stdin:
            self._queues[STDIN] = asyncio.Queue()
        if tty:
            self._queues[RESIZE] = asyncio.Queue()
        self._ended: set[int] = set()
        self._closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.ERROR:
                    _log_error(msg, self.label)
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel == CLOSE and data:
                    self._end(data[0])
                elif channel in self._queues and data and channel not in self._ended:
                    self._queues[channel].put_nowait(bytes(data))
                    self.budget.add(len(data))
                    if not await self.budget.room(self._transport):
                        break  # the client left while its input waited: the session's end
        finally:
            for channel in self._queues:
                self._end(channel)
            self._closed.set()

    def _end(self, channel: int) -> None:
        if channel in self._queues and channel not in self._ended:
            self._ended.add(channel)
            self._queues[channel].put_nowait(b"")

    @property
    def buffered(self) -> int:
        """Bytes from the client not taken yet (a message aiohttp still collects is its own)."""
        return self.budget.queued

    async def read_stdin(self) -> bytes:
        return await self._taken(self._queues[STDIN])

    async def read_resize(self) -> bytes:
        return await self._taken(self._queues[RESIZE])

    async def _taken(self, queue: asyncio.Queue[bytes]) -> bytes:
        data = await queue.get()
        self.budget.take(len(data))
        return data

    async def write(self, fd: int, data: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(bytes([fd]) + data)

    async def write_status(self, status: bytes) -> None:
        await self.write(ERROR, status)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def finish(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class WsTunnel:
    """A SPDY session carried in a WebSocket's binary messages (client-go's tunneling dialer)."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None = None,
                 label: str = "") -> None:
        self.ws = ws
        self.label = label
        self._transport = transport
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self.session = SpdySession(self._out.put_nowait, self._drain, label=label)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._send())]

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.ERROR:
                    _log_error(msg, self.label)
                if msg.type == WSMsgType.BINARY:
                    self.session.feed(bytes(msg.data))
                    if not await self.session.budget.room(self._transport):
                        break  # the client left while its data waited
        finally:
            self.session.feed_eof()

    async def _send(self) -> None:
        while True:
            frame = await self._out.get()
            try:
                await self.ws.send_bytes(frame)
            except ConnectionError:
                self.session.feed_eof()
            finally:
                self._out.task_done()

    async def _drain(self) -> None:
        if self._out.qsize() >= SEND_QUEUE:
            await self._out.join()

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._out.join(), 5)
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
