"""Shared pieces of the ttrpc tests: a scriptable Task service, raw frames, short socket dirs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from google.protobuf.message import Message

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import RequestContext, TTRPCError, wire

TASK = shim_pb2.DESCRIPTOR.services_by_name["Task"]
SERVICE = TASK.full_name  # containerd.task.v2.Task


@contextmanager
def short_tmpdir() -> Iterator[str]:
    """A private dir under /tmp: pytest's tmp_path can exceed a unix socket path's 107 bytes."""
    path = tempfile.mkdtemp(prefix="ttrpc-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ScriptedTask:
    """Implements State and Connect; State's request id says what to do."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0
        self.finished = 0
        self.contexts: list[RequestContext] = []

    async def State(self, req: shim_pb2.StateRequest, ctx: RequestContext) -> Message | None:
        self.contexts.append(ctx)
        cmd, _, arg = req.id.partition(":")
        try:
            if cmd == "echo":
                return shim_pb2.StateResponse(id=arg, exec_id=req.exec_id)
            if cmd == "sleep":
                self.started.set()
                await asyncio.sleep(float(arg))
                return shim_pb2.StateResponse(id=req.id)
            if cmd == "block":
                self.started.set()
                await self.release.wait()
                return shim_pb2.StateResponse(id=req.id)
            if cmd == "md":
                return shim_pb2.StateResponse(id=ctx.metadata.get_first(arg) or "", bundle=",".join(ctx.metadata))
            if cmd == "deadline":
                left = ctx.time_remaining()
                return shim_pb2.StateResponse(id="none" if left is None else f"{left:.3f}")
            if cmd == "missing":
                raise errors.NotFound(f"container {arg}")
            if cmd == "exists":
                raise errors.AlreadyExists(f"container {arg}")
            if cmd == "precondition":
                raise errors.FailedPrecondition(arg)
            if cmd == "raw":
                raise TTRPCError(int(arg), "raw status")
            if cmd == "boom":
                raise ValueError("boom")
            if cmd == "none":
                return None
            if cmd == "wrong":
                return shim_pb2.ConnectResponse(shim_pid=1)
            if cmd == "big":
                return shim_pb2.StateResponse(bundle="b" * int(arg))
            if cmd == "self-cancel":
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                fut.cancel()
                await fut
            raise errors.InvalidArgument(f"unknown command {cmd!r}")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.finished += 1

    async def Connect(self, req: shim_pb2.ConnectRequest, ctx: RequestContext) -> shim_pb2.ConnectResponse:
        peer = ctx.peer
        return shim_pb2.ConnectResponse(shim_pid=os.getpid(), task_pid=peer.pid if peer else 0)


def request_frame(
    stream_id: int, method: str, message: Message | bytes, *, service: str = SERVICE, timeout_nano: int = 0
) -> bytes:
    payload = message if isinstance(message, bytes) else message.SerializeToString()
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
    return wire.encode_frame(stream_id, wire.TYPE_REQUEST, req.SerializeToString())


def response_frame(stream_id: int, message: Message | None = None, code: int = 0, text: str = "") -> bytes:
    resp = ttrpc_pb2.Response(payload=message.SerializeToString() if message else b"")
    resp.status.code = code
    resp.status.message = text
    return wire.encode_frame(stream_id, wire.TYPE_RESPONSE, resp.SerializeToString())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, ttrpc_pb2.Response]:
    frame = await asyncio.wait_for(wire.read_frame(reader), 10)
    assert frame.type == wire.TYPE_RESPONSE
    return frame.stream_id, ttrpc_pb2.Response.FromString(frame.payload)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_server(path: str, script: Script) -> AsyncIterator[None]:
    """A raw unix-socket peer that runs `script` per connection; waits for every script on exit."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # type: ignore[arg-type]
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    srv = await asyncio.start_unix_server(handle, path)
    try:
        yield
    finally:
        srv.close()
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await srv.wait_closed()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
