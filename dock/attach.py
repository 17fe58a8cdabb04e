"""Attaching to a container's stdio over dockyard.attach.v1 (`dock attach`, `dock run -it`, `dock start -ai`).

    code = await attach(client, "web", AttachOptions(stdin=True))   # its exit status; None: detached

The daemon connects the call to the container's shim; we copy its output to ours, our stdin to
it, keep its terminal the size of ours (SIGWINCH → resize), and put our terminal in raw mode
while a tty is attached with input. The detach keys (ctrl-p ctrl-q unless `detach_keys`) are
recognised by the daemon in a terminal's input: the call then ends with `detached` and we return
None, the container still running. `on_attached` runs once the daemon has attached us and before any
input is read: `dock run` starts the task there, so not a byte of output is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from dockyard_api.dockyard.attach.v1 import attach_pb2 as pb
from dockyard_api.dockyard.attach.v1 import attach_pb2_grpc as pb_grpc
from dockyard_common.errors import DockyardError, Unavailable

if TYPE_CHECKING:
    from dock.client import Client

CHUNK = 32 * 1024


@dataclass
class AttachOptions:
    stdin: bool = True  # send our input (taken only when the container has an open stdin)
    detach_keys: str = ""  # Docker's syntax; "" is ctrl-p,ctrl-q
    close_stdin: bool = False  # our stdin's EOF closes the container's (`dock run -i`, Docker's StdinOnce)
    in_fd: int = 0
    out_fd: int = 1
    err_fd: int = 2


@dataclass(frozen=True)
class Attached:
    tty: bool
    stdin: bool


class AttachCall:
    """One Attach call: `open` it, then `send_*` and `responses`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._call: Any = pb_grpc.AttachStub(client.channel).Attach(metadata=client.metadata())
        self._writing = asyncio.Lock()  # grpc takes one write at a time (input and resizes race)

    async def open(self, cid: str, stdin: bool, detach_keys: str) -> Attached:
        await self._write(pb.AttachRequest(open=pb.Open(container_id=cid, stdin=stdin, detach_keys=detach_keys)))
        first = await self._read()
        if first is None or first.WhichOneof("response") != "attached":
            raise Unavailable(f"attach to {cid}: the daemon did not confirm the attach")
        return Attached(first.attached.tty, first.attached.stdin)

    async def _write(self, req: pb.AttachRequest) -> None:
        try:
            async with self._writing:
                await self._call.write(req)
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None
        except asyncio.InvalidStateError:
            pass  # the call is over: what it says comes from `_read`

    async def _read(self) -> pb.AttachResponse | None:
        try:
            msg = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None
        return None if msg is grpc.aio.EOF else msg  # type: ignore[no-any-return]

    async def send_stdin(self, data: bytes) -> None:
        await self._write(pb.AttachRequest(stdin=data))

    async def send_close_stdin(self) -> None:
        await self._write(pb.AttachRequest(close_stdin=True))

    async def send_resize(self, width: int, height: int) -> None:
        await self._write(pb.AttachRequest(resize=pb.Resize(width=width, height=height)))

    async def next(self) -> pb.AttachResponse | None:
        return await self._read()

    def cancel(self) -> None:
        self._call.cancel()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pump_stdin(fd: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    """Our stdin into `queue` (b"" at EOF), in a thread: making a shared terminal non-blocking
    would change it for everyone else who uses it."""
    try:
        while data := os.read(fd, CHUNK):
            loop.call_soon_threadsafe(queue.put_nowait, data)
    except OSError:
        pass
    with contextlib.suppress(RuntimeError):  # the loop may be gone already
        loop.call_soon_threadsafe(queue.put_nowait, b"")


async def attach(client: Client, cid: str, opts: AttachOptions,
                 on_attached: Callable[[Attached], Awaitable[object]] | None = None,
                 terminal: Callable[[int], contextlib.AbstractContextManager[None]] | None = None,
                 size_of: Callable[[int], tuple[int, int] | None] | None = None) -> int | None:
    """Attach until the container exits (its status) or we detach (None). `terminal(fd)` puts our
    terminal in raw mode for the duration; `size_of(fd)` reads its size (dock.runner has both)."""
    call = AttachCall(client)
    try:
        attached = await call.open(cid, opts.stdin, opts.detach_keys)
        if on_attached is not None:
            await on_attached(attached)
        raw: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if attached.tty and attached.stdin and terminal is not None and os.isatty(opts.in_fd):
            raw = terminal(opts.in_fd)
        with raw:
            return await _session(call, attached, opts, size_of)
    finally:
        call.cancel()


async def _session(call: AttachCall, attached: Attached, opts: AttachOptions,
                   size_of: Callable[[int], tuple[int, int] | None] | None) -> int | None:
    loop = asyncio.get_running_loop()
    jobs: list[asyncio.Task[None]] = []
    failed: list[BaseException] = []
    resizing = attached.tty and size_of is not None

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        # A send that fails ends the session: its error, not a read that would wait for ever.
        def done(job: asyncio.Task[None]) -> None:
            error = None if job.cancelled() else job.exception()
            if error is not None:
                failed.append(error)
                call.cancel()

        job = loop.create_task(coro)
        job.add_done_callback(done)
        jobs.append(job)

    def on_resize() -> None:
        size = size_of(opts.out_fd) if size_of is not None else None
        if size is not None:
            spawn(call.send_resize(*size))

    if resizing:
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
        on_resize()
    if attached.stdin:
        spawn(_send_input(call, opts))
    try:
        while (msg := await _next(call, failed)) is not None:
            kind = msg.WhichOneof("response")
            if kind == "output":
                target = opts.err_fd if msg.output.stream == "stderr" else opts.out_fd
                # A BrokenPipeError (nobody reads our output any more) ends the session: the
                # container goes on, as after a detach; the command ends as a pipeline's writer does.
                await asyncio.to_thread(_write_all, target, msg.output.data)
            elif kind == "end":
                return None if msg.end.detached else msg.end.exit_status
        raise Unavailable("the attach ended without the container's exit (the daemon went away?)")
    finally:
        if resizing:
            loop.remove_signal_handler(signal.SIGWINCH)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def _next(call: AttachCall, failed: list[BaseException]) -> pb.AttachResponse | None:
    try:
        return await call.next()
    except (asyncio.CancelledError, DockyardError):
        if failed:  # the call was cancelled because a send failed: that is the error
            raise failed[0] from None
        raise


async def _send_input(call: AttachCall, opts: AttachOptions) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    threading.Thread(target=_pump_stdin, args=(opts.in_fd, asyncio.get_running_loop(), queue),
                     name="dock-attach-stdin", daemon=True).start()
    while data := await queue.get():
        await call.send_stdin(data)
    if opts.close_stdin:
        await call.send_close_stdin()
