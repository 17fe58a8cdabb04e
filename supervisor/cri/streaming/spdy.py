"""SPDY/3.1 framing, as Kubernetes' streaming clients speak it (client-go over moby/spdystream).

Hand-written because no maintained Python library speaks SPDY (it was superseded by HTTP/2 and
its libraries are gone); kubelet, crictl and critest still default to it for exec, attach and
port-forward. Only what those clients use: SYN_STREAM, SYN_REPLY, DATA (with FIN), RST_STREAM,
PING, GOAWAY; SETTINGS and WINDOW_UPDATE are read and ignored (spdystream does no flow control
either). Header blocks are zlib streams over the SPDY/3 dictionary, one context per direction
for the connection's life, each block ended by a sync flush.

    session = SpdySession(write, drain)     # write(bytes) to the connection, drain(): its pace
    session.feed(data) / session.feed_eof() # bytes from the peer (the HTTP server's parser hook)
    stream = await session.accept()         # the next SYN_STREAM (replied to), None at the end
    data = await stream.read()              # b"" at the peer's FIN or reset
    stream.ignore_input()                   # a stream we never read: its data is dropped
    await stream.write(b"...", fin=True)

Bounded: data not yet read counts against the session's InputBudget (backpressure.py; its
`on_full` stops reading from the client), a stream nobody reads drops what it gets, and at most
MAX_STREAMS streams are open at once (more are refused with RST_STREAM).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable

from supervisor.cri.streaming.backpressure import InputBudget
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_CANCEL = 1, 3, 5
MAX_DATA = 32 << 10  # bytes per DATA frame we send
MAX_FRAME = 1 << 24  # the 24-bit length field
MAX_HEADER_BLOCK = 1 << 20  # decompressed; a bigger block is a protocol error
MAX_STREAMS = 256  # open at once per session (client-go opens 2 per forwarded connection, <= 5 for exec)


class ProtocolError(Exception):
    pass


def encode_headers(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        key, val = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(key)), key, struct.pack(">I", len(val)), val]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, str]:
    """name → value (values of one name are NUL-joined on the wire; kept so)."""
    try:
        (count,), pos = struct.unpack_from(">I", block), 4
        out = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            if pos > len(block):
                raise ProtocolError("header block is truncated")
            out[name.lower()] = value
        return out
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad header block: {exc}") from None


def control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


class SpdyStream:
    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, str]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.remote_closed = False  # FIN or reset from the peer
        self.local_closed = False
        self.ignored = False  # its data is dropped: nobody reads this stream

    async def read(self) -> bytes:
        """The next data from the peer; b"" once it closed its side."""
        if self.remote_closed and self._incoming.empty():
            return b""
        data = await self._incoming.get()
        self.session.budget.take(len(data))
        return data

    def ignore_input(self) -> None:
        """Nobody will read this stream: drop what it holds and what comes."""
        self.ignored = True
        while not self._incoming.empty():
            self.session.budget.take(len(self._incoming.get_nowait()))
        if self.remote_closed:
            self._incoming.put_nowait(b"")

    def _received(self, data: bytes, fin: bool) -> None:
        if self.remote_closed:
            return
        if data and not self.ignored:
            self.session.budget.add(len(data))
            self._incoming.put_nowait(data)
        if fin:
            self.remote_closed = True
            self._incoming.put_nowait(b"")

    async def write(self, data: bytes, fin: bool = False) -> None:
        if self.local_closed or self.session.closed:
            return
        for i in range(0, len(data), MAX_DATA):
            last = i + MAX_DATA >= len(data)
            self.session.write(data_frame(self.id, data[i:i + MAX_DATA], fin and last))
            await self.session.drain()
        if fin:
            if not data:
                self.session.write(data_frame(self.id, b"", True))
            self.local_closed = True

    async def close(self) -> None:
        """Our side is done (FIN); the peer may still send."""
        if not self.local_closed:
            await self.write(b"", fin=True)

    def reset(self) -> None:
        self.ignore_input()
        if not self.session.closed:
            self.session.write(control(RST_STREAM, 0, struct.pack(">II", self.id, RST_CANCEL)))
        self.local_closed = True
        self._received(b"", True)


class SpdySession:
    """One SPDY connection, server side: the peer opens the streams."""

    def __init__(self, write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]],
                 on_full: Callable[[bool], None] | None = None) -> None:
        self._write = write
        self.drain = drain
        self.budget = InputBudget(on_full)  # on_full(True): stop reading the client; (False): go on
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self.streams: dict[int, SpdyStream] = {}
        self._new: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._ended = asyncio.Event()
        self.closed = False
        self.refuse_new_streams = False  # set once the consumer has all the streams it reads

    def write(self, frame: bytes) -> None:
        if not self.closed:
            self._write(frame)

    # ----- what the peer sends -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf += data
        try:
            while len(self._buf) >= 8:
                (length,) = struct.unpack_from(">I", self._buf, 4)
                length &= 0xFFFFFF
                if len(self._buf) < 8 + length:
                    return
                head, payload = bytes(self._buf[:8]), bytes(self._buf[8:8 + length])
                del self._buf[:8 + length]
                self._frame(head, payload)
        except ProtocolError:
            self.write(control(GOAWAY, 0, struct.pack(">II", 0, RST_PROTOCOL_ERROR)))
            self.feed_eof()

    def feed_eof(self) -> None:
        """The connection ended: every stream ends too."""
        if self.closed:
            return
        self.closed = True
        self._ended.set()
        for stream in self.streams.values():
            stream._received(b"", True)
        self._new.put_nowait(None)
        self.budget.release()

    def _frame(self, head: bytes, payload: bytes) -> None:
        word, flags = struct.unpack_from(">I", head)[0], head[4]
        if not word & 0x80000000:  # DATA
            stream = self.streams.get(word & 0x7FFFFFFF)
            if stream is not None:
                stream._received(payload, bool(flags & FLAG_FIN))
            return
        if (word >> 16) & 0x7FFF != VERSION:
            raise ProtocolError(f"SPDY version {(word >> 16) & 0x7FFF} (only 3 is spoken)")
        kind = word & 0xFFFF
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = decode_headers(self._inflated(payload[10:]))  # always: the zlib context moves on
            if self.refuse_new_streams or not self._room_for_a_stream():
                self.write(control(RST_STREAM, 0, struct.pack(">II", stream_id, RST_REFUSED_STREAM)))
                return
            stream = SpdyStream(self, stream_id, headers)
            self.streams[stream_id] = stream
            # Replied at once, as spdystream's server does: the client waits for it.
            self.write(control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._deflated({})))
            if flags & FLAG_FIN:
                stream._received(b"", True)
            self._new.put_nowait(stream)
        elif kind == RST_STREAM and len(payload) >= 4:
            stream = self.streams.get(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF)
            if stream is not None:
                stream.local_closed = True
                stream._received(b"", True)
        elif kind == HEADERS and len(payload) >= 4:
            self._inflated(payload[4:])  # keeps the shared zlib context in step
            stream = self.streams.get(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF)
            if stream is not None and flags & FLAG_FIN:
                stream._received(b"", True)
        elif kind == PING:
            self.write(control(PING, 0, payload))
        elif kind == GOAWAY:
            self.feed_eof()
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY (we open no streams): nothing to do

    def _room_for_a_stream(self) -> bool:
        if len(self.streams) < MAX_STREAMS:
            return True
        self.streams = {k: s for k, s in self.streams.items() if not (s.remote_closed and s.local_closed)}
        return len(self.streams) < MAX_STREAMS

    def _inflated(self, block: bytes) -> bytes:
        try:
            out = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError("header block is too large")
        return out

    def _deflated(self, headers: dict[str, str]) -> bytes:
        return self._deflate.compress(encode_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    # ----- ours ----------------------------------------------------------------------------------

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the connection ended."""
        if self.closed and self._new.empty():
            return None
        return await self._new.get()

    async def wait_closed(self) -> None:
        await self._ended.wait()

    def goaway(self) -> None:
        with contextlib.suppress(Exception):
            self.write(control(GOAWAY, 0, struct.pack(">II", max(self.streams, default=0), 0)))
