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
MAX_STREAMS streams are open at once (more are refused with RST_STREAM). A DATA frame is handed
on in pieces as its bytes arrive (never collected whole: a frame may announce 16 MiB), so what a
session holds that its consumer has not taken is at most the budget plus one read. Only control
frames are collected whole, and one over MAX_CONTROL_FRAME, or a header block that inflates past
MAX_HEADER_BLOCK (a zlib bomb), ends the session with GOAWAY and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable

from supervisor.cri.streaming.backpressure import InputBudget
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_CANCEL = 1, 3, 5
MAX_DATA = 32 << 10  # bytes per DATA frame we send
# Control frames are collected whole before they act, so they are capped far below the 24-bit
# length field's 16 MiB. client-go's are tiny: SYN_STREAMs whose header blocks hold streamType,
# port and requestID (well under 100 bytes inflated), 8-byte RST_STREAM/GOAWAY/WINDOW_UPDATE,
# 4-byte PINGs, no SETTINGS. 16 KiB holds the largest header block we take even incompressible.
MAX_CONTROL_FRAME = 16 << 10
# Inflated; a bigger block is a protocol error. 8 KiB is what this server's HTTP side takes for one
# request line or header field (aiohttp's 8190), and an open stream keeps its headers: at most
# MAX_STREAMS x 8 KiB per session.
MAX_HEADER_BLOCK = 8 << 10
READ_JOIN = 256 << 10  # bytes one read() gives at most when it joins pieces that came apart
MAX_STREAMS = 256  # open at once per session (client-go opens 2 per forwarded connection, <= 5 for exec)

log = logging.getLogger("dockyard.cri.streaming")


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
        self._incoming: deque[bytes] = deque()  # data not read yet, as it came (pieces of frames)
        self._arrived = asyncio.Event()
        self.remote_closed = False  # FIN or reset from the peer
        self.local_closed = False
        self.ignored = False  # its data is dropped: nobody reads this stream

    async def read(self) -> bytes:
        """The data from the peer not read yet (pieces joined, up to READ_JOIN bytes); b"" once
        it closed its side and all was read."""
        while not self._incoming:
            if self.remote_closed:
                return b""
            self._arrived.clear()
            await self._arrived.wait()
        pieces = [self._incoming.popleft()]
        size = len(pieces[0])
        while self._incoming and size + len(self._incoming[0]) <= READ_JOIN:
            pieces.append(self._incoming.popleft())
            size += len(pieces[-1])
        self.session.budget.take(size)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def ignore_input(self) -> None:
        """Nobody will read this stream: drop what it holds and what comes."""
        self.ignored = True
        self.session.budget.take(sum(map(len, self._incoming)))
        self._incoming.clear()
        self._arrived.set()

    def _received(self, data: bytes, fin: bool) -> None:
        if self.remote_closed:
            return
        if data and not self.ignored:
            self.session.budget.add(len(data))
            self._incoming.append(data)
        if fin:
            self.remote_closed = True
        self._arrived.set()

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
                 on_full: Callable[[bool], None] | None = None, label: str = "") -> None:
        self._write = write
        self.drain = drain
        self.label = label  # names the session in log lines (the request and the peer)
        self.budget = InputBudget(on_full)  # on_full(True): stop reading the client; (False): go on
        # The frame parser's state: the header being read, a control frame's payload being
        # collected (its type, flags, bytes still to come), a DATA frame's stream and bytes to come.
        self._head = bytearray()
        self._buf = bytearray()
        self._kind = self._flags = self._control_left = 0
        self._data_to: SpdyStream | None = None
        self._data_fin = False
        self._data_left = 0
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

    @property
    def buffered(self) -> int:
        """Bytes from the peer held here: a frame's unfinished header or control payload, and
        data its streams' readers have not taken yet."""
        return len(self._head) + len(self._buf) + self.budget.queued

    # ----- what the peer sends -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.closed:
            return  # ended (GOAWAY, a protocol error): what still comes is not read
        try:
            self._parse(memoryview(data))
        except ProtocolError as exc:
            log.warning("SPDY session%s: %s; ending it (GOAWAY PROTOCOL_ERROR)",
                        f" of {self.label}" if self.label else "", exc)
            self.write(control(GOAWAY, 0, struct.pack(">II", 0, RST_PROTOCOL_ERROR)))
            self.feed_eof()

    def _parse(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.closed:
            if self._data_left:  # inside a DATA frame: its bytes go on as they come
                n = min(self._data_left, end - pos)
                self._data_left -= n
                to, fin = self._data_to, self._data_fin and not self._data_left
                if to is not None and not to.remote_closed and (fin or not to.ignored):
                    to._received(b"" if to.ignored else bytes(data[pos:pos + n]), fin)  # copied if kept
                pos += n
                continue
            if self._control_left:  # a control frame's payload: collected, it is small
                n = min(self._control_left, end - pos)
                self._control_left -= n
                self._buf += data[pos:pos + n]
                pos += n
                if not self._control_left:
                    payload, self._buf = bytes(self._buf), bytearray()
                    self._control(self._kind, self._flags, payload)
                continue
            n = min(8 - len(self._head), end - pos)
            self._head += data[pos:pos + n]
            pos += n
            if len(self._head) == 8:
                head, self._head = bytes(self._head), bytearray()
                self._header(head)

    def _header(self, head: bytes) -> None:
        """A frame's 8 bytes: a control frame is checked before its payload is read."""
        word, length = struct.unpack(">II", head)
        flags, length = length >> 24, length & 0xFFFFFF
        if not word & 0x80000000:  # DATA: to its stream, or dropped (unknown or closed stream)
            self._data_to = self.streams.get(word & 0x7FFFFFFF)
            self._data_fin = bool(flags & FLAG_FIN)
            self._data_left = length
            if not length and self._data_to is not None:
                self._data_to._received(b"", self._data_fin)
            return
        if (word >> 16) & 0x7FFF != VERSION:
            raise ProtocolError(f"SPDY version {(word >> 16) & 0x7FFF} (only 3 is spoken)")
        if length > MAX_CONTROL_FRAME:
            raise ProtocolError(f"a control frame (type {word & 0xFFFF}) of {length} bytes, over the "
                                f"{MAX_CONTROL_FRAME} this server takes")
        self._kind, self._flags, self._control_left = word & 0xFFFF, flags, length
        if not length:
            self._control(self._kind, flags, b"")

    def feed_eof(self) -> None:
        """The connection ended: every stream ends too."""
        if self.closed:
            return
        self.closed = True
        self._ended.set()
        self._buf, self._head, self._data_to = bytearray(), bytearray(), None
        for stream in self.streams.values():
            stream._received(b"", True)
        self._new.put_nowait(None)
        self.budget.release()

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            headers = decode_headers(self._inflated(payload[10:]))  # always: the zlib context moves on
            if self.refuse_new_streams or not self._room_for_a_stream():
                self.write(control(RST_STREAM, 0, struct.pack(">II", stream_id, RST_REFUSED_STREAM)))
                return
            new = SpdyStream(self, stream_id, headers)
            self.streams[stream_id] = new
            # Replied at once, as spdystream's server does: the client waits for it.
            self.write(control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._deflated({})))
            if flags & FLAG_FIN:
                new._received(b"", True)
            self._new.put_nowait(new)
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
        # At most one byte past the cap is ever inflated (a zlib bomb costs no more than an
        # honest block): more output, or input left over, means the block is too large.
        try:
            out = self._inflate.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as exc:
            raise ProtocolError(f"header block: {exc}") from None
        if len(out) > MAX_HEADER_BLOCK or self._inflate.unconsumed_tail:
            raise ProtocolError(f"a header block inflating past the {MAX_HEADER_BLOCK} bytes this server takes")
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
