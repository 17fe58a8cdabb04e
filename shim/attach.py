"""The attach socket of a container's init: its output to every client, their input to its stdin.

Protocol and socket: dockyard_common/attachsock.py. Made at Create for an init whose output is
captured (it has a log) or whose stdin is open; closed (and unlinked) at Delete.

Output reaches the clients through the init's `ProcessIO` tap: while at least one client is
connected, every chunk the shim reads from the process (by the loop's copier, or by the log's
thread, which hands it to the loop) is also framed to each client. Without clients no tap is
set, so the log's fast path costs nothing more. A client that falls `MAX_BEHIND` bytes behind
is disconnected: it never holds up the container, its log or the other clients.

Input from any client goes into the stdin the shim keeps for the init (`ProcessIO.write_stdin`),
one frame at a time, in order. At the init's exit (its output all sent) each client gets EXIT
and is closed; a client that comes later gets HELLO and EXIT at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from dockyard_common import attachsock as wire
from shim.stdio import ProcessIO

log = logging.getLogger("dockyard.shim.attach")

MAX_BEHIND = 8 << 20  # bytes queued to one client before it is dropped


class AttachServer:
    def __init__(self, bundle: str, io: ProcessIO, server: asyncio.Server) -> None:
        self.bundle = bundle
        self.io = io
        self._server = server
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._exit: bytes | None = None  # the EXIT frame, once the init's output is all sent

    @classmethod
    async def start(cls, bundle: str, io: ProcessIO) -> AttachServer:
        sock = wire.listen(bundle)
        holder: list[AttachServer] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._serve(reader, writer)

        try:
            server = await asyncio.start_unix_server(handle, sock=sock, limit=wire.MAX_PAYLOAD + 8)
        except BaseException:
            sock.close()
            raise
        holder.append(cls(bundle, io, server))
        return holder[0]

    # ----- clients -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writer.write(wire.encode_json(wire.HELLO, {"tty": self.io.paths.terminal, "stdin": self.io.stdin_open}))
        if self._exit is not None:
            writer.write(self._exit)
            await self._close(writer)
            self._handlers.discard(task)
            return
        self._clients.add(writer)
        self.io.tap = self._publish
        try:
            while (frame := await wire.read_frame(reader)) is not None:
                kind, payload = frame
                if kind == wire.STDIN:
                    await self.io.write_stdin(payload)
                elif kind == wire.CLOSE_STDIN:
                    self.io.close_attached_stdin()
        except (wire.FrameError, OSError) as exc:
            log.warning("attach client of %s: %s", os.path.basename(self.bundle), exc)
        finally:
            self._drop(writer)
            await self._close(writer)
            self._handlers.discard(task)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._clients.discard(writer)
        if not self._clients:
            self.io.tap = None

    def _publish(self, stream: str, data: bytes) -> None:
        frame = wire.encode(wire.STDERR if stream == "stderr" else wire.STDOUT, data)
        for writer in list(self._clients):
            if writer.transport.get_write_buffer_size() > MAX_BEHIND:
                log.warning("attach client of %s fell %d bytes behind: disconnected",
                            os.path.basename(self.bundle), MAX_BEHIND)
                self._drop(writer)
                writer.transport.abort()
                continue
            writer.write(frame)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    # ----- the end -------------------------------------------------------------------------------

    def exited(self, status: int, exited_at: int) -> None:
        """The init exited and its output was all published: every client gets EXIT and is closed
        (once the frames are sent; the transport closes after its buffer is flushed)."""
        self._exit = wire.encode_json(wire.EXIT, {"status": status, "exited_at": exited_at})
        for writer in list(self._clients):
            self._drop(writer)
            writer.write(self._exit)
            writer.close()

    async def close(self) -> None:
        """Delete: no more clients; the socket file goes."""
        self._server.close()
        for writer in list(self._clients):
            self._drop(writer)
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.bundle, wire.SOCKET))
