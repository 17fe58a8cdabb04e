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

What one connection may cost is bounded (`Limits`): request bytes held (the connection's
receive window is credited back only when the application *releases* bytes, i.e. a whole
message has been handed over or the stream ended), calls in progress (reset or not), header
block size and frame count, PINGs (grpc-go's policy), time to finish the handshake, a frame, a
header block or a request message, and idle time. Frames are checked against RFC 9113's length
and value rules; a connection error is a GOAWAY with its code, a stream error an RST_STREAM.
While the transport's write buffer is over its high-water mark we stop reading the peer, so
whatever we write in answer (ACKs, RST_STREAM, GOAWAY) is bounded by what the peer reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import hpack

from supervisor.grpcserver.admission import Queue

log = logging.getLogger("dockyard.grpc")

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
RECV_WINDOW = 16 << 20  # what we let a client send ahead on one stream
MAX_FRAME = 16384  # our SETTINGS_MAX_FRAME_SIZE: the default
MAX_STREAMS = 1024
MAX_HEADER_BLOCK = 1 << 20
MAX_HEADER_FRAMES = MAX_HEADER_BLOCK // MAX_FRAME + 16  # HEADERS + CONTINUATIONs of one block, empty ones too
CREDIT_BATCH = 1 << 20
# Header blocks whose decoding a connection remembers (see `_decode_block`): how many, and how
# large each may be encoded and decoded (a gRPC call's are a few hundred bytes decoded). What a
# connection may hold this way stays small whatever a client sends.
DECODED_BLOCKS = 32
DECODED_BLOCK_MAX = 2048
FLUSH_AT = 64 << 10  # frames queued for the socket beyond this are written at once (see `write`)
# Our DATA frames, whatever larger MAX_FRAME_SIZE the peer allows: what one writer may add to
# the transport's buffer past its high-water mark stays this small.
MAX_DATA_FRAME = FLUSH_AT
SMALL_ANSWER = 64 << 10  # an answer this small is never refused for other clients' backlog (`answers_refused`)
# Request header fields RFC 9113 8.2.2 forbids (connection-specific).
_CONNECTION_HEADERS = frozenset(("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"))
_REQUEST_PSEUDO = {":method": 1, ":scheme": 2, ":path": 4, ":authority": 8}  # the first three are required


@dataclass(frozen=True)
class Limits:
    """What one connection may cost the server. Defaults: containerd's idle timeout, grpc-go's
    PING policy; tests shorten the timeouts."""

    max_streams: int = MAX_STREAMS  # calls in progress, counting reset ones whose handler still runs
    buffer: int = 16 << 20  # request bytes held for the connection (its receive window)
    # Answer bytes that may wait for a peer that does not read (flow-control window shut, or
    # the transport over its high-water mark), all the connection's streams together. Beyond
    # it a stream's next message is refused: each stream holds at most one message anyway, but
    # 1 024 streams of 1 MiB Content.Read chunks were ~3 GiB of daemon memory.
    send_buffer: int = 32 << 20
    # The same for all connections together (`SendPool`): 40 connections of 100 unread
    # Content.Read streams parked 32 MiB each, and the daemon grew to 3.9 GiB. Past it, only a
    # connection with nothing parked yet may park an answer (up to twice the pool), so one
    # client filling it leaves the others their first message.
    send_pool: int = 64 << 20
    handshake_timeout: float = 15.0  # preface and first SETTINGS
    read_timeout: float = 20.0  # a frame, header block or request message begun must be complete in this
    idle_timeout: float = 120.0  # no open stream and no frame for this long: GOAWAY and close
    ping_interval: float = 300.0  # client PINGs closer than this while we send nothing are strikes
    ping_strikes: int = 2  # more strikes than this: GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
    close_grace: float = 2.0  # a closing connection whose peer does not read is aborted after this


class SendPool:
    """Answer bytes parked on all of a server's connections (see `Limits.send_pool`)."""

    __slots__ = ("limit", "parked")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parked = 0


class ConnectionError_(Exception):
    """A connection-level protocol error: GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamReset(Exception):
    """The peer reset the stream, or the connection went away."""


class ResponseRefused(Exception):
    """The server will not hold more answers for a peer that does not read them (its
    connection's `Limits.send_buffer` is full): the call ends RESOURCE_EXHAUSTED."""


class RequestRefused(Exception):
    """The server will not hold more of this request: the connection's request buffer is full
    of partial messages, or a message took too long to arrive. The call ends RESOURCE_EXHAUSTED."""


def frame(kind: int, flags: int, stream: int, payload: bytes | memoryview = b"") -> bytes:
    # `payload` may be a slice of a larger message (a memoryview): copied once, here
    return struct.pack(">IBI", len(payload) << 8 | kind, flags, stream) + payload


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


def _malformed(headers: list[tuple[str, str]]) -> str | None:
    """Why a request header list is malformed (RFC 9113 8.1.1, 8.2, 8.3.1), or None. On every
    request: kept to one pass without allocations."""
    regular = False
    seen = 0
    for name, value in headers:
        if name[:1] == ":":
            bit = _REQUEST_PSEUDO.get(name, 0)
            if regular or not bit or seen & bit:
                return f"bad pseudo-header {name}"
            seen |= bit
        else:
            regular = True
            if name in _CONNECTION_HEADERS or (name == "te" and value != "trailers") \
                    or (not name.islower() and name != name.lower()):
                return f"bad header {name}"
    if seen & 7 != 7:
        return "missing pseudo-headers"
    return None


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
        self.finished = False  # out of the connection's books (see Connection._finish)
        self.refused: str | None = None  # why the server stopped holding this request (RequestRefused)
        self.task: asyncio.Task[None] | None = None  # the call serving it: a reset cancels it
        self.credit = 0  # request bytes read but not yet credited back to the client (stream window)
        self.recv_window = RECV_WINDOW  # what the client may still send on it
        self.held = 0  # request bytes received and not yet released (counted in the connection's buffer)
        self.need = 0  # while blocked in read(): bytes still missing from the message being read
        self.partial_since: float | None = None  # when a read first waited inside a message

    # -- request side ---------------------------------------------------------------------

    def _deliver(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
            self.held += len(data)
            self.conn.held += len(data)
            self.conn._blocked.discard(self)  # not waiting any more: the stall check must not count it
        if end:
            self.remote_closed = True
        self._readable.set()

    async def read(self, need: int = 0) -> bytes | None:
        """The next chunk of request data; None once the client has ended the stream. `need`:
        how many more bytes the reader's current message lacks (0: it is between messages).
        Reading credits the stream's window; the connection's comes back with `release`."""
        while not self._chunks:
            if self.refused is not None:
                raise RequestRefused(self.refused)
            if self.reset:
                raise StreamReset(f"stream {self.id} reset")
            if self.remote_closed:
                return None
            self._readable.clear()
            self.need = need
            if need and self.partial_since is None:
                self.partial_since = self.conn.now()
            self.conn.blocked(self)
            try:
                await self._readable.wait()  # a reset sets it too
            finally:
                self.conn.unblocked(self)
        chunk = self._chunks.popleft()
        if not self.remote_closed:  # a finished request needs no more stream window
            self.credit += len(chunk)
            if self.credit >= CREDIT_BATCH:
                self._credit_stream()
        return chunk

    def release(self, n: int) -> None:
        """The application is done with `n` request bytes (a message handed over): the client
        may send that much more on the connection."""
        self.partial_since = None
        if self.finished:
            return  # given back when the stream ended
        self.held -= n
        self.conn.held -= n
        self.conn.credit(n)

    def _credit_stream(self) -> None:
        self.conn.write(frame(WINDOW_UPDATE, 0, self.id, struct.pack(">I", self.credit)))
        self.recv_window += self.credit
        self.credit = 0

    # -- response side --------------------------------------------------------------------

    def send_headers(self, headers: list[tuple[str, str]] | bytes, end_stream: bool = False) -> None:
        """`headers`: a list, or a block `encode_headers` made already (the common answers)."""
        if self.local_closed or self.reset:
            return
        self.conn.send_headers(self.id, headers, end_stream)
        if end_stream:
            self.local_closed = True
            self.conn.stream_done(self)

    async def send_data(self, data: bytes) -> None:
        """Send `data` as DATA frames within the peer's flow-control windows, and only while
        the transport takes them (not over its high-water mark). What waits for a peer that
        does not read is counted in `conn.parked`; past `Limits.send_buffer` the answer is
        refused (ResponseRefused) rather than held."""
        view = memoryview(data)
        conn = self.conn
        parked = 0  # our share of conn.parked while we wait
        try:
            while view:
                if self.reset:
                    raise StreamReset(f"stream {self.id} reset")
                # Checked before each frame and after every wake-up: with the check only after a
                # write, each of a connection's streams handed the transport a frame of up to the
                # peer's MAX_FRAME_SIZE (16 MiB) while the peer read nothing.
                writable = conn.can_write.is_set()
                n = min(len(view), self.send_window, conn.send_window, conn.peer_max_frame, MAX_DATA_FRAME)
                if not writable or n <= 0:
                    if len(view) != parked:
                        refused = conn.answers_refused(len(view), parked)
                        if refused:
                            raise ResponseRefused(refused)
                        conn.park(len(view) - parked)
                        parked = len(view)
                    await (conn.wait_for_window() if writable else conn.can_write.wait())
                    continue
                self.send_window -= n
                conn.send_window -= n
                conn.sent_since_ping = True
                conn.write(frame(DATA, 0, self.id, view[:n]))
                view = view[n:]
        finally:
            conn.park(-parked)

    def _was_reset(self) -> None:
        self.reset = True
        self._readable.set()  # a reader waiting for data sees the reset
        self.conn._wake_writers()  # a writer waiting for window sees the reset
        if self.task is not None and not self.local_closed:
            self.task.cancel()
        self.local_closed = True
        self.conn._finish(self)

    def send_reset(self, code: int = CANCEL) -> None:
        if not self.local_closed:
            self.local_closed = True
            self.conn.write(frame(RST_STREAM, 0, self.id, struct.pack(">I", code)))
            self.conn._finish(self)

    def refuse(self, reason: str) -> None:
        """Stop holding this request: its reader gets RequestRefused (the call answers)."""
        self.refused = reason
        self._readable.set()


class Connection(asyncio.Protocol):
    def __init__(self, on_stream: Callable[[Stream], None], on_close: Callable[[Connection], None],
                 limits: Limits | None = None, on_call_end: Callable[[asyncio.Task[None]], None] | None = None) -> None:
        self.on_stream = on_stream
        self.on_close = on_close
        self.on_call_end = on_call_end
        self.limits = limits = limits or Limits()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 4096
        self.decoder.max_header_list_size = 4 * MAX_HEADER_BLOCK  # decoded size; the encoded block is capped below
        self._decoded: dict[bytes, tuple[list[tuple[str, str]], str | None]] = {}  # see `_decode_block`
        self.buf = bytearray()
        self.preface_seen = False
        self.settings_seen = False
        self.streams: dict[int, Stream] = {}
        self.calls = 0  # calls in progress, their streams open or not (Server counts them)
        self.last_stream = 0
        self.pending_headers: tuple[int, int, bytearray] | None = None  # (stream, flags, block)
        self.header_frames = 0  # frames of the pending header block
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.stream_window = min(RECV_WINDOW, limits.buffer)
        self.held = 0  # request bytes received on open streams and not released
        self.parked = 0  # answer bytes whose writers wait for the peer (see Stream.send_data)
        self.pool = SendPool(limits.send_pool)  # the server's, shared by its connections (Server sets it)
        self.admission = Queue()  # its calls holding or waiting for a slot to start (admission.py)
        self.recv_unacked = 0  # released by the application, not yet credited back (connection)
        self.recv_window = limits.buffer  # what the client may still send on the connection
        self._half_buffer = limits.buffer // 2
        self._blocked: set[Stream] = set()  # streams whose reader waits for data
        self.window_waiters: list[asyncio.Future[None]] = []
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.reading_paused = False
        self.closing = False  # GOAWAY sent or received: no new streams
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []  # frames not yet handed to the transport (see `write`)
        self._out_size = 0
        self._flush_pending = False
        self.sent_since_ping = False
        self.ping_strikes = 0
        self.last_ping = float("-inf")
        self._loop = asyncio.get_running_loop()
        self.started = self.last_frame = self._loop.time()  # last_frame: or the last stream's end
        self.partial_since: float | None = None  # an incomplete frame waits since
        self.block_since = 0.0  # when the pending header block began
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self.failed = False  # the last-resort guard fired
        self.ending = False  # GOAWAY sent and our side shut: what arrives is dropped until close

    def now(self) -> float:
        return self._loop.time()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            self.transport = cast(asyncio.Transport, transport)
            settings = struct.pack(">HIHIHI", MAX_CONCURRENT_STREAMS, self.limits.max_streams,
                                   INITIAL_WINDOW_SIZE, self.stream_window, ENABLE_PUSH, 0)
            self.write(frame(SETTINGS, 0, 0, settings)
                       + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.limits.buffer - DEFAULT_WINDOW)))
            self.flush()
            self._schedule_tick()
        except Exception as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.closing = True
            for handle in (self._timer, self._abort_timer):
                if handle is not None:
                    handle.cancel()
            for stream in list(self.streams.values()):
                stream._was_reset()
            self.streams.clear()
            self._wake_writers()
            self.can_write.set()
            self.buf.clear()
            self._out.clear()
            self._out_size = 0
            self.on_close(self)
        except Exception as err:
            self._fail(err)

    def pause_writing(self) -> None:
        # The peer reads slower than we write: stop reading it, so nothing it sends can make us
        # queue more answers (PING/SETTINGS ACKs, RST_STREAM) than it takes.
        self.can_write.clear()
        self._pause_reading()

    def resume_writing(self) -> None:
        try:
            self.can_write.set()
            if self.reading_paused and not self.closing_transport():
                self.reading_paused = False
                self.partial_since = None  # the time we did not read is not the peer's
                self.transport.resume_reading()  # type: ignore[union-attr]
                self._process()
                self.flush()
        except Exception as exc:
            self._fail(exc)

    def _pause_reading(self) -> None:
        if not self.reading_paused and not self.closing_transport():
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def closing_transport(self) -> bool:
        return self.ending or self.transport is None or self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.ending:
            return
        try:
            self.buf += data
            self._process()
            self.flush()  # what the frames read asked for (ACKs, resets, credit): one write
        except Exception as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def _fail(self, exc: Exception) -> None:
        """The last resort: no exception leaves a protocol callback (asyncio would drop the
        connection without a GOAWAY and log it per frame). A bug here is logged once per
        process with its traceback, then one line per connection."""
        global _guard_fired
        if not _guard_fired:
            _guard_fired = True
            log.exception("HTTP/2 connection failed unexpectedly")
        else:
            log.error("HTTP/2 connection failed unexpectedly: %s", exc)
        self.failed = True
        with contextlib.suppress(Exception):
            self._abandon(INTERNAL_ERROR, "internal error")

    def _process(self) -> None:
        try:
            if not self.preface_seen:
                if bytes(self.buf[:len(PREFACE)]) != PREFACE[:len(self.buf)]:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 client (bad preface)")
                if len(self.buf) < len(PREFACE):
                    self._partial()
                    return
                del self.buf[:len(PREFACE)]
                self.preface_seen = True
            pos, buf = 0, self.buf
            while len(buf) - pos >= 9 and not self.reading_paused:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if length > MAX_FRAME:
                    raise ConnectionError_(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if len(buf) - pos < 9 + length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[pos + 9:pos + 9 + length])
                pos += 9 + length
                self._frame(kind, flags, sid, payload)
            if pos:
                del buf[:pos]
                self.last_frame = self._loop.time()
                self.partial_since = None
            self._partial()
        except ConnectionError_ as exc:
            self.buf.clear()
            self._abandon(exc.code, str(exc))

    def _partial(self) -> None:
        if self.buf and self.partial_since is None:
            self.partial_since = self._loop.time()

    # -- timers ---------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        lim = self.limits
        tick = min(lim.handshake_timeout, lim.read_timeout, lim.idle_timeout) / 4
        self._timer = self._loop.call_later(max(0.02, min(tick, 5.0)), self._tick)

    def _tick(self) -> None:
        try:
            self._check_timeouts()
        except Exception as exc:
            self._fail(exc)

    def _check_timeouts(self) -> None:
        if self.closing_transport():
            return
        now, lim = self._loop.time(), self.limits
        if not self.settings_seen:
            if now - self.started > lim.handshake_timeout:
                self._abandon(PROTOCOL_ERROR, "handshake not completed in time")
                return
        elif not self.reading_paused and (
                (self.partial_since is not None and now - self.partial_since > lim.read_timeout)
                or (self.pending_headers is not None and now - self.block_since > lim.read_timeout)):
            self._abandon(PROTOCOL_ERROR, "frame or header block not completed in time")
            return
        elif not self.streams and not self.calls and now - self.last_frame > lim.idle_timeout:
            self.goaway(NO_ERROR, "idle")
            self._close()
            return
        for stream in self._blocked:  # slow only if the client could have sent: it had the window
            if stream.partial_since is not None and now - stream.partial_since > lim.read_timeout \
                    and self.recv_window >= min(stream.need, MAX_FRAME):
                stream.refuse(f"request message not completed within {lim.read_timeout:g} s")
        self._schedule_tick()

    # -- frames in ------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if not self.settings_seen and kind != SETTINGS:
            raise ConnectionError_(PROTOCOL_ERROR, "the client preface must start with SETTINGS")
        if self.pending_headers is not None and kind != CONTINUATION:
            raise ConnectionError_(PROTOCOL_ERROR, "header block interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, sid, payload)
        elif kind == SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == PING:
            self._ping(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == RST_STREAM:
            self._rst_stream(sid, payload)
        elif kind == PRIORITY:
            if sid == 0:
                raise ConnectionError_(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR)
            elif int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == sid:
                self._stream_error(sid, PROTOCOL_ERROR)  # a stream cannot depend on itself
        elif kind == GOAWAY:
            if sid != 0:
                raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionError_(FRAME_SIZE_ERROR, "GOAWAY length")
            self.closing = True
            if not self.streams:
                self._close()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "clients do not push")
        # unknown frame types are ignored, as the RFC asks

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or sid % 2 == 0:
            raise ConnectionError_(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS priority fields cut short")
            depends = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            payload = payload[5:]
            if depends == sid:
                flags |= 0x100  # decoded below for HPACK's sake, then answered with a stream error
        if flags & END_HEADERS:
            self._header_block(flags, sid, payload)
        else:
            self.pending_headers = (sid, flags, bytearray(payload))
            self.header_frames = 1
            self.block_since = self._loop.time()

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.pending_headers is None or self.pending_headers[0] != sid:
            raise ConnectionError_(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        block = self.pending_headers[2]
        block += payload
        self.header_frames += 1
        if len(block) > MAX_HEADER_BLOCK or self.header_frames > MAX_HEADER_FRAMES:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            first_flags = self.pending_headers[1]
            self.pending_headers = None
            self._header_block(first_flags, sid, bytes(block))

    def _decode_block(self, block: bytes) -> tuple[list[tuple[str, str]], str | None]:
        """The headers of `block` and why they are malformed as a request (or None).

        A client repeating a call sends the same bytes each time once its fields are in the
        HPACK table (indexed references only), and such a block reads the same as long as the
        table has not changed. Decoding was the daemon's largest Python cost per call with many
        connections (py-spy, bench/rpc.py --mixed), so blocks that left the table as it was
        are remembered until a block changes it (an insertion puts a new entry in front; a
        size update changes maxsize). The lists returned are shared: read-only."""
        hit = self._decoded.get(block)
        if hit is not None:  # remembered at the table's present state: every change clears them
            return hit
        table = self.decoder.header_table
        entries = table.dynamic_entries
        front, size = (entries[0] if entries else None), table.maxsize  # held: its identity stays its own
        try:
            headers = [(k if isinstance(k, str) else k.decode(), v if isinstance(v, str) else v.decode("latin-1"))
                       for k, v in self.decoder.decode(block)]
        except Exception as exc:  # hpack raises its own family; all of them mean a broken table
            raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        decoded = headers, _malformed(headers)
        if (entries[0] if entries else None) is not front or table.maxsize != size:
            self._decoded.clear()  # the table moved: what was remembered may read differently now
        elif len(block) <= DECODED_BLOCK_MAX and sum(len(k) + len(v) for k, v in headers) <= DECODED_BLOCK_MAX:
            if len(self._decoded) >= DECODED_BLOCKS:
                self._decoded.clear()
            self._decoded[block] = decoded
        return decoded

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        headers, malformed = self._decode_block(block)
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client: they must end its half
            if stream.remote_closed:
                self._stream_error(sid, STREAM_CLOSED)
            elif not flags & END_STREAM or any(k[:1] == ":" for k, _ in headers):
                self._stream_error(sid, PROTOCOL_ERROR)
            else:
                stream._deliver(b"", True)
            return
        if sid <= self.last_stream:  # closed already (we reset or answered it): not a new stream
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", STREAM_CLOSED)))
            return
        self.last_stream = sid
        if flags & 0x100 or malformed is not None:
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", PROTOCOL_ERROR)))
            return
        if self.closing or self.calls >= self.limits.max_streams:
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = Stream(self, sid, headers, self.peer_initial_window)
        stream.recv_window = self.stream_window
        self.streams[sid] = stream
        if flags & END_STREAM:
            stream.remote_closed = True
        self.on_stream(stream)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        if sid > self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "data beyond the connection window")
        if flags & PADDED:
            payload = _unpad(payload)
        stream = self.streams.get(sid)
        if stream is None:
            self.credit(size)  # closed or reset already: the data still counted against the window
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            self.credit(size)
            self._stream_error(sid, FLOW_CONTROL_ERROR)
            return
        if stream.remote_closed:
            self.credit(size)
            self._stream_error(sid, STREAM_CLOSED)
            return
        stream._deliver(payload, bool(flags & END_STREAM))
        if size - len(payload):  # padding is consumed at once
            self.credit(size - len(payload))
            stream.credit += size - len(payload)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS length")
        self.settings_seen = True
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack(">HI", payload[i:i + 6])
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ConnectionError_(FLOW_CONTROL_ERROR, f"stream {stream.id} window overflow")
                self._wake_writers()
            elif ident == MAX_FRAME_SIZE:
                if not 16384 <= value <= (1 << 24) - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif ident == ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "bad ENABLE_PUSH")
        self.write(frame(SETTINGS, ACK, 0))

    def _ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "PING length")
        if flags & ACK:
            return
        # grpc-go's policy: PINGs while we send nothing, closer than the allowed interval
        # (two hours without open streams), are strikes; too many end the connection.
        now = self._loop.time()
        last, self.last_ping = self.last_ping, now
        if self.sent_since_ping:
            self.sent_since_ping = False
            self.ping_strikes = 0
        else:
            interval = self.limits.ping_interval if self.streams else 7200.0
            if now - last < interval:
                self.ping_strikes += 1
                if self.ping_strikes > self.limits.ping_strikes:
                    raise ConnectionError_(ENHANCE_YOUR_CALM, "too_many_pings")
        self.write(frame(PING, ACK, 0, payload))

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            if sid > self.last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            stream = self.streams.get(sid)
            if stream is None:
                return
            if increment == 0:
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._stream_error(sid, FLOW_CONTROL_ERROR)
                return
        self._wake_writers()

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "RST_STREAM length")
        if sid > self.last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self.streams.get(sid)
        if stream is not None:
            stream._was_reset()

    def _stream_error(self, sid: int, code: int) -> None:
        """RST_STREAM with `code`; the call on it (if any) is cancelled and its books closed."""
        self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", code)))
        stream = self.streams.get(sid)
        if stream is not None:
            stream._was_reset()

    # -- frames out -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue `data` for the socket; it is written at the end of this turn of the event loop
        (or at once past FLUSH_AT). Why: a unary answer is three frames (headers, message,
        trailers), and each transport.write is a sendmsg; with 200 connections a call's three
        syscalls were the largest single cost in the daemon (py-spy, bench/rpc.py --mixed).
        Queued, what all calls of a connection wrote in one turn goes out in one write."""
        if self.transport is not None and not self.ending and not self.transport.is_closing():
            self._out.append(data)
            self._out_size += len(data)
            if self._out_size >= FLUSH_AT:
                self.flush()
            elif not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        try:
            self.flush()
        except Exception as exc:
            self._fail(exc)

    def flush(self) -> None:
        """Hand what is queued to the transport (whose own buffer and pause_writing then apply)."""
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_headers(self, sid: int, headers: list[tuple[str, str]] | bytes, end_stream: bool) -> None:
        self.sent_since_ping = True
        block = headers if isinstance(headers, bytes) else encode_headers(headers)
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
        self.flush()  # callers may close the transport next

    def _abandon(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with `code`, close, stop reading."""
        self.goaway(code, message)
        self._close()

    def _close(self) -> None:
        """Shut our side once what we wrote (the GOAWAY) is flushed, and drop what still arrives:
        closing at once would lose the GOAWAY (a unix socket closed with unread data resets the
        peer's). The peer closes in turn; one that does not is cut off after a grace."""
        transport = self.transport
        if transport is None or self.ending or transport.is_closing():
            return
        self.flush()
        self.ending = True
        self.buf.clear()
        try:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            if self.reading_paused:
                self.reading_paused = False
                transport.resume_reading()
        except Exception:  # the transport went away meanwhile
            transport.abort()
        self._abort_timer = self._loop.call_later(self.limits.close_grace, transport.abort)

    async def wait_for_window(self) -> None:
        """Until a window may have opened, or a reset (which wakes every waiter too): the caller
        checks again. A plain future: no task per wait."""
        waiter: asyncio.Future[None] = self._loop.create_future()
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

    def credit(self, n: int) -> None:
        """Give `n` bytes back to the client's connection window, a WINDOW_UPDATE per MiB."""
        self.recv_unacked += n
        if self.recv_unacked >= CREDIT_BATCH:
            self._flush_credit()

    def _flush_credit(self) -> None:
        self.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.recv_unacked)))
        self.recv_window += self.recv_unacked
        self.recv_unacked = 0

    def answers_refused(self, size: int, own: int = 0) -> str | None:
        """Why `size` more bytes of answers may not wait for this peer (None: they may): they
        would take what waits on this connection past `Limits.send_buffer`, or on all
        connections past `Limits.send_pool` (`own`: the asker's share already counted). A
        connection's first answer is refused only when it is large and the pool is past twice
        its bound: a peer that reads gets it, and another client's flood does not end its calls."""
        others = self.parked - own
        if others and others + size > self.limits.send_buffer:
            return (f"the client is not reading: more than {self.limits.send_buffer} bytes of answers "
                    "wait on its connection")
        pooled = self.pool.parked - own
        if pooled + size <= self.pool.limit:
            return None
        if not others and (size <= SMALL_ANSWER or pooled + size <= 2 * self.pool.limit):
            return None
        return self._pool_full()

    def _pool_full(self) -> str:
        return f"clients are not reading: more than {self.pool.limit} bytes of answers wait on the server's connections"

    def backed_up(self, reserve: int, streaming: bool) -> str | None:
        """Why a new call should not start (None: it may): its peer leaves answers unread and
        one more of `reserve` bytes would be refused; or, for a `streaming` answer, all peers
        together leave more than twice the pool unread (a flood from many connections, each
        with little parked, would otherwise have every call read its first chunk to be refused).
        A connection with nothing waiting may always start a unary call."""
        if self.parked:
            return self.answers_refused(reserve)
        if streaming and self.pool.parked + reserve > 2 * self.pool.limit:
            return self._pool_full()
        return None

    def park(self, n: int) -> None:
        self.parked += n
        self.pool.parked += n

    def blocked(self, stream: Stream) -> None:
        """`stream`'s reader waits for data. Make sure the client can send it: credit what is
        due at once when windows run low; and if the connection's buffer is full of partial
        messages whose readers all wait (none can finish within the window left), refuse the
        largest, or the connection would stall for good."""
        self._blocked.add(stream)
        if stream.credit and not stream.remote_closed and stream.recv_window < max(stream.need, RECV_WINDOW // 2):
            stream._credit_stream()
        if self.recv_window >= self._half_buffer:
            return
        if self.recv_unacked:
            self._flush_credit()
        if not self.held:
            return
        waiting = sum(s.held for s in self._blocked)
        if waiting < self.held or any(s.need <= self.recv_window for s in self._blocked if s.need):
            return  # some handler has data it has not read yet, or a message can still complete
        victim = max(self._blocked, key=lambda s: s.held)
        victim.refuse(f"more than {self.limits.buffer} bytes of partial requests on one connection")

    def unblocked(self, stream: Stream) -> None:
        self._blocked.discard(stream)

    def stream_done(self, stream: Stream) -> None:
        """We answered (END_STREAM) or reset it: close its books. If the client was still
        sending, RST_STREAM(NO_ERROR) tells it to stop (RFC 9113 8.1)."""
        if not stream.remote_closed and not stream.reset and not stream.finished:
            self.write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
        self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        """The one way out of the books for a stream, however it ends: the request bytes it
        still holds (unread, or read and not released) go back to the connection's window."""
        if stream.finished:
            return
        stream.finished = True
        self.streams.pop(stream.id, None)
        if self._blocked:
            self._blocked.discard(stream)
        if stream._chunks:
            stream._chunks.clear()
        if stream.held:
            self.held -= stream.held
            self.credit(stream.held)
            stream.held = 0
        if not self.streams:
            self.last_frame = self._loop.time()  # idle time counts from the last stream's end too
        if self.closing and not self.streams and not self.calls:
            self._close_when_drained()

    def call_ended(self, task: asyncio.Task[None]) -> None:
        """The handler task of a call on this connection is done (a done callback)."""
        self.calls -= 1
        if self.on_call_end is not None:
            self.on_call_end(task)
        if self.closing and not self.streams and not self.calls:
            self._close_when_drained()

    def _close_when_drained(self) -> None:
        # Only after the peer's GOAWAY, or ours for a stop/idle: a graceful end.
        if not self.closing_transport():
            self._loop.call_soon(self._close)


_guard_fired = False


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ConnectionError_(FRAME_SIZE_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionError_(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - pad]
