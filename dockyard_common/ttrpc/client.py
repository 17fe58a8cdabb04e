"""The ttrpc client: many concurrent unary calls multiplexed on one unix socket connection.

Contract
--------
- `await TTRPCClient.connect(address)` dials `unix:///path`, a plain path, or an abstract
  socket (`\\0name` or `@name`, as older shims print). A failed dial raises Unavailable.
- `await client.call(service, method, request, ResponseType, timeout=..., metadata=...)` sends
  one request (odd, increasing stream ids) and returns the decoded response. A non-OK status
  raises the domain error of its code (NOT_FOUND → dockyard_common.errors.NotFound, ...; codes
  without a kind → Unknown). `timeout` (seconds) travels as timeout_nano and is also enforced
  here: DeadlineExceeded. A request over 4 MiB raises ResourceExhausted without being sent.
- When the connection is lost (the peer closed it, the shim died), every pending and later
  call raises ConnectionClosed (an Unavailable), `closed` turns true, `wait_closed()` returns
  and the `on_close` callback runs once. `close()` does the same on purpose.

Example::

    client = await TTRPCClient.connect(address, on_close=lambda: log.warning("shim gone"))
    try:
        resp = await client.call("containerd.task.v2.Task", "State",
                                 shim_pb2.StateRequest(id="web"), shim_pb2.StateResponse,
                                 timeout=5, metadata={"containerd-namespace-ttrpc": "default"})
    finally:
        await client.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common import errors
from dockyard_common.codes import Code
from dockyard_common.ttrpc import errors as codes
from dockyard_common.ttrpc import wire
from dockyard_common.ttrpc.metadata import Metadata, MetadataLike
from dockyard_common.ttrpc.sockets import parse_address

log = logging.getLogger("dockyard.ttrpc")

M = TypeVar("M", bound=Message)
_READ_LIMIT = 1 << 18


def _display(path: str) -> str:
    return "@" + path[1:] if path.startswith("\0") else path


class TTRPCClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        address: str = "",
        on_close: Callable[[], object] | None = None,
    ) -> None:
        """Use `connect`; this adopts an open stream pair."""
        self.address = address
        self._reader = reader
        self._writer = writer
        self._on_close = on_close
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._closed = False
        self._closed_event = asyncio.Event()
        self._callback_task: asyncio.Future[object] | None = None
        self._read_task = asyncio.create_task(self._read_loop(), name=f"ttrpc-client {address}")

    @classmethod
    async def connect(
        cls,
        address: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> TTRPCClient:
        path = parse_address(address)
        shown = _display(path)
        loop = asyncio.get_running_loop()
        # Our own socket and sock_connect: abstract names work the same on asyncio and uvloop.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, path)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_READ_LIMIT)
        except TimeoutError as exc:
            sock.close()
            raise errors.Unavailable(f"ttrpc: dial {shown}: timed out") from exc
        except OSError as exc:
            sock.close()
            raise errors.Unavailable(f"ttrpc: dial {shown}: {exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer, address=shown, on_close=on_close)

    # --- state --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        """Return once the connection is gone, whoever closed it."""
        await self._closed_event.wait()

    async def close_when_idle(self, timeout: float) -> None:
        """Close once the calls in flight have their answers (at most `timeout` seconds)."""
        if self._pending:
            await asyncio.wait(list(self._pending.values()), timeout=timeout)
        await self.close()

    async def close(self) -> None:
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._connection_lost()  # in case the read loop was cancelled before it ever ran
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> TTRPCClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} pending"
        return f"<TTRPCClient {self.address} {state}>"

    # --- calls --------------------------------------------------------------------------

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> M:
        where = f"ttrpc: {service}/{method}"
        if self._closed:
            raise codes.ConnectionClosed("ttrpc: closed")
        envelope = ttrpc_pb2.Request(service=service, method=method, payload=request.SerializeToString())
        if timeout is not None:
            if timeout <= 0:
                raise errors.DeadlineExceeded(where)
            envelope.timeout_nano = int(timeout * 1e9)
        if metadata:
            envelope.metadata.extend(Metadata(metadata).to_pairs())
        data = envelope.SerializeToString()
        if not wire.check_length(len(data)):
            raise errors.ResourceExhausted(f"{where}: {wire.oversized_message(len(data))}")

        stream_id = self._next_id
        if stream_id > wire.MAX_STREAM_ID:
            raise errors.ResourceExhausted(f"{where}: stream ids exhausted on this connection")
        self._next_id += 2
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            self._writer.write(wire.encode_frame(stream_id, wire.TYPE_REQUEST, data))
            async with asyncio.timeout(timeout):
                try:
                    await self._writer.drain()
                except ConnectionError:
                    self._connection_lost()
                payload = await future
        except TimeoutError as exc:
            raise errors.DeadlineExceeded(where) from exc
        finally:
            # A response arriving after a timeout or cancellation finds no waiter and is dropped.
            self._pending.pop(stream_id, None)

        try:
            response = ttrpc_pb2.Response.FromString(payload)
        except DecodeError as exc:
            raise errors.Internal(f"{where}: bad response envelope: {exc}") from exc
        if response.status.code != Code.OK:
            raise codes.error_from_status(response.status.code, response.status.message)
        try:
            return response_type.FromString(response.payload)
        except DecodeError as exc:
            raise errors.Internal(f"{where}: cannot decode {response_type.__name__}: {exc}") from exc

    # --- the connection -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    frame = await wire.read_frame(self._reader)
                except wire.FrameTooLarge as exc:
                    # ttrpc reports an oversized response to its call as RESOURCE_EXHAUSTED.
                    self._resolve(exc.header.stream_id, error=errors.ResourceExhausted(str(exc)))
                    continue
                if frame.type != wire.TYPE_RESPONSE:
                    self._resolve(frame.stream_id, error=errors.Internal("ttrpc: unknown message type received"))
                    continue
                self._resolve(frame.stream_id, payload=frame.payload)
        except (asyncio.IncompleteReadError, OSError) as exc:
            log.debug("ttrpc client %s: connection lost: %r", self.address, exc)
        finally:
            self._connection_lost()

    def _resolve(self, stream_id: int, payload: bytes = b"", error: Exception | None = None) -> None:
        future = self._pending.pop(stream_id, None)
        if future is None or future.done():
            log.debug("ttrpc client %s: message for unknown stream %d", self.address, stream_id)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(payload)

    def _connection_lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if not self._read_task.done() and self._read_task is not asyncio.current_task():
            self._read_task.cancel()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(codes.ConnectionClosed("ttrpc: closed"))
        self._closed_event.set()
        if self._on_close is not None:
            try:
                result = self._on_close()
                if inspect.isawaitable(result):
                    self._callback_task = asyncio.ensure_future(result)
            except Exception:
                log.exception("ttrpc client %s: on_close callback failed", self.address)
