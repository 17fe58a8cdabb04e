"""Kubernetes' port-forward protocol (`portforward.k8s.io`) over SPDY: for each connection the
client forwards, it opens an error stream and a data stream with the same `requestID` and the
pod's `port`; the data stream carries the bytes both ways, the error stream a message if the
port cannot be reached or the copy fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from dockyard_common.errors import DockyardError
from supervisor.cri.streaming.spdy import SpdySession, SpdyStream

log = logging.getLogger("dockyard.cri.streaming")

PROTOCOL_V1 = "portforward.k8s.io"
CHUNK = 64 << 10

Dialer = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def serve(session: SpdySession, dial: Dialer, allowed: tuple[int, ...] = ()) -> None:
    """Pair the client's streams and forward each pair until the connection ends."""
    pending: dict[str, dict[str, SpdyStream]] = {}
    running: set[asyncio.Task[None]] = set()
    try:
        while (stream := await session.accept()) is not None:
            kind = stream.headers.get("streamtype", "")
            request_id = stream.headers.get("requestid", "")
            if kind not in ("error", "data"):
                stream.reset()
                continue
            pair = pending.setdefault(request_id, {})
            if kind in pair:  # a second stream of the pair's kind: nobody would read it
                stream.reset()
                continue
            if kind == "error":
                stream.ignore_input()  # ours to write only
            pair[kind] = stream
            if len(pair) == 2:
                del pending[request_id]
                task = asyncio.create_task(_forward(pair["data"], pair["error"], dial, allowed))
                running.add(task)
                task.add_done_callback(running.discard)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _forward(data: SpdyStream, error: SpdyStream, dial: Dialer, allowed: tuple[int, ...]) -> None:
    text = data.headers.get("port", "")
    try:
        port = int(text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        await _fail(data, error, f"invalid port {text!r}")
        return
    if allowed and port not in allowed:
        await _fail(data, error, f"port {port} is not among the ports of the port-forward request")
        return
    try:
        reader, writer = await dial(port)
    except (DockyardError, OSError) as exc:
        message = exc.message if isinstance(exc, DockyardError) else (exc.strerror or str(exc))
        await _fail(data, error, f"error forwarding port {port}: {message}")
        return
    try:
        inbound = asyncio.create_task(_client_to_pod(data, writer))
        try:
            while chunk := await reader.read(CHUNK):
                await data.write(chunk)
        except OSError as exc:
            await error.write(f"error forwarding port {port}: {exc.strerror or exc}".encode())
        await data.close()
        await error.close()
        await inbound  # the client closes its side when its local connection ends
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _client_to_pod(data: SpdyStream, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


async def _fail(data: SpdyStream, error: SpdyStream, message: str) -> None:
    log.info("port-forward: %s", message)
    await error.write(message.encode(), fin=True)
    await data.close()
