"""Kubernetes' remote command protocol (exec and attach) over the connection's channels:
stdin, stdout, stderr, an error channel that carries the final status, and a resize channel
carrying terminal sizes as JSON objects ({"Width": 80, "Height": 24}).

Status as protocol v4 (`v4.channel.k8s.io`) writes it, a metav1.Status in JSON: Success, or
Failure with reason NonZeroExitCode and the code in details.causes (reason ExitCode) — what
client-go turns into the exit code crictl exits with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dockyard_common.errors import DockyardError
from supervisor.cri.streaming.types import STDERR, STDOUT, ProcessSession

log = logging.getLogger("dockyard.cri.streaming")

PROTOCOL_V4 = "v4.channel.k8s.io"
PROTOCOL_V5 = "v5.channel.k8s.io"
MAX_RESIZE = 4096  # bytes of an unfinished resize message before it is dropped
STREAM_TIMEOUT = 30.0  # seconds for the client to open the streams it announced (kubelet's too)


class Channels(Protocol):
    has_stdin: bool
    has_resize: bool

    async def read_stdin(self) -> bytes: ...  # b"": the client's input ended

    async def read_resize(self) -> bytes: ...

    async def write(self, fd: int, data: bytes) -> None: ...

    async def write_status(self, status: bytes) -> None: ...

    async def wait_closed(self) -> None: ...  # the client went away


def status(exit_code: int | None, cmd: tuple[str, ...] = ()) -> bytes:
    if not exit_code:
        body: dict[str, Any] = {"metadata": {}, "status": "Success"}
    else:
        body = {"metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: error executing command "
                           f"{list(cmd)}, exit code {exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
    return json.dumps(body).encode()


def failure(message: str) -> bytes:
    return json.dumps({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
                       "code": 500}).encode()


async def serve(ch: Channels, opener: Callable[[], Awaitable[ProcessSession]], cmd: tuple[str, ...] = ()) -> None:
    """Run the session `opener` starts over `ch` until its process exits, the client detaches
    (an attach's input ends) or the client goes away (the session is closed: an exec is killed)."""
    try:
        proc = await opener()
    except DockyardError as exc:
        await ch.write_status(failure(exc.message))
        return
    output = asyncio.create_task(_pump_output(ch, proc))
    stdin = asyncio.create_task(_pump_stdin(ch, proc)) if ch.has_stdin else None
    resize = asyncio.create_task(_pump_resize(ch, proc)) if ch.has_resize else None
    gone = asyncio.create_task(ch.wait_closed())
    try:
        waiting: set[asyncio.Task[Any]] = {output, gone} | ({stdin} if stdin is not None else set())
        finished = False
        while not finished:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if gone in done and output not in done:
                return
            if stdin is not None and stdin in done:
                waiting.discard(stdin)
                finished = bool(stdin.result())  # True: the input's end detaches
            finished = finished or output in done
        try:
            if output.done():
                output.result()
            body = status(await proc.exit_code(), cmd)
        except DockyardError as exc:
            body = failure(exc.message)
        await ch.write_status(body)
    except asyncio.CancelledError:  # the daemon stops: the client is told, not left to guess
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ch.write_status(failure("the container runtime is stopping")), 1)
        raise
    finally:
        tasks = [t for t in (output, stdin, resize, gone) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await proc.close()


async def _pump_output(ch: Channels, proc: ProcessSession) -> None:
    async for fd, data in proc.output():
        await ch.write(fd if fd in (STDOUT, STDERR) else STDOUT, data)


async def _pump_stdin(ch: Channels, proc: ProcessSession) -> bool:
    while data := await ch.read_stdin():
        await proc.write(data)
    if proc.stdin_eof_ends:
        return True
    await proc.close_stdin()
    return False


async def _pump_resize(ch: Channels, proc: ProcessSession) -> None:
    """Sizes arrive as a stream of JSON objects, not framed: decode each as soon as it is whole."""
    decoder = json.JSONDecoder()
    buf = ""
    while chunk := await ch.read_resize():
        buf += chunk.decode(errors="replace")
        while buf.strip():
            buf = buf.lstrip()
            try:
                size, end = decoder.raw_decode(buf)
            except ValueError:
                if len(buf) > MAX_RESIZE:
                    buf = ""  # not a size: dropped
                break  # incomplete: wait for more
            buf = buf[end:]
            if isinstance(size, dict):
                with contextlib.suppress(DockyardError, TypeError, ValueError):
                    await proc.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
