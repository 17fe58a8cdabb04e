"""Attaching to a task's init: one connection to its shim's attach socket per attached client.

The shim does the fan-out (every connection sees the output from the moment it connected) and
keeps the container's stdin (dockyard_common/attachsock.py has the socket's protocol). Here: find
the task, refuse what cannot be attached, connect, and turn the frames into values; input from a
terminal is scanned for the detach keys (as Docker does, only a terminal's), which end the
session with the container left running.

    session = await open_session(tasks, "default", "web", stdin=True, detach_keys="")
    async for item in session.output():   # Output(stream, data) … then Exited(status, at) or nothing
        ...
    detached = await session.write(b"ls\\r")  # True: the detach keys were typed
    await session.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dockyard_common import attachsock as wire
from dockyard_common import detachkeys
from dockyard_common.errors import FailedPrecondition, NotFound, Unavailable, error_text
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.task import Task
from supervisor.runtime.types import Status

log = logging.getLogger("dockyard.attach")

HELLO_TIMEOUT = 10.0


@dataclass(frozen=True)
class Output:
    stream: str  # "stdout" or "stderr"
    data: bytes


@dataclass(frozen=True)
class Exited:
    status: int
    exited_at_ns: int


def _not_running(cid: str) -> FailedPrecondition:
    return FailedPrecondition(f"cannot attach to container {cid}: it is not running (start it first)")


class AttachSession:
    def __init__(self, task: Task, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tty: bool,
                 stdin: bool, keys: bytes) -> None:
        self.task = task
        self.tty = tty
        self.stdin = stdin  # input is taken: the client asked and the container's stdin is open
        self._reader = reader
        self._writer = writer
        self._scanner = detachkeys.Scanner(keys) if tty and stdin else None

    async def output(self) -> AsyncIterator[Output | Exited]:
        """The container's output; the last item is Exited, unless the shim went away first."""
        stream = {wire.STDOUT: "stdout", wire.STDERR: "stderr"}
        try:
            while (frame := await wire.read_frame(self._reader)) is not None:
                kind, payload = frame
                if kind in stream:
                    yield Output(stream[kind], payload)
                elif kind == wire.EXIT:
                    info = wire.decode_json(payload)
                    yield Exited(int(info.get("status", 0)), int(info.get("exited_at", 0)))
                    return
        except (wire.FrameError, OSError, ValueError) as exc:
            log.warning("attach to %s/%s: %s", self.task.namespace, self.task.id, exc)

    async def write(self, data: bytes) -> bool:
        """Input for the container; True when it held the detach keys (the rest is dropped)."""
        if not self.stdin:
            return False
        detached = False
        if self._scanner is not None:
            data, detached = self._scanner.feed(data)
        for i in range(0, len(data), wire.MAX_PAYLOAD):
            self._writer.write(wire.encode(wire.STDIN, data[i:i + wire.MAX_PAYLOAD]))
        with contextlib.suppress(OSError):
            await self._writer.drain()  # the shim writes it into the process: its pace is ours
        return detached

    async def close_stdin(self) -> None:
        if self.stdin:
            self._writer.write(wire.encode(wire.CLOSE_STDIN))
            with contextlib.suppress(OSError):
                await self._writer.drain()

    async def resize(self, width: int, height: int) -> None:
        if self.tty and width and height:
            await self.task.resize_pty(width, height)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def open_session(tasks: TaskManager, namespace: str, cid: str, *, stdin: bool,
                       detach_keys: str) -> AttachSession:
    """Attach to the init of container `cid`'s task (running, or created and not yet started).
    FailedPrecondition when it does not run or its stdio is not the shim's to hand out."""
    keys = detachkeys.parse(detach_keys)  # InvalidArgument before anything else
    try:
        task = tasks.get(namespace, cid)
    except NotFound:
        raise _not_running(cid) from None
    if (await task.state()).status == Status.STOPPED:
        raise _not_running(cid)
    try:
        reader, writer = await wire.connect(str(task.bundle.path))
    except FileNotFoundError:
        raise FailedPrecondition(f"cannot attach to container {cid}: its shim does not capture its output "
                                 "(containers dock creates have a log; other clients' have their own FIFO stdio)"
                                 ) from None
    except ConnectionRefusedError:
        raise _not_running(cid) from None
    except OSError as exc:
        raise Unavailable(f"cannot attach to container {cid}: {exc.strerror or exc}") from None
    try:
        frame = await asyncio.wait_for(wire.read_frame(reader), HELLO_TIMEOUT)
        if frame is None or frame[0] != wire.HELLO:
            raise _not_running(cid)
        hello = wire.decode_json(frame[1])
    except (TimeoutError, wire.FrameError, OSError) as exc:
        writer.close()
        raise Unavailable(f"cannot attach to container {cid}: its shim did not answer ({error_text(exc)})") from None
    except BaseException:
        writer.close()
        raise
    return AttachSession(task, reader, writer, bool(hello.get("tty")), stdin and bool(hello.get("stdin")), keys)
