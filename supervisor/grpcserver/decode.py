"""Malformed request messages: one answer on both servers the daemon can run.

A request whose gRPC framing is fine but whose bytes do not parse as the method's message is
the client's fault: the call ends INTERNAL with grpc-go's plain wording ("grpc: error
unmarshalling request: ..."), no Python class name, no traceback in the log. Our server does
it in calls.py. grpcio's aio server deserializes before the handler runs and answers any
failure UNKNOWN "Unexpected <class ...>" with a logged traceback, so for that server
`DecodeGuard` wraps the daemon's generic handler: requests reach the behaviour as bytes and are
decoded there, where a failure can abort the call properly.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc


def unmarshal_error(exc: BaseException) -> str:
    return f"grpc: error unmarshalling request: {exc or 'malformed message'}"


async def _decode(deserializer: Callable[[bytes], Any], raw: bytes, context: grpc.aio.ServicerContext) -> Any:
    try:
        return deserializer(raw)
    except Exception as exc:
        await context.abort(grpc.StatusCode.INTERNAL, unmarshal_error(exc))


async def _decoded(requests: AsyncIterator[bytes], deserializer: Callable[[bytes], Any],
                   context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for raw in requests:
        yield await _decode(deserializer, raw, context)


def guarded(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` with its request decoding moved into the behaviour (async behaviours only:
    grpcio runs sync ones in threads, and the daemon has none)."""
    deser = handler.request_deserializer
    ser = handler.response_serializer
    if deser is None:
        return handler
    if not handler.request_streaming and not handler.response_streaming:
        unary_unary = handler.unary_unary
        if not inspect.iscoroutinefunction(unary_unary):
            return handler

        async def uu(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await unary_unary(await _decode(deser, raw, context), context)
        return grpc.unary_unary_rpc_method_handler(uu, None, ser)
    if not handler.request_streaming:
        unary_stream = handler.unary_stream
        if inspect.isasyncgenfunction(unary_stream):
            async def us_gen(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                request = await _decode(deser, raw, context)
                async with contextlib.aclosing(unary_stream(request, context)) as replies:
                    async for reply in replies:
                        yield reply
            return grpc.unary_stream_rpc_method_handler(us_gen, None, ser)
        if inspect.iscoroutinefunction(unary_stream):
            async def us_co(raw: bytes, context: grpc.aio.ServicerContext) -> None:
                await unary_stream(await _decode(deser, raw, context), context)
            return grpc.unary_stream_rpc_method_handler(us_co, None, ser)
        return handler
    if not handler.response_streaming:
        stream_unary = handler.stream_unary
        if not inspect.iscoroutinefunction(stream_unary):
            return handler

        async def su(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await stream_unary(_decoded(requests, deser, context), context)
        return grpc.stream_unary_rpc_method_handler(su, None, ser)
    stream_stream = handler.stream_stream
    if inspect.isasyncgenfunction(stream_stream):
        async def ss_gen(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with contextlib.aclosing(stream_stream(_decoded(requests, deser, context), context)) as replies:
                async for reply in replies:
                    yield reply
        return grpc.stream_stream_rpc_method_handler(ss_gen, None, ser)
    if inspect.iscoroutinefunction(stream_stream):
        async def ss_co(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
            await stream_stream(_decoded(requests, deser, context), context)
        return grpc.stream_stream_rpc_method_handler(ss_co, None, ser)
    return handler


class DecodeGuard(grpc.GenericRpcHandler):
    """`inner`'s handlers, `guarded`, for grpcio's aio server (each method wrapped once)."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._inner.service(handler_call_details)
        if found is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not found:
            cached = self._wrapped[method] = (found, guarded(found))
        return cached[1]
