"""`Server`: our HTTP/2 gRPC server on the daemon's unix socket, in place of grpc.aio's.

It has the surface supervisor/server.py uses of `grpc.aio.Server` (`add_generic_rpc_handlers`,
`add_insecure_port`, `start`, `stop`, `wait_for_termination`). Why it exists: grpcio's server
hands every call between its event-engine threads, its poller thread and the event loop
(~16 context switches per unary call here); on the event loop alone a call costs a fraction of
that (bench/h2_floor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Sequence

import grpc

from supervisor.grpcserver.admission import Admission
from supervisor.grpcserver.calls import Details, serve_call
from supervisor.grpcserver.h2 import MAX_WINDOW, Connection, Limits, SendPool, Stream

DEFAULT_MAX_MESSAGE = 4 << 20
LISTEN_BACKLOG = 4096


class Server:
    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE, limits: Limits | None = None) -> None:
        self._handlers: list[grpc.GenericRpcHandler] = []
        self._paths: list[str] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[Connection] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._admission = Admission()  # calls starting at once, shared out between connections
        self.max_message_size = max_message_size
        limits = limits or Limits()
        # A connection's request buffer holds two of the largest messages (one alone must always
        # fit, or a call could never complete).
        self.limits = dataclasses.replace(
            limits, buffer=min(MAX_WINDOW, max(limits.buffer, 2 * (max_message_size + 5))))
        self._pool = SendPool(self.limits.send_pool)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._handlers.extend(handlers)

    def add_insecure_port(self, address: str) -> int:
        if not address.startswith("unix:"):
            raise ValueError(f"only unix: addresses are served, not {address!r}")
        self._paths.append(address.removeprefix("unix:").removeprefix("//"))
        return 0

    def _lookup(self, details: Details) -> grpc.RpcMethodHandler | None:
        for handler in self._handlers:
            found = handler.service(details)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None

    def _on_stream(self, stream: Stream) -> None:
        task = asyncio.get_running_loop().create_task(
            serve_call(stream, self._lookup, self.max_message_size, self._admission))
        stream.task = task  # a client reset cancels the handler, as grpc.aio does
        self._calls.add(task)
        stream.conn.calls += 1  # until the handler has ended, reset or not: what bounds pending work
        task.add_done_callback(stream.conn.call_ended)

    def _connection(self) -> Connection:
        conn = Connection(self._on_stream, self._connections.discard, self.limits, self._calls.discard)
        conn.pool = self._pool
        self._connections.add(conn)
        return conn

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for path in self._paths:
            # asyncio's default backlog (100) refuses clients when more connect at once (grpcio
            # then fails the call UNAVAILABLE); Go servers such as containerd's listen with
            # net.core.somaxconn (4096 here). The kernel caps it at somaxconn.
            self._servers.append(await loop.create_unix_server(self._connection, path, backlog=LISTEN_BACKLOG))

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, tell clients (GOAWAY), let calls in flight finish for `grace` seconds,
        then cancel what is left and close the connections."""
        for srv in self._servers:
            srv.close()
        for conn in list(self._connections):
            conn.goaway()
        if self._calls and grace:
            await asyncio.wait(set(self._calls), timeout=grace)
        for task in list(self._calls):
            task.cancel()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=1)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._stopped.set()

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()
