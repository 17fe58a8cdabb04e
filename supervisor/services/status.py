"""The one place where domain errors meet gRPC status codes, in both directions.

The server wraps every servicer method with `rpc` (unary) or `rpc_stream` (server
streaming); the client SDK uses `error_from_status` to raise the same error kinds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dockyard_common import errors

log = logging.getLogger("dockyard.rpc")

CODES: dict[type[errors.DockyardError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotImplementedYet: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unknown: grpc.StatusCode.UNKNOWN,
}
_KINDS = {code: kind for kind, code in CODES.items()}


def code_for(err: errors.DockyardError) -> grpc.StatusCode:
    for kind in type(err).__mro__:
        if kind in CODES:
            return CODES[kind]  # type: ignore[index]
    return grpc.StatusCode.UNKNOWN


def error_from_status(code: grpc.StatusCode, details: str) -> errors.DockyardError:
    """The domain error for a status a server sent (the client's side of the mapping)."""
    kind = _KINDS.get(code, errors.Unknown)
    suffix = ": " + kind.kind
    message = details[: -len(suffix)] if details.endswith(suffix) else details
    return kind(message)


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
