"""gRPC calls over `h2.Stream`s: framing, metadata, deadlines, status, and the servicer context.

Handlers are grpcio's own `RpcMethodHandler`s (what the generated `add_*_to_server` functions
build), run the way grpc.aio runs them: unary and client-streaming behaviours return the
reply; server-streaming and bidirectional ones are async generators (or write through
`context.write`); request streams are async iterators (or `context.read`). `Context` offers the
part of `grpc.aio.ServicerContext` that servicers use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import re
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import quote

import grpc

from supervisor.grpcserver.admission import Admission, Slot
from supervisor.grpcserver.decode import unmarshal_error
from supervisor.grpcserver.h2 import (
    CANCEL,
    INTERNAL_ERROR,
    RequestRefused,
    ResponseRefused,
    Stream,
    StreamReset,
    encode_headers,
)

log = logging.getLogger("dockyard.grpc")

_RESERVED = frozenset(("te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                       "grpc-message-type"))
# What a new call must leave room for in its connection's send buffer: our largest streamed
# message (Content.Read's 1 MiB chunks).
NEW_CALL_RESERVE = 1 << 20
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
# The blocks nearly every call sends, encoded once (our blocks do not depend on HPACK state).
_RESPONSE_BLOCK = encode_headers(_RESPONSE_HEADERS)
_OK_BLOCK = encode_headers([("grpc-status", "0")])


class Details:
    """grpc.HandlerCallDetails for the generic handler lookup."""

    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


# gRPC's grammar: at most 8 ASCII digits and a unit. Anything else is ignored (no deadline), as
# grpc core does; what str.isdigit() took before included '²' (a latin-1 header byte), and
# 5 000 digits, which int() refused and a float could not hold: the call went unanswered.
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")


def parse_timeout(text: str) -> float | None:
    match = _TIMEOUT.fullmatch(text)
    if match is None:
        return None
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]


def metadata_of(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str | bytes], ...]:
    """The call's metadata; `-bin` values decoded. _Status INTERNAL for one that is not base64
    (grpc-go's answer), instead of an exception before the call could answer."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name.startswith(":") or name in _RESERVED:
            continue
        if name.endswith("-bin"):
            try:  # padded or not, as grpc-go takes them; nothing outside the alphabet
                out.append((name, base64.b64decode(value + "=" * (-len(value) % 4), validate=True)))
            except ValueError:  # binascii.Error
                raise _Status(grpc.StatusCode.INTERNAL,
                              f"malformed binary metadata in header {name[:100]!r}") from None
        else:
            out.append((name, value))
    return tuple(out)


def _encode_metadata(md: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    out = []
    for key, value in md or ():
        if isinstance(value, bytes):
            out.append((key.lower(), base64.b64encode(value).decode().rstrip("=")))
        else:
            out.append((key.lower(), value))
    return out


class Messages:
    """Length-prefixed gRPC messages out of a stream's request data. A message's bytes are
    released to the connection (its window credited) when the message is handed over."""

    def __init__(self, stream: Stream, max_size: int) -> None:
        self.stream = stream
        self.max_size = max_size
        self.buf = bytearray()
        self.ended = False

    async def next(self) -> bytes | None:
        while True:
            if len(self.buf) >= 5:
                if self.buf[0] != 0:
                    raise _Status(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not supported")
                size = struct.unpack(">I", self.buf[1:5])[0]
                if size > self.max_size:
                    raise _Status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"received message larger than max ({size} vs. {self.max_size})")
                if len(self.buf) >= 5 + size:
                    msg = bytes(self.buf[5:5 + size])
                    del self.buf[:5 + size]
                    self.stream.release(5 + size)
                    return msg
                need = 5 + size - len(self.buf)
            else:
                need = 5 - len(self.buf) if self.buf else 0
            if self.ended:
                if self.buf:
                    raise _Status(grpc.StatusCode.INTERNAL, "request ended inside a message")
                return None
            try:
                chunk = await self.stream.read(need)
            except RequestRefused as exc:
                raise _Status(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
            if chunk is None:
                self.ended = True
            else:
                self.buf += chunk


class _Status(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    """The servicer context of one call (the subset of grpc.aio.ServicerContext in use)."""

    def __init__(self, stream: Stream, metadata: tuple[tuple[str, str | bytes], ...], deadline: float | None,
                 messages: Messages, handler: grpc.RpcMethodHandler | None) -> None:
        self._stream = stream
        self._metadata = metadata
        self._deadline = deadline
        self._serializer: Callable[[Any], bytes] | None = handler.response_serializer if handler else None
        self._deserializer: Callable[[bytes], Any] | None = handler.request_deserializer if handler else None
        self._messages = messages
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: list[tuple[str, str]] = []
        self._initial: list[tuple[str, str]] | None = None
        self.headers_sent = False
        self._done_callbacks: list[Callable[[Context], None]] = []
        self.cancelled_ = False
        self._refused: str | None = None  # why an answer was refused (ResponseRefused)
        self.slot: Slot | None = None  # the call's admission slot, given back at its first answer

    # -- what servicers call --------------------------------------------------------------

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort with OK")
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = _encode_metadata(trailing_metadata)
        raise grpc.aio.AbortError(f"{code}: {details}")

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, md: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = _encode_metadata(md)

    async def send_initial_metadata(self, md: Sequence[tuple[str, str | bytes]]) -> None:
        self._initial = _encode_metadata(md)
        self._send_headers()

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self.cancelled_

    def done(self) -> bool:
        return self._stream.local_closed

    def peer(self) -> str:
        return "unix:"

    def add_done_callback(self, callback: Callable[[Context], None]) -> None:
        self._done_callbacks.append(callback)

    async def write(self, message: Any) -> None:
        await self.send(self.framed(message))

    def framed(self, message: Any) -> bytes:
        """`message` serialized and length-prefixed: what `send` sends. Refused before the
        copy that frames it when it could not wait for the peer (`Connection.answers_refused`)."""
        data = self._serializer(message) if self._serializer else message
        refused = self._stream.conn.answers_refused(len(data) + 5)
        if refused:
            self._refused = refused
            raise ResponseRefused(refused)
        return b"\x00" + struct.pack(">I", len(data)) + data

    async def send(self, framed: bytes) -> None:
        if self.slot is not None:
            self.slot.release()
        self._send_headers()
        try:
            await self._stream.send_data(framed)
        except ResponseRefused as exc:
            self._refused = str(exc)  # the call's status, whatever the handler makes of the exception
            raise

    async def read(self) -> Any:
        try:
            raw = await self._messages.next()
            if raw is None:
                return grpc.aio.EOF
            return _decode(self._deserializer, raw)
        except _Status as st:  # inside the handler: end the call the way abort does
            await self.abort(st.code, st.details)

    # -- the call's end -------------------------------------------------------------------

    def _send_headers(self) -> None:
        if not self.headers_sent:
            self.headers_sent = True
            self._stream.send_headers(_RESPONSE_HEADERS + self._initial if self._initial else _RESPONSE_BLOCK)

    def finish(self, code: grpc.StatusCode, details: str) -> None:
        if self._refused is not None:
            code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, self._refused
        elif self._code is not None:  # set_code / abort win over what the handler's end implies
            code, details = self._code, self._details or details
        if code is grpc.StatusCode.OK and not details and not self._trailing and self.headers_sent:
            self._stream.send_headers(_OK_BLOCK, end_stream=True)  # the common end, pre-encoded
            self._run_done_callbacks()
            return
        trailers = [("grpc-status", str(code.value[0]))]
        if details:
            trailers.append(("grpc-message", quote(details, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
        trailers += self._trailing
        if self.headers_sent:
            self._stream.send_headers(trailers, end_stream=True)
        else:  # trailers-only
            self.headers_sent = True
            self._stream.send_headers(_RESPONSE_HEADERS + (self._initial or []) + trailers, end_stream=True)
        self._run_done_callbacks()

    def _run_done_callbacks(self) -> None:
        for cb in self._done_callbacks:
            with contextlib.suppress(Exception):
                cb(self)


def _decode(deserializer: Callable[[bytes], Any] | None, raw: bytes) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except Exception as exc:  # a malformed message is the client's fault: INTERNAL, as grpc-go answers
        raise _Status(grpc.StatusCode.INTERNAL, unmarshal_error(exc)) from None


async def _requests(ctx: Context) -> AsyncIterator[Any]:
    """The request iterator a streaming handler reads: a broken request ends the call with its
    status (the handler's own exception handling sees an abort, not an error of its own)."""
    while True:
        message = await ctx.read()
        if message is grpc.aio.EOF:
            return
        yield message


async def serve_call(stream: Stream, lookup: Callable[[Details], grpc.RpcMethodHandler | None],
                     max_message_size: int, admission: Admission) -> None:
    """Run one call to its end: a status is always sent, whatever the handler does; should this
    module itself fail, the stream is reset (an unanswered stream stays open for ever: the
    client hangs to its deadline and the connection is never idle)."""
    try:
        await _serve_call(stream, lookup, max_message_size, admission)
    except Exception:
        log.exception("%s: the call failed unexpectedly", dict(stream.headers).get(":path", "")[:200])
        stream.send_reset(INTERNAL_ERROR)


async def _serve_call(stream: Stream, lookup: Callable[[Details], grpc.RpcMethodHandler | None],
                      max_message_size: int, admission: Admission) -> None:
    headers = dict(stream.headers)
    method = headers.get(":path", "")
    timeout = parse_timeout(headers.get("grpc-timeout", ""))
    deadline = None if timeout is None else time.monotonic() + timeout
    messages = Messages(stream, max_message_size)
    if headers.get(":method") != "POST" or not headers.get("content-type", "").startswith("application/grpc"):
        stream.send_headers([(":status", "415"), ("content-type", "text/plain")], end_stream=True)
        return
    try:
        metadata = metadata_of(stream.headers)
    except _Status as st:
        Context(stream, (), deadline, messages, None).finish(st.code, st.details)
        return
    identity = headers.get("grpc-encoding", "identity") == "identity"
    handler = lookup(Details(method, metadata)) if identity else None
    ctx = Context(stream, metadata, deadline, messages, handler)
    if not identity:
        ctx.finish(grpc.StatusCode.UNIMPLEMENTED, f"grpc-encoding {headers['grpc-encoding']} is not supported")
        return
    if handler is None:
        ctx.finish(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {method}")
        return
    streaming = handler.response_streaming
    backed_up = stream.conn.backed_up(NEW_CALL_RESERVE, streaming)
    if backed_up:
        # The peers leave answers unread up to the bounds: a new call would only add to them
        # (and 1 000 of them, each reading its first 1 MiB chunk before being refused, kept the
        # loop from other clients for seconds). The reserve is the largest message our streams
        # send: "full" must mean full before the next chunk, not past it, or the parked bytes
        # settle just under the bound and every new call does its work only to be refused.
        ctx.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, backed_up)
        return
    deadline_cm = asyncio.timeout(timeout)  # None: no deadline
    try:
        async with deadline_cm:
            ctx.slot = await admission.enter(stream.conn.admission)
            try:
                backed_up = stream.conn.backed_up(NEW_CALL_RESERVE, streaming)  # filled while it waited
                if backed_up:
                    raise ResponseRefused(backed_up)
                await _run(handler, ctx, messages)
            finally:
                ctx.slot.release()
    except grpc.aio.AbortError:
        ctx.finish(grpc.StatusCode.UNKNOWN, "")
    except _Status as st:
        ctx.finish(st.code, st.details)
    except StreamReset:
        ctx.cancelled_ = True
    except (RequestRefused, ResponseRefused) as exc:
        ctx.finish(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except asyncio.CancelledError:
        ctx.cancelled_ = True
        stream.send_reset(CANCEL)
        raise
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline_cm.expired():
            ctx.finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        else:  # a handler's own TimeoutError included: not the call's deadline
            log.exception("%s: unexpected error in the handler", method)
            ctx.finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")
    else:
        ctx.finish(grpc.StatusCode.OK, "")


async def _run(handler: grpc.RpcMethodHandler, ctx: Context, messages: Messages) -> None:
    if handler.request_streaming:
        request: Any = _requests(ctx)
    else:
        raw = await messages.next()
        if raw is None:
            raise _Status(grpc.StatusCode.INTERNAL, "request without a message")
        request = _decode(handler.request_deserializer, raw)
    if handler.response_streaming:
        behaviour = handler.stream_stream if handler.request_streaming else handler.unary_stream
        result = behaviour(request, ctx)
        if hasattr(result, "__aiter__"):
            try:
                async for reply in result:
                    # Serialized first and the message dropped: a stream waiting for a peer that
                    # does not read holds one copy of its reply, not the message object too.
                    framed = ctx.framed(reply)
                    del reply
                    await ctx.send(framed)
            finally:
                # Closed now, not whenever the garbage collector finalizes it: what the handler
                # holds (a 1 MiB chunk, a subscription, a reader) goes as the call ends.
                aclose = getattr(result, "aclose", None)
                if aclose is not None:
                    await aclose()
        elif inspect.isawaitable(result):  # wrote through context.write
            await result
        else:  # a plain generator (servicers written for grpcio's threaded server)
            for reply in result:
                await ctx.write(reply)
        return
    behaviour = handler.stream_unary if handler.request_streaming else handler.unary_unary
    reply = behaviour(request, ctx)
    if inspect.isawaitable(reply):
        reply = await reply
    if ctx.code() not in (None, grpc.StatusCode.OK):
        return  # set_code without abort: no message, the status says it
    await ctx.write(reply)
