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
    await server.close()                       # the daemon's stop: sessions end, the port closes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

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

Request = ExecRequest | AttachRequest | PortForwardRequest
_KIND = {ExecRequest: "exec", AttachRequest: "attach", PortForwardRequest: "portforward"}


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
    def __init__(self, backend: Backend, address: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self.tokens: TokenStore[Request] = TokenStore()
        self._runner: web.AppRunner | None = None
        self._base = ""
        self._lock = asyncio.Lock()
        self._closed = False
        self._sessions: set[asyncio.Task[None]] = set()

    async def url(self, request: Request) -> str:
        await self._start()
        return f"{self._base}/{_KIND[type(request)]}/{self.tokens.issue(request)}"

    async def _start(self) -> None:
        async with self._lock:
            if self._closed:
                raise FailedPrecondition("the streaming server is stopping")
            if self._runner is not None:
                return
            app = web.Application()
            for kind in _KIND.values():
                app.router.add_route("*", f"/{kind}/{{token}}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
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

    # ----- requests ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.path.split("/")[1]
        found = self.tokens.take(request.match_info["token"])
        if found is None or _KIND[type(found)] != kind:
            raise web.HTTPNotFound(text="unknown or expired streaming token\n")
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade not in (SPDY.lower(), "websocket"):
            raise web.HTTPBadRequest(text=f"this endpoint upgrades to {SPDY} or websocket only\n")
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            if upgrade == "websocket":
                return await self._websocket(request, found)
            if isinstance(found, PortForwardRequest):
                req = found
                return await _spdy(request, PORTFORWARD_PROTOCOLS, lambda s, _: self._portforward(s, req))
            return await _spdy(request, REMOTECOMMAND_PROTOCOLS, lambda s, _: self._remotecommand(s, found))
        finally:
            self._sessions.discard(task)

    async def _websocket(self, request: web.Request, found: Request) -> web.StreamResponse:
        forward = isinstance(found, PortForwardRequest)
        supported = (websocket.PORTFORWARD_TUNNEL,) if forward else websocket.REMOTECOMMAND_PROTOCOLS
        ws = web.WebSocketResponse(protocols=supported, max_msg_size=websocket.MAX_MESSAGE)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol is None:
            raise web.HTTPBadRequest(text=f"no supported WebSocket sub-protocol (supported: {', '.join(supported)})\n")
        await ws.prepare(request)
        if isinstance(found, PortForwardRequest):
            tunnel = websocket.WsTunnel(ws, request.transport)
            try:
                await self._portforward(tunnel.session, found)
            finally:
                await tunnel.close()
            return ws
        channels = websocket.WsChannels(ws, found.stdin, found.tty, request.transport)
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


async def _spdy(request: web.Request, supported: tuple[str, ...],
                serve: Callable[[SpdySession, str], Awaitable[None]]) -> web.StreamResponse:
    offered = [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, []) for p in value.split(",")]
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise web.HTTPForbidden(text=f"no supported stream protocol among {offered} (supported: "
                                     f"{', '.join(supported)})\n",
                                headers={"X-Accepted-Stream-Protocol-Versions": ", ".join(supported)})
    response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": SPDY,
                                                        PROTOCOL_HEADER: chosen})
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
    session = SpdySession(transport.write, protocol._drain_helper, on_full)
    protocol.set_parser(_Feeder(session))  # type: ignore[arg-type]
    protocol.keep_alive(False)
    try:
        await serve(session, chosen)
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
