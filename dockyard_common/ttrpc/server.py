"""The ttrpc server: unary protobuf methods over a unix socket, asyncio only.

Contract
--------
- `register(service_descriptor, handler)` takes a ServiceDescriptor from a generated `*_pb2`
  module (e.g. `shim_pb2.DESCRIPTOR.services_by_name["Task"]`) and an object with one
  `async def Name(self, request, ctx) -> response` per RPC it implements. The request and
  response classes come from the descriptor; an RPC the handler lacks answers UNIMPLEMENTED
  ("method Name"), an unknown service UNIMPLEMENTED ("service x.y.Z"), as ttrpc words them.
- `listen(path)` serves a filesystem unix socket it creates with mode 0600 (never abstract);
  `serve_fd(fd)` serves an inherited listening socket. Both return once accepting.
- A handler method marked `@inline` is a plain (not async) method that answers at once: it runs
  in the connection's read loop, without a task, and its answer is written before the next
  frame is read (for cheap, hot methods: the daemon's stats Push, a hundred a second). It must
  not block; a request's timeout does not apply to it.
- Requests on one connection run concurrently, each in its own task. A handler fails by
  raising a domain error (`dockyard_common.errors`) or `TTRPCError`; the client gets the matching
  gRPC code and `str(exc)` as the message. Anything else is logged and sent like ttrpc's
  convertCode would (ENOENT → NOT_FOUND, ..., otherwise UNKNOWN).
- A request's `timeout_nano` is enforced: the handler task is cancelled at the deadline and
  the client gets DEADLINE_EXCEEDED. When the client's connection drops, its in-flight
  handlers are cancelled too (ttrpc cancels their context). Handlers whose work must not stop
  half-way shield it (`asyncio.shield`) and keep the state machine consistent themselves.
- `shutdown()` stops accepting, removes the socket file it created, lets in-flight requests
  finish (their responses are sent), closes each connection as it becomes idle, and returns
  when all are closed; with a grace period, whatever is left after it is closed by force (`close()`).
  A handler that wants to stop the server (the shim's Shutdown RPC) must not await
  `shutdown()` itself — it would wait for its own request: schedule it in a task and return.

Example::

    server = TTRPCServer(require_same_user=True)
    server.register(shim_pb2.DESCRIPTOR.services_by_name["Task"], TaskService())
    await server.listen("/run/dockyard/tasks/default/web/shim.sock")
    await server.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common import errors
from dockyard_common.codes import Code
from dockyard_common.ttrpc import errors as codes
from dockyard_common.ttrpc import wire
from dockyard_common.ttrpc.metadata import Metadata
from dockyard_common.ttrpc.sockets import (
    PeerCredentials,
    adopt_listener,
    listen_unix,
    peer_credentials,
    same_user_or_root,
)

log = logging.getLogger("dockyard.ttrpc")

Handler = Callable[[Any, "RequestContext"], Awaitable[Message]]
_READ_LIMIT = 1 << 18  # StreamReader buffering before it pauses the socket


@dataclass(slots=True)
class RequestContext:
    """What a handler knows about its request besides the message."""

    service: str
    method: str
    metadata: Metadata
    peer: PeerCredentials | None
    deadline: float | None = None  # event-loop time (loop.time()), None without a timeout

    def time_remaining(self) -> float | None:
        """Seconds left before the client's deadline, None when it set none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


@dataclass(frozen=True, slots=True)
class _Method:
    request_type: type[Message]
    response_type: type[Message]
    handler: Handler
    inline: bool = False  # a plain method marked @inline: answered in the read loop


_INLINE = "_ttrpc_inline"


def inline(fn: Callable[..., Message]) -> Callable[..., Message]:
    """Mark a handler method that answers at once (see the contract above)."""
    setattr(fn, _INLINE, True)
    return fn


class _Connection:
    """One accepted client: reads frames, runs each request as a task, writes responses."""

    def __init__(
        self,
        server: TTRPCServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: PeerCredentials | None,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    @property
    def idle(self) -> bool:
        return not self.tasks

    async def run(self) -> None:
        try:
            while True:
                try:
                    frame = await wire.read_frame(self.reader)
                except wire.FrameTooLarge as exc:
                    # The payload was skipped, so the stream is still aligned: answer and go on.
                    self._start(self._send_status(exc.header.stream_id, Code.RESOURCE_EXHAUSTED, str(exc)))
                    continue
                except (asyncio.IncompleteReadError, OSError):
                    return
                self._dispatch(frame)
        finally:
            self.abort()
            self.closed.set()

    def _dispatch(self, frame: wire.Frame) -> None:
        if frame.type != wire.TYPE_REQUEST:
            log.debug("ttrpc: ignoring message of type %d on stream %d", frame.type, frame.stream_id)
            return
        try:
            request = ttrpc_pb2.Request.FromString(frame.payload)
        except DecodeError as exc:
            self._start(self._send_status(frame.stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}"))
            return
        if frame.stream_id % 2 != 1:
            self._start(
                self._send_status(
                    frame.stream_id, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"
                )
            )
            return
        response = self.server.call_inline(request, self.peer)
        if response is not None:
            self._write(frame.stream_id, response)
            return
        self._start(self._serve(frame.stream_id, request))

    def _start(self, coro: Awaitable[None]) -> None:
        # Synchronously counted as in flight, so shutdown never sees a request it would drop.
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ttrpc: request task failed", exc_info=task.exception())
        if not self.tasks and self.server.shutting_down:
            self.close()

    async def _serve(self, stream_id: int, request: ttrpc_pb2.Request) -> None:
        response = await self.server.call(request, self.peer)
        await self._send(stream_id, response)

    async def _send_status(self, stream_id: int, code: int, message: str) -> None:
        await self._send(stream_id, ttrpc_pb2.Response(status=status_pb2.Status(code=code, message=message)))

    async def _send(self, stream_id: int, response: ttrpc_pb2.Response) -> None:
        if not self._write(stream_id, response):
            return
        try:
            await self.writer.drain()
        except ConnectionError:
            self.close()

    def _write(self, stream_id: int, response: ttrpc_pb2.Response) -> bool:
        """Queue the response on the socket; False when the connection is closing."""
        if self.writer.is_closing():
            return False
        data = response.SerializeToString()
        if not wire.check_length(len(data)):
            # The peer would discard it and fail the call anyway; say so without sending it.
            error = status_pb2.Status(code=Code.RESOURCE_EXHAUSTED, message=wire.oversized_message(len(data)))
            data = ttrpc_pb2.Response(status=error).SerializeToString()
        self.writer.write(wire.encode_frame(stream_id, wire.TYPE_RESPONSE, data))
        return True

    def close(self) -> None:
        """Close the socket; the read loop then ends and cancels what is still running."""
        self.writer.close()

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.writer.close()


@dataclass
class _Listener:
    server: asyncio.Server
    path: str | None = None  # the socket file we created and must remove
    inode: tuple[int, int] | None = None


class TTRPCServer:
    def __init__(self, *, require_same_user: bool = False) -> None:
        """require_same_user: refuse peers whose uid is neither ours nor root (SO_PEERCRED)."""
        self.require_same_user = require_same_user
        self._services: dict[str, dict[str, _Method]] = {}
        self._listeners: list[_Listener] = []
        self._connections: set[_Connection] = set()
        self._shutting_down = False
        self._closed = asyncio.Event()

    # --- registration -------------------------------------------------------------------

    def register(self, service: descriptor.ServiceDescriptor, handler: object) -> None:
        """Serve `service` (by its full name) with the handler's async methods named like its RPCs."""
        name = service.full_name
        if name in self._services:
            raise errors.AlreadyExists(f"ttrpc service {name}")
        methods: dict[str, _Method] = {}
        for m in service.methods:
            fn = getattr(handler, m.name, None)
            if fn is None:
                continue  # answered UNIMPLEMENTED, like a method ttrpc never registered
            if m.client_streaming or m.server_streaming:
                raise errors.InvalidArgument(f"ttrpc 1.1 has no streams: {name}/{m.name} cannot be served")
            marked = getattr(fn, _INLINE, False)
            if inspect.iscoroutinefunction(fn) == marked:
                kind = "a plain method" if marked else "an async method"
                raise errors.InvalidArgument(f"ttrpc handler {name}/{m.name} must be {kind}")
            methods[m.name] = _Method(
                message_factory.GetMessageClass(m.input_type),
                message_factory.GetMessageClass(m.output_type),
                fn,
                marked,
            )
        self._services[name] = methods

    # --- serving ------------------------------------------------------------------------

    async def listen(self, path: str | os.PathLike[str]) -> None:
        """Create the socket file at path (mode 0600) and start accepting connections."""
        self._check_open()
        text = os.fspath(path)
        sock = listen_unix(text)
        try:
            st = os.stat(text)
            await self._serve_socket(sock, path=text, inode=(st.st_dev, st.st_ino))
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(text)
            raise

    async def serve_fd(self, fd: int) -> None:
        """Accept on an already-listening unix socket inherited as fd (its file is not ours)."""
        self._check_open()
        sock = adopt_listener(fd)
        try:
            await self._serve_socket(sock)
        except BaseException:
            sock.close()
            raise

    async def _serve_socket(
        self, sock: socket.socket, path: str | None = None, inode: tuple[int, int] | None = None
    ) -> None:
        srv = await asyncio.start_unix_server(self._accept, sock=sock, limit=_READ_LIMIT)
        self._listeners.append(_Listener(srv, path, inode))

    def _check_open(self) -> None:
        if self._shutting_down:
            raise errors.FailedPrecondition("ttrpc: server closed")

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def paths(self) -> list[str]:
        """The socket files this server created."""
        return [lst.path for lst in self._listeners if lst.path]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._shutting_down:
            writer.close()
            return
        peer: PeerCredentials | None = None
        sock = writer.get_extra_info("socket")
        try:
            peer = peer_credentials(sock)
        except OSError as exc:
            log.debug("ttrpc: no peer credentials: %s", exc)
        if self.require_same_user and (peer is None or not same_user_or_root(peer)):
            log.error("ttrpc: refusing connection from %s: invalid credentials", peer)
            writer.close()
            return
        conn = _Connection(self, reader, writer, peer)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    # --- dispatch -----------------------------------------------------------------------

    def call_inline(self, request: ttrpc_pb2.Request, peer: PeerCredentials | None = None) -> ttrpc_pb2.Response | None:
        """The Response of a request for an @inline method; None for any other request."""
        methods = self._services.get(request.service)
        method = methods.get(request.method) if methods is not None else None
        if method is None or not method.inline:
            return None
        try:
            message, ctx = self._decode(method, request, peer)
            payload = self._encode(method, method.handler(message, ctx))
        except Exception as exc:
            return ttrpc_pb2.Response(status=self._status_for(exc, request.service, request.method))
        return ttrpc_pb2.Response(status=status_pb2.Status(code=Code.OK), payload=payload)

    async def call(self, request: ttrpc_pb2.Request, peer: PeerCredentials | None = None) -> ttrpc_pb2.Response:
        """Run one request to its Response (status and payload); raises only CancelledError."""
        service, method_name = request.service, request.method
        try:
            methods = self._services.get(service)
            if methods is None:
                raise codes.TTRPCError(Code.UNIMPLEMENTED, f"service {service}")
            method = methods.get(method_name)
            if method is None:
                raise codes.TTRPCError(Code.UNIMPLEMENTED, f"method {method_name}")
            message, ctx = self._decode(method, request, peer)
            if method.inline:
                result: Message = method.handler(message, ctx)  # type: ignore[assignment]
            else:
                result = await self._run(method, message, ctx, request.timeout_nano)
            payload = self._encode(method, result)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # ours: deadline, dropped connection or forced close
            # A cancellation from inside the handler is its failure, not ours to swallow.
            return ttrpc_pb2.Response(status=self._status_for(errors.Cancelled(f"ttrpc: {service}/{method_name}"),
                                                              service, method_name))
        except Exception as exc:
            return ttrpc_pb2.Response(status=self._status_for(exc, service, method_name))
        return ttrpc_pb2.Response(status=status_pb2.Status(code=Code.OK), payload=payload)

    @staticmethod
    def _decode(method: _Method, request: ttrpc_pb2.Request,
                peer: PeerCredentials | None) -> tuple[Message, RequestContext]:
        try:
            message = method.request_type.FromString(request.payload)
        except DecodeError as exc:
            raise codes.TTRPCError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
        return message, RequestContext(request.service, request.method, Metadata.from_pairs(request.metadata), peer)

    @staticmethod
    def _encode(method: _Method, result: Message | None) -> bytes:
        if result is None:
            raise codes.TTRPCError(Code.UNKNOWN, "ttrpc: marshal called with nil")
        if not isinstance(result, method.response_type):
            raise codes.TTRPCError(Code.INTERNAL, f"ttrpc: error unsupported response type: {type(result).__name__}")
        return result.SerializeToString()

    @staticmethod
    async def _run(method: _Method, message: Message, ctx: RequestContext, timeout_nano: int) -> Message:
        if not timeout_nano:
            return await method.handler(message, ctx)
        loop = asyncio.get_running_loop()
        ctx.deadline = loop.time() + timeout_nano / 1e9
        timeout = asyncio.timeout_at(ctx.deadline)
        try:
            async with timeout:
                return await method.handler(message, ctx)
        except TimeoutError as exc:
            if timeout.expired():
                raise errors.DeadlineExceeded(f"ttrpc: {ctx.service}/{ctx.method}") from exc
            raise

    @staticmethod
    def _status_for(exc: Exception, service: str, method: str) -> status_pb2.Status:
        code = codes.code_for(exc)
        if isinstance(exc, codes.TTRPCError):
            message = exc.message
        elif isinstance(exc, errors.DockyardError):
            message = str(exc)
            log.debug("ttrpc: %s/%s: %s", service, method, message)
        else:
            log.error("ttrpc: %s/%s failed", service, method, exc_info=exc)
            err = errors.unexpected(exc)  # in words, not "[Errno 24]"; UNKNOWN as ttrpc-go, unless exhausted
            message = str(err) if isinstance(err, errors.ResourceExhausted) else err.message
            code = codes.code_for(err) if isinstance(err, errors.ResourceExhausted) else code
        return status_pb2.Status(code=code, message=message)

    # --- stopping -----------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Close the listening sockets now (connections already accepted go on being served):
        a client probing the path from here on finds no server."""
        self._stop_listening()

    def _stop_listening(self) -> None:
        self._shutting_down = True
        for lst in self._listeners:
            lst.server.close()
            if lst.path and lst.inode:
                # Remove the file only while it is still ours (not replaced by a new server).
                with contextlib.suppress(OSError):
                    st = os.stat(lst.path)
                    if (st.st_dev, st.st_ino) == lst.inode:
                        os.unlink(lst.path)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, finish in-flight requests, close connections as they go idle.

        grace: seconds to wait for in-flight requests before closing by force (None: no limit).
        """
        self._stop_listening()
        for conn in list(self._connections):
            if conn.idle:
                conn.close()
        pending = [conn.closed.wait() for conn in self._connections]
        if pending:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*pending)
            except TimeoutError:
                log.warning("ttrpc: shutdown timed out; closing %d connection(s)", len(self._connections))
        await self.close()

    async def close(self) -> None:
        """Stop at once: cancel in-flight requests and close every connection."""
        self._stop_listening()
        for conn in list(self._connections):
            conn.abort()
        for conn in list(self._connections):
            await conn.closed.wait()
        for lst in self._listeners:
            await lst.server.wait_closed()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Return once shutdown() or close() has finished."""
        await self._closed.wait()

    async def __aenter__(self) -> TTRPCServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
