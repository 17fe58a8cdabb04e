"""The one place where domain errors meet gRPC status codes in the daemon.

The server wraps every servicer method with `rpc` (unary) or `rpc_stream` (server
streaming). Which code an error kind gets is `dockyard_common.codes`' table, the one the
shim's ttrpc and the client SDK (which maps codes back to the same kinds) use too.
"""

from __future__ import annotations

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


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    if isinstance(exc, errors.DockyardError):
        log.debug("%s: %s", method, exc)
        await context.abort(code_for(exc), str(exc))
    log.exception("%s failed unexpectedly", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error: {exc}")


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def rpc(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wrap a unary (or stream-in, unary-out) method: domain errors become statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every failure leaves as a status, never a traceback
            await _abort(context, fn.__qualname__, exc)
            raise AssertionError("unreachable: abort raises") from exc

    return wrapper


def rpc_stream(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a server-streaming method (an async generator)."""

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, fn.__qualname__, exc)

    return wrapper


def rpc_bidi(
    fn: Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Self, AsyncIterator[Req], grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a bidirectional-streaming method (an async generator over the request iterator).

    The mapping is `rpc_stream`'s; a client cancelling the call is not an error and passes
    through (grpc cancels the handler task), so cleanup belongs in the method's `finally`.
    """
    return rpc_stream(fn)  # type: ignore[arg-type]
