"""The streaming server: Exec, Attach and PortForward answer with a URL of this HTTP server
(127.0.0.1, a port the kernel picks, as containerd's default), the path holding a one-time
token: /exec/<token>, /attach/<token>, /portforward/<token>.

The client upgrades the connection to SPDY/3.1 and negotiates the sub-protocol in
X-Stream-Protocol-Version (what crictl and critest speak by default; spdy.py says why the
framing is our own), or to a WebSocket (websocket.py: channel.k8s.io, SPDY tunnelled for
port-forward). aiohttp serves the HTTP; after the 101 the connection's bytes go to the
SPDY session through the request protocol's payload parser hook (as aiohttp's own WebSocket does).

    server = StreamServer(backend)
    url = await server.url(ExecRequest(...))   # starts the server on first use
    server.stats()                             # connections, sessions, bytes held, refusals
    await server.close()                       # the daemon's stop: sessions end, the port closes

Connections are counted (Limits): at most `max_sessions` upgraded ones (another upgrade request
gets 503 and keeps its token), at most `max_handshakes` not upgraded yet (a new one beyond closes
the oldest: a flood of idle or slow connections cannot keep an honest client's one-round-trip
handshake out), and each must have upgraded within `handshake_timeout` seconds of its accept or
is closed (408): headers sent a byte at a time cannot hold a connection. Each refusal is logged,
at most once per LOG_EVERY seconds per kind with the count of those held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web import RequestHandler

from dockyard_common.errors import FailedPrecondition
from supervisor.cri.streaming import portforward, remotecommand, websocket
from supervisor.cri.streaming.backpressure import watch_paused
from supervisor.cri.streaming.spdy import SpdySession
from supervisor.cri.streaming.spdy_channels import SpdyChannels, collect, expected_streams
from supervisor.cri.streaming.tokens import TokenStore
from supervisor.cri.streaming.types import AttachRequest, Backend, ExecRequest, PortForwardRequest

log = logging.getLogger("dockyard.cri.streaming")

SPDY = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
REMOTECOMMAND_PROTOCOLS = (remotecommand.PROTOCOL_V4,)
PORTFORWARD_PROTOCOLS = (portforward.PROTOCOL_V1,)
LINGER = 5.0  # seconds the client has to close the connection after the session
LOG_EVERY = 10.0  # seconds between two log lines of one kind of refusal

Request = ExecRequest | AttachRequest | PortForwardRequest
_KIND = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}


@dataclass(frozen=True)
class Limits:
    """Caps on the server's connections, far above what kubelet does on a busy node.

    A session is one `kubectl exec/attach/port-forward/cp` (kubelet's probes use ExecSync, not
    this server): 1024 at once is ~9 per pod at kubelet's default 110 pods. Its handshake is one
    request answered at once, which kubelet sends as soon as it connected (on the same host by
    default): 128 connections between accept and upgrade would mean 128 new sessions within the
    same few milliseconds, and 10 s is thousands of times what one takes."""

    max_sessions: int = 1024
    max_handshakes: int = 128
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_handshakes < 1 or not self.handshake_timeout > 0:
            raise ValueError(f"streaming server limits must be positive: {self}")


@dataclass(frozen=True)
class Stats:
    handshaking: int  # connections accepted, not upgraded yet
    sessions: int  # upgraded connections
    buffered: int  # bytes from clients held by the sessions (SpdySession.buffered, WsChannels.buffered)
    evicted: int  # handshaking connections closed to make room for a new one
    timed_out: int  # connections closed for not upgrading in time
    refused: int  # upgrade requests answered 503: as many sessions as allowed


class _Server(web.Server):
    """aiohttp's low-level server, telling the StreamServer each connection's start and end."""

    def __init__(self, owner: StreamServer, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._owner._accepted(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._owner._lost(handler)


class _Throttled:
    """A warning per kind at most once per LOG_EVERY seconds; the next one counts those held back."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        log.warning(message + (f" ({held} more like it since the last report)" if held else ""), *args)
        self._next[kind] = now + LOG_EVERY


def _close_with(transport: asyncio.Transport, status: str, text: str) -> None:
    """Answer a connection no request handler answers, and close it."""
    if not transport.is_closing():  # (uvloop's transports are no asyncio.Transport instances)
        body = text.encode()
        transport.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    transport.close()


class _Feeder:
    """aiohttp's payload parser hook: the upgraded connection's bytes into the SPDY session."""

    def __init__(self, session: SpdySession) -> None:
        self.session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.session.feed(data)
        return False, b""

    def feed_eof(self) -> None:
        self.session.feed_eof()


class StreamServer:
    def __init__(self, backend: Backend, address: str = "127.0.0.1", port: int = 0,
                 limits: Limits = Limits()) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self.limits = limits
        self.tokens: TokenStore[Request] = TokenStore()
        self._runner: web.ServerRunner | None = None
        self._base = ""
        self._lock = asyncio.Lock()
        self._closed = False
        self._sessions: set[asyncio.Task[None]] = set()
        # connection → (its transport, the timer that closes it) until it upgrades; oldest first
        self._handshaking: dict[RequestHandler, tuple[asyncio.Transport, asyncio.TimerHandle]] = {}
        self._upgraded: set[RequestHandler] = set()
        self._holders: weakref.WeakSet[SpdySession | websocket.WsChannels] = weakref.WeakSet()
        self._counts = {"evicted": 0, "timed_out": 0, "refused": 0}
        self._warn = _Throttled()

    async def url(self, request: Request) -> str:
        await self._start()
        return f"{self._base}/{_KIND[type(request)]}/{self.tokens.issue(request)}"

    async def _start(self) -> None:
        async with self._lock:
            if self._closed:
                raise FailedPrecondition("the streaming server is stopping")
            if self._runner is not None:
                return
            # aiohttp's low-level server (no Application): its connection hooks count connections.
            runner = web.ServerRunner(_Server(self, self._handle, access_log=None), handle_signals=False,
                                      shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, self.address, self.port)  # shutdown_timeout is the runner's since aiohttp 3.9
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise FailedPrecondition(f"streaming server on {self.address}:{self.port}: "
                                         f"{exc.strerror or exc}") from None
            self._runner = runner
            host, port = runner.addresses[0][:2]
            self._base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
            log.info("CRI streaming server on %s", self._base)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        for _, timer in self._handshaking.values():
            timer.cancel()
        self._handshaking.clear()

    def stats(self) -> Stats:
        return Stats(handshaking=len(self._handshaking), sessions=len(self._upgraded),
                     buffered=sum(h.buffered for h in self._holders), **self._counts)

    # ----- connections ---------------------------------------------------------------------------

    def _accepted(self, conn: RequestHandler, transport: asyncio.Transport) -> None:
        while len(self._handshaking) >= self.limits.max_handshakes:
            oldest = next(iter(self._handshaking))
            self._counts["evicted"] += 1
            self._warn.warning("evicted", "CRI streaming: %d connections in their handshake at once (at most "
                               "%d): the oldest (%s) is closed to make room", len(self._handshaking) + 1,
                               self.limits.max_handshakes, _peer(self._handshaking[oldest][0]))
            self._end_handshake(oldest, "503 Service Unavailable", "too many connections in their handshake\n")
        timer = asyncio.get_running_loop().call_later(self.limits.handshake_timeout, self._too_slow, conn)
        self._handshaking[conn] = (transport, timer)

    def _too_slow(self, conn: RequestHandler) -> None:
        if conn in self._handshaking:
            self._counts["timed_out"] += 1
            self._warn.warning("timed_out", "CRI streaming: a connection from %s did not upgrade within %g s "
                               "of its accept: closed", _peer(self._handshaking[conn][0]),
                               self.limits.handshake_timeout)
            self._end_handshake(conn, "408 Request Timeout", "the upgrade took too long\n")

    def _end_handshake(self, conn: RequestHandler, status: str, text: str) -> None:
        transport, timer = self._handshaking.pop(conn)
        timer.cancel()
        _close_with(transport, status, text)

    def _lost(self, conn: RequestHandler) -> None:
        found = self._handshaking.pop(conn, None)
        if found is not None:
            found[1].cancel()
        self._upgraded.discard(conn)

    def _check_room(self, request: web.BaseRequest) -> None:
        """503 when there are as many sessions as allowed (the request is not read on)."""
        if len(self._upgraded) >= self.limits.max_sessions:
            self._counts["refused"] += 1
            self._warn.warning("refused", "CRI streaming: %d sessions at once (the most allowed): an "
                               "upgrade from %s is refused (503)", len(self._upgraded), _peer(request.transport))
            busy = web.HTTPServiceUnavailable(text=f"the streaming server has {len(self._upgraded)} sessions, "
                                                   "the most it serves at once; try again later\n",
                                              headers={"Retry-After": "1"})
            busy.force_close()  # and the connection goes: it would only wait to time out
            raise busy

    def _upgraded_now(self, request: web.BaseRequest) -> None:
        """The request's connection is answered 101: a session from now on, its handshake over."""
        found = self._handshaking.pop(request.protocol, None)
        if found is not None:
            found[1].cancel()
        self._upgraded.add(request.protocol)

    # ----- requests ------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = request.path.split("/")
        if len(parts) != 3 or parts[1] not in _KIND.values():
            raise web.HTTPNotFound(text="not a streaming URL\n")
        kind, token = parts[1], parts[2]
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade not in (SPDY.lower(), "websocket"):
            found = self.tokens.take(token)
            if found is None or _KIND[type(found)] != kind:
                raise web.HTTPNotFound(text="unknown or expired streaming token\n")
            raise web.HTTPBadRequest(text=f"this endpoint upgrades to {SPDY} or websocket only\n")
        self._check_room(request)  # before the token is taken: a 503 leaves it good
        found = self.tokens.take(token)
        if found is None or _KIND[type(found)] != kind:
            raise web.HTTPNotFound(text="unknown or expired streaming token\n")
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            if upgrade == "websocket":
                return await self._websocket(request, found)
            if isinstance(found, PortForwardRequest):
                req = found
                return await self._spdy_session(request, PORTFORWARD_PROTOCOLS, lambda s: self._portforward(s, req))
            return await self._spdy_session(request, REMOTECOMMAND_PROTOCOLS, lambda s: self._remotecommand(s, found))
        finally:
            self._sessions.discard(task)

    async def _websocket(self, request: web.BaseRequest, found: Request) -> web.StreamResponse:
        forward = isinstance(found, PortForwardRequest)
        supported = (websocket.PORTFORWARD_TUNNEL,) if forward else websocket.REMOTECOMMAND_PROTOCOLS
        ws = web.WebSocketResponse(protocols=supported, max_msg_size=websocket.MAX_MESSAGE)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol is None:
            raise web.HTTPBadRequest(text=f"no supported WebSocket sub-protocol (supported: {', '.join(supported)})\n")
        self._upgraded_now(request)
        await ws.prepare(request)
        label = f"{_KIND[type(found)]} from {_peer(request.transport)}"
        if isinstance(found, PortForwardRequest):
            tunnel = websocket.WsTunnel(ws, request.transport, label)
            self._holders.add(tunnel.session)
            try:
                await self._portforward(tunnel.session, found)
            finally:
                await tunnel.close()
            return ws
        channels = websocket.WsChannels(ws, found.stdin, found.tty, request.transport, label)
        self._holders.add(channels)
        try:
            await self._run(channels, found)
        finally:
            await channels.finish()
        return ws

    async def _run(self, channels: remotecommand.Channels, req: ExecRequest | AttachRequest) -> None:
        if isinstance(req, ExecRequest):
            exec_req = req
            await remotecommand.serve(channels, lambda: self.backend.exec(exec_req), exec_req.cmd)
        else:
            attach_req = req
            await remotecommand.serve(channels, lambda: self.backend.attach(attach_req))

    async def _remotecommand(self, session: SpdySession, req: ExecRequest | AttachRequest) -> None:
        streams = await collect(session, expected_streams(req.tty, req.stdin, req.stdout, req.stderr))
        if streams is None:
            log.info("%s of %s: the client did not open its streams", _KIND[type(req)], req.container_id)
            return
        channels = SpdyChannels(session, streams)
        await self._run(channels, req)
        await channels.finish()

    async def _portforward(self, session: SpdySession, req: PortForwardRequest) -> None:
        await portforward.serve(session, lambda port: self.backend.dial(req.pod_id, port), req.ports)


    async def _spdy_session(self, request: web.BaseRequest, supported: tuple[str, ...],
                            serve: Callable[[SpdySession], Awaitable[None]]) -> web.StreamResponse:
        offered = [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, []) for p in value.split(",")]
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            raise web.HTTPForbidden(text=f"no supported stream protocol among {offered} (supported: "
                                         f"{', '.join(supported)})\n",
                                    headers={"X-Accepted-Stream-Protocol-Versions": ", ".join(supported)})
        response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": SPDY,
                                                            PROTOCOL_HEADER: chosen})
        self._upgraded_now(request)
        await response.prepare(request)
        transport, protocol = request.transport, request.protocol
        assert transport is not None
        watchers: list[asyncio.Task[None]] = []

        def gone() -> None:  # the client left while its reading was paused
            session.feed_eof()
            transport.abort()

        def on_full(full: bool) -> None:
            # Input the consumer has not taken yet stays in the kernel (backpressure.py).
            if full:
                transport.pause_reading()
                watchers.append(asyncio.create_task(watch_paused(session.budget, transport, gone)))
            else:
                transport.resume_reading()

        # aiohttp's BaseProtocol paces writes as its WebSocket writer does.
        session = SpdySession(transport.write, protocol._drain_helper, on_full,
                              f"{request.path.split('/')[1]} from {_peer(transport)}")
        self._holders.add(session)
        protocol.set_parser(_Feeder(session))  # type: ignore[arg-type]
        protocol.keep_alive(False)
        try:
            await serve(session)
            session.goaway()
            if transport.can_write_eof() and not transport.is_closing():
                # Half-close and let the client close: closing with its input unread would reset
                # the connection and could lose the end of what we sent (the status).
                transport.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.wait_closed(), LINGER)
        finally:
            session.feed_eof()
            transport.close()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        return response


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return "an unknown peer"
