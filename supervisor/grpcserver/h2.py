"""The server side of HTTP/2 (RFC 9113) as gRPC uses it, on an asyncio protocol.

What it does: the connection preface and SETTINGS, PING, GOAWAY, header blocks (HPACK decoding
by the `hpack` package; our own header blocks are literals without indexing, so the peer's
table settings never matter), DATA in both directions with flow control on both sides:
the peer's windows bound what we send (frames split at its MAX_FRAME_SIZE, a writer waits for
WINDOW_UPDATE), and our windows are credited back only as the application consumes request
data, so a fast client cannot outrun a slow handler. What it leaves out: server push,
priorities (parsed and ignored), and anything gRPC does not use.

`Connection` hands each stream whose request headers are complete to `on_stream`; the stream
(`Stream`) is then read and answered by the gRPC layer (calls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Callable
from typing import cast

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# settings identifiers
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = (
    1, 2, 3, 4, 5, 6)
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0, 1, 2, 3, 5, 6
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 11

DEFAULT_WINDOW = 65535
MAX_WINDOW = (1 << 31) - 1
RECV_WINDOW = 16 << 20  # what we let a client send ahead, per stream and per connection
MAX_STREAMS = 4096
MAX_HEADER_BLOCK = 1 << 20
CREDIT_BATCH = 1 << 20


class ConnectionError_(Exception):
    """A connection-level protocol error: GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamReset(Exception):
    """The peer reset the stream, or the connection went away."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK block of literals without indexing and without Huffman coding: the peer's
    dynamic table is never touched, so nothing we send depends on its state."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out.append(0)
        out += _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v
    return bytes(out)


def _hpack_int(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Stream:
    """One request stream: its headers, its request data as it arrives, and the answer."""

    def __init__(self, conn: Connection, sid: int, headers: list[tuple[str, str]], send_window: int) -> None:
        self.conn = conn
        self.id = sid
        self.headers = headers
        self.send_window = send_window
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self.remote_closed = False  # the client sent END_STREAM
        self.local_closed = False  # we sent END_STREAM (or a reset)
        self.reset = False  # the client reset it, or the connection is gone
        self.task: asyncio.Task[None] | None = None  # the call serving it: a reset cancels it
        self.credit = 0  # request bytes read but not yet credited back to the client
        self.recv_window = RECV_WINDOW  # what the client may still send on it

    # -- request side ---------------------------------------------------------------------

    def _deliver(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
        if end:
            self.remote_closed = True
        self._readable.set()

    async def read(self) -> bytes | None:
        """The next chunk of request data; None once the client has ended the stream."""
        while not self._chunks:
            if self.reset:
                raise StreamReset(f"stream {self.id} reset")
            if self.remote_closed:
                return None
            self._readable.clear()
            await self._readable.wait()  # a reset sets it too
        chunk = self._chunks.popleft()
        self.conn.consumed(self, len(chunk))
        return chunk

    # -- response side --------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        if self.local_closed or self.reset:
            return
        self.conn.send_headers(self.id, headers, end_stream)
        if end_stream:
            self.local_closed = True
            self.conn.stream_done(self)

    async def send_data(self, data: bytes) -> None:
        """Send `data` as DATA frames within the peer's flow-control windows."""
        view = memoryview(data)
        while view:
            if self.reset:
                raise StreamReset(f"stream {self.id} reset")
            n = min(len(view), self.send_window, self.conn.send_window, self.conn.peer_max_frame)
            if n <= 0:
                await self.conn.wait_for_window()
                continue
            self.send_window -= n
            self.conn.send_window -= n
            self.conn.write(frame(DATA, 0, self.id, bytes(view[:n])))
            view = view[n:]
            await self.conn.drained()

    def _was_reset(self) -> None:
        self.reset = True
        self._readable.set()  # a reader waiting for data sees the reset
        self.conn._wake_writers()  # a writer waiting for window sees the reset
        if self.task is not None and not self.local_closed:
            self.task.cancel()
        self.local_closed = True

    def send_reset(self, code: int = CANCEL) -> None:
        if not self.local_closed:
            self.local_closed = True
            self.conn.write(frame(RST_STREAM, 0, self.id, struct.pack(">I", code)))
            self.conn.stream_done(self)


class Connection(asyncio.Protocol):
    def __init__(self, on_stream: Callable[[Stream], None], on_close: Callable[[Connection], None]) -> None:
        self.on_stream = on_stream
        self.on_close = on_close
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 4096
        self.decoder.max_header_list_size = 4 * MAX_HEADER_BLOCK  # decoded size; the encoded block is capped below
        self.buf = bytearray()
        self.preface_seen = False
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.pending_headers: tuple[int, int, bytearray] | None = None  # (stream, flags, block)
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.recv_unacked = 0  # consumed by the application, not yet credited back (connection)
        self.recv_window = RECV_WINDOW  # what the client may still send on the connection
        self.window_waiters: list[asyncio.Future[None]] = []
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.closing = False
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        settings = struct.pack(">HIHIHI", MAX_CONCURRENT_STREAMS, MAX_STREAMS, INITIAL_WINDOW_SIZE, RECV_WINDOW,
                               ENABLE_PUSH, 0)
        self.write(frame(SETTINGS, 0, 0, settings)
                   + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", RECV_WINDOW - DEFAULT_WINDOW)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for stream in list(self.streams.values()):
            stream._was_reset()
        self.streams.clear()
        self._wake_writers()
        self.can_write.set()
        self.on_close(self)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            if not self.preface_seen:
                if len(self.buf) < len(PREFACE):
                    return
                if bytes(self.buf[:len(PREFACE)]) != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client (bad preface)")
                del self.buf[:len(PREFACE)]
                self.preface_seen = True
            pos, buf = 0, self.buf
            while len(buf) - pos >= 9:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > 16384:  # our SETTINGS_MAX_FRAME_SIZE is the default
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if len(buf) - pos < 9 + length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                self._frame(kind, flags, sid, payload)
            del buf[:pos]
        except ConnectionError_ as exc:
            self.goaway(exc.code, str(exc))
            if self.transport is not None:
                self.transport.close()

    # -- frames in ------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.pending_headers is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            if self.pending_headers is None or self.pending_headers[0] != sid:
                raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            block = self.pending_headers[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
            if flags & END_HEADERS:
                first_flags = self.pending_headers[1]
                self.pending_headers = None
                self._header_block(first_flags, sid, bytes(block))
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self.write(frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == RST_STREAM:
            stream = self.streams.pop(sid, None)
            if stream is not None:
                stream._was_reset()
        elif kind == GOAWAY:
            self.closing = True
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "clients do not push")
        # PRIORITY and unknown frame types are ignored, as the RFC asks

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or sid % 2 == 0:
            raise ConnectionError_(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        if flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(flags, sid, payload)
        else:
            self.pending_headers = (sid, flags, bytearray(payload))

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        try:
            headers = [(k if isinstance(k, str) else k.decode(), v if isinstance(v, str) else v.decode("latin-1"))
                       for k, v in self.decoder.decode(block)]
        except Exception as exc:  # hpack raises its own family; all of them mean a broken table
            raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client end its half
            stream._deliver(b"", bool(flags & END_STREAM))
            return
        if sid <= self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, f"stream {sid} reused")
        self.last_stream = sid
        if self.closing or len(self.streams) >= MAX_STREAMS:
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = Stream(self, sid, headers, self.peer_initial_window)
        self.streams[sid] = stream
        if flags & END_STREAM:
            stream.remote_closed = True
        self.on_stream(stream)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "data beyond the connection window")
        if flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        stream = self.streams.get(sid)
        if stream is not None:
            stream.recv_window -= size
            if stream.recv_window < 0:
                raise ConnectionError_(FLOW_CONTROL_ERROR, f"data beyond stream {sid}'s window")
        if stream is None or stream.remote_closed:
            # Closed or reset already: the data still counts against the connection window.
            self._credit(size)
            return
        stream._deliver(payload, bool(flags & END_STREAM))
        # Padding is consumed at once (connection window; the stream's comes back with its data).
        if size - len(payload):
            self._credit(size - len(payload))

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS length")
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack(">HI", payload[i:i + 6])
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                self._wake_writers()
            elif ident == MAX_FRAME_SIZE:
                if not 16384 <= value <= (1 << 24) - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.peer_max_frame = value

    def _window_update(self, sid: int, payload: bytes) -> None:
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if sid == 0:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                return
            stream.send_window += increment
        self._wake_writers()

    # -- frames out -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drained(self) -> None:
        if not self.can_write.is_set():
            await self.can_write.wait()

    def send_headers(self, sid: int, headers: list[tuple[str, str]], end_stream: bool) -> None:
        block = encode_headers(headers)
        flags = END_STREAM if end_stream else 0
        first, rest = block[:self.peer_max_frame], block[self.peer_max_frame:]
        if not rest:
            self.write(frame(HEADERS, flags | END_HEADERS, sid, first))
            return
        out = [frame(HEADERS, flags, sid, first)]
        while rest:
            chunk, rest = rest[:self.peer_max_frame], rest[self.peer_max_frame:]
            out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, sid, chunk))
        self.write(b"".join(out))

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        self.closing = True
        self.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + message.encode()[:256]))

    async def wait_for_window(self) -> None:
        """Until a window may have opened, or a reset (which wakes every waiter too): the caller
        checks again. A plain future: no task per wait."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.window_waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self.window_waiters.remove(waiter)

    def _wake_writers(self) -> None:
        waiters, self.window_waiters = self.window_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # -- flow control of what we receive ---------------------------------------------------

    def consumed(self, stream: Stream, n: int) -> None:
        """Credit back request bytes the application read, a WINDOW_UPDATE per MiB: the client
        keeps at least RECV_WINDOW - 1 MiB of window, and a slow reader slows it down."""
        out = []
        if not stream.remote_closed:  # a finished request needs no more stream window
            stream.credit += n
            if stream.credit >= CREDIT_BATCH:
                out.append(frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.credit)))
                stream.recv_window += stream.credit
                stream.credit = 0
        self._credit(n, out)

    def _credit(self, n: int, out: list[bytes] | None = None) -> None:
        self.recv_unacked += n
        out = out if out is not None else []
        if self.recv_unacked >= CREDIT_BATCH:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.recv_unacked)))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        if out:
            self.write(b"".join(out))

    def stream_done(self, stream: Stream) -> None:
        # Request data the handler never read still counts against the connection window:
        # give it back, or a few calls answered early would stall the whole connection.
        unread = sum(len(c) for c in stream._chunks)
        stream._chunks.clear()
        if unread:
            self._credit(unread)
        if stream.local_closed and (stream.remote_closed or stream.reset):
            self.streams.pop(stream.id, None)
        elif stream.local_closed:
            # We answered before the client finished sending: it need not send more.
            self.streams.pop(stream.id, None)
            self.write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
