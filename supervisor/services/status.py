"""The one place where domain errors meet gRPC status codes in the daemon.

The server wraps every servicer method with `rpc` (unary) or `rpc_stream` (server
streaming). Which code an error kind gets is `dockyard_common.codes`' table, the one the
shim's ttrpc and the client SDK (which maps codes back to the same kinds) use too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dockyard_common import codes, errors

log = logging.getLogger("dockyard.rpc")

# grpc.StatusCode by number: the table itself is dockyard_common.codes, shared with ttrpc and the SDK
_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def code_for(err: errors.DockyardError) -> grpc.StatusCode:
    return _GRPC_CODES[codes.code_for(err)]


# What a failed client-streaming call still reads of the client's upload before its status goes out.
DRAIN_SECONDS = 10.0
DRAIN_BYTES = 64 << 20


async def _drain(request: Any) -> None:
    """A call that fails while its client is still streaming to it: read (and drop) the rest of
    the upload, within bounds, before the status goes out. grpc.aio clients whose write fails
    because the call has ended report INTERNAL "Internal error from Core" instead of the status
    the server sent (grpc/grpc#36066): `dock cp` into a read-only container said that under load
    instead of "read-only"."""
    if not hasattr(request, "__aiter__"):
        return
    read = 0

    async def rest() -> None:
        nonlocal read
        async for message in request:
            read += message.ByteSize() if hasattr(message, "ByteSize") else len(message)
            if read > DRAIN_BYTES:
                return

    with contextlib.suppress(Exception):  # the client gone, or too slow: the status goes out anyway
        await asyncio.wait_for(rest(), DRAIN_SECONDS)


# The longest status message sent, in UTF-8 bytes. It travels in a trailer, percent-encoded
# (a non-ASCII byte takes three), and gRPC clients refuse a header block past their limit (grpc
# core: 8 KiB soft, 16 KiB hard) with RESOURCE_EXHAUSTED "received metadata size exceeds ...
# limit": an error quoting a caller's 70 000-character id reached the client as that instead of
# its own code. The middle goes; both ends (what, and the kind) stay.
MAX_MESSAGE = 2048


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message`, its middle elided if it is longer than `limit` bytes of UTF-8."""
    raw = message.encode(errors="replace")
    if len(raw) <= limit:
        return message
    keep = (limit - 40) // 2
    head, tail = raw[:keep].decode(errors="ignore"), raw[-keep:].decode(errors="ignore")
    return f"{head}...({len(message) - len(head) - len(tail)} characters)...{tail}"


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException, request: Any = None) -> None:
    await _drain(request)
    if isinstance(exc, errors.DockyardError):
        log.debug("%s: %s", method, bounded(str(exc)))
        await context.abort(code_for(exc), bounded(str(exc)))
    log.exception("%s failed unexpectedly", method)
    err = errors.unexpected(exc)
    await context.abort(code_for(err), bounded(f"{method}: {err}"))


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def rpc(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wrap a unary (or stream-in, unary-out) method: domain errors become statuses (a stream-in
    call's upload is read out first, see `_drain`)."""

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every failure leaves as a status, never a traceback
            await _abort(context, fn.__qualname__, exc, request)
            raise AssertionError("unreachable: abort raises") from exc

    return wrapper


def rpc_stream(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]], *, upload: bool = False,
) -> Callable[[Self, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a server-streaming method (an async generator). `upload`: the requests are an
    upload the client half-closes when it is sent, read out on failure (see `_drain`)."""

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        items = fn(self, request, context)
        try:
            try:
                async for item in items:
                    yield item
            finally:
                # Closed when the call ends early (the client went, its answers were refused):
                # the method's own `finally` runs now, not when the garbage collector's finalizer
                # gets to it; 1 000 refused Content.Read calls held 1 MiB and a reader each until
                # the last of them had ended.
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, fn.__qualname__, exc, request if upload else None)

    return wrapper


def rpc_bidi(
    fn: Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a bidirectional-streaming method (an async generator over the request iterator).

    The mapping is `rpc_stream`'s; a client cancelling the call is not an error and passes
    through (grpc cancels the handler task), so cleanup belongs in the method's `finally`.
    """
    return rpc_stream(fn)  # type: ignore[arg-type]


def rpc_upload(
    fn: Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """`rpc_bidi` for a method whose requests are an upload (an archive in chunks) and whose
    answers are progress: on failure the rest of the upload is read out before the status goes
    out. Not for conversations (content Write, Attach): their client waits for an answer, or
    never half-closes, and the status would wait for the drain's deadline."""
    return rpc_stream(fn, upload=True)  # type: ignore[arg-type]
