"""Remote command channels over SPDY: one stream per channel, each opened by the client with a
`streamType` header (error, stdin, stdout, stderr, resize)."""

from __future__ import annotations

import asyncio

from supervisor.cri.streaming.remotecommand import STREAM_TIMEOUT
from supervisor.cri.streaming.spdy import SpdySession, SpdyStream
from supervisor.cri.streaming.types import STDERR


def expected_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> set[str]:
    """The streams a v4 client opens for such a request (no stderr with a terminal: it is stdout)."""
    names = {"error"}
    if stdin:
        names.add("stdin")
    if stdout:
        names.add("stdout")
    if stderr and not tty:
        names.add("stderr")
    if tty:
        names.add("resize")
    return names


async def collect(session: SpdySession, expected: set[str],
                  timeout: float = STREAM_TIMEOUT) -> dict[str, SpdyStream] | None:
    """Wait for the client's streams; None when the connection ended or they did not all come.
    A stream not expected, or a second of one type, is reset: nobody would read it."""
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(timeout):
            while not expected <= streams.keys():
                stream = await session.accept()
                if stream is None:
                    return None
                kind = stream.headers.get("streamtype", "")
                if kind not in expected or kind in streams:
                    stream.reset()
                    continue
                streams[kind] = stream
    except TimeoutError:
        return None
    return streams


class SpdyChannels:
    def __init__(self, session: SpdySession, streams: dict[str, SpdyStream]) -> None:
        self.session = session
        self.streams = streams
        self.has_stdin = "stdin" in streams
        self.has_resize = "resize" in streams
        for name, stream in streams.items():
            if name not in ("stdin", "resize"):
                stream.ignore_input()  # ours to write: what the client sends there is dropped
        session.refuse_new_streams = True  # the set is complete: later ones would never be read

    async def read_stdin(self) -> bytes:
        return await self.streams["stdin"].read()

    async def read_resize(self) -> bytes:
        return await self.streams["resize"].read()

    async def write(self, fd: int, data: bytes) -> None:
        stream = self.streams.get("stderr" if fd == STDERR else "stdout")
        if stream is not None:
            await stream.write(data)

    async def write_status(self, status: bytes) -> None:
        stream = self.streams.get("error")
        if stream is not None:
            await stream.write(status)

    async def wait_closed(self) -> None:
        await self.session.wait_closed()

    async def finish(self) -> None:
        """Output first, then the status: FIN on every stream of ours."""
        for name in ("stdout", "stderr", "error", "stdin", "resize"):
            stream = self.streams.get(name)
            if stream is not None:
                await stream.close()
