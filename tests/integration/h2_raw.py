"""A raw HTTP/2 client for tests that must misbehave: frames built by hand (supervisor's own
`frame`/`encode_headers`), read back as (kind, flags, stream, payload) tuples."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

import hpack

from supervisor.grpcserver import h2

Frame = tuple[int, int, int, bytes]


def request_headers(path: str, **extra: str) -> bytes:
    return h2.encode_headers([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                              ("content-type", "application/grpc"), ("te", "trailers"), *extra.items()])


def grpc_message(body: bytes, declared: int | None = None) -> bytes:
    return b"\0" + struct.pack(">I", len(body) if declared is None else declared) + body


@dataclass
class Goaway:
    last_stream: int
    code: int
    debug: bytes


class _Protocol(asyncio.Protocol):
    """Keeps what arrived after the connection is lost (a StreamReader would raise the write
    error instead of handing over a GOAWAY already received)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.arrived = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.arrived.set()

    def eof_received(self) -> bool | None:
        self.eof = True
        self.arrived.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.arrived.set()
        self.writable.set()
        self.lost.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class RawClient:
    opened: list[RawClient] = []  # closed by close_all (a fixture's teardown)

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self.transport, self._proto = transport, protocol
        self.frames: list[Frame] = []
        self.eof = False
        self._decoder = hpack.Decoder()

    @classmethod
    async def connect(cls, path: str, handshake: bool = True) -> RawClient:
        transport, protocol = await asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        client = cls(transport, protocol)
        cls.opened.append(client)
        if handshake:
            await client.send(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
        return client

    async def send(self, data: bytes) -> None:
        if self.transport.is_closing() or self._proto.lost.is_set():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        await self._proto.writable.wait()
        if self._proto.lost.is_set():
            raise ConnectionResetError("connection lost")

    async def send_frame(self, kind: int, flags: int, sid: int, payload: bytes = b"") -> None:
        await self.send(h2.frame(kind, flags, sid, payload))

    async def read_frame(self) -> Frame | None:
        proto = self._proto
        while True:
            if len(proto.buf) >= 9:
                length = int.from_bytes(proto.buf[:3], "big")
                if len(proto.buf) >= 9 + length:
                    head, payload = bytes(proto.buf[:9]), bytes(proto.buf[9:9 + length])
                    del proto.buf[:9 + length]
                    f = (head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload)
                    self.frames.append(f)
                    return f
            if proto.eof:
                self.eof = True
                return None
            proto.arrived.clear()
            await proto.arrived.wait()

    async def until(self, predicate: Callable[[Frame], object], timeout: float = 10) -> Frame | None:
        """Read frames until one matches (returned) or the connection ends (None)."""
        async with asyncio.timeout(timeout):
            while (f := await self.read_frame()) is not None:
                if predicate(f):
                    return f
        return None

    async def goaway(self, timeout: float = 10) -> Goaway | None:
        f = await self.until(lambda f: f[0] == h2.GOAWAY, timeout)
        if f is None:
            return None
        last, code = struct.unpack(">II", f[3][:8])
        return Goaway(last & 0x7FFFFFFF, code, f[3][8:])

    async def closed(self, timeout: float = 10) -> bool:
        """Read until the server closes the connection."""
        async with asyncio.timeout(timeout):
            while await self.read_frame() is not None:
                pass
        return True

    def headers_of(self, payload: bytes) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._decoder.decode(payload)}

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        await self._proto.lost.wait()

    @classmethod
    async def close_all(cls) -> None:
        for client in cls.opened:
            client.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.wait_closed(), 5)
        cls.opened.clear()
