"""supervisor/grpcserver/h2.Connection fed frames directly (a recording transport, no socket):
the frame rules, the receive-window books, and that no input reaches the last-resort guard."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from typing import Any

from supervisor.grpcserver import h2


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = self.paused = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return len(self.out)

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        out, pos, buf = [], 0, self.out
        while pos + 9 <= len(buf):
            length = int.from_bytes(buf[pos:pos + 3], "big")
            out.append((buf[pos + 3], buf[pos + 4], int.from_bytes(buf[pos + 5:pos + 9], "big"),
                        bytes(buf[pos + 9:pos + 9 + length])))
            pos += 9 + length
        return out


def _connection(streams: list[h2.Stream] | None = None) -> tuple[h2.Connection, Transport]:
    got = streams if streams is not None else []
    conn = h2.Connection(got.append, lambda c: None, h2.Limits(buffer=1 << 20))
    transport = Transport()
    conn.connection_made(transport)
    conn.data_received(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
    return conn, transport


def _headers(path: str = "/s/M") -> bytes:
    return h2.encode_headers([(":method", "POST"), (":scheme", "http"), (":path", path),
                              ("content-type", "application/grpc")])


def _goaway_code(t: Transport) -> int | None:
    codes = [struct.unpack(">I", f[3][4:8])[0] for f in t.frames() if f[0] == h2.GOAWAY]
    return codes[0] if codes else None


async def test_every_ending_gives_the_window_back() -> None:
    streams: list[h2.Stream] = []
    conn, t = _connection(streams)
    body = b"\0\0\0\0\x10" + b"x" * 16
    for sid in (1, 3, 5, 7):
        conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, _headers())
                           + h2.frame(h2.DATA, 0, sid, body * 100))
    assert conn.held == 4 * 2100 and conn.recv_window == (1 << 20) - 4 * 2100
    s1, s3, s5, s7 = streams
    s1.send_headers([(":status", "200")], end_stream=True)  # answered without reading
    conn.data_received(h2.frame(h2.RST_STREAM, 0, 3, struct.pack(">I", h2.CANCEL)))  # reset by the client
    s5.send_reset()  # reset by us
    conn.data_received(h2.frame(h2.WINDOW_UPDATE, 0, 7, bytes(4)))  # a stream error
    conn.data_received(h2.frame(h2.DATA, 0, 1, b"late"))  # in flight when we closed it
    assert s3.reset and s7.reset and all(s.finished for s in streams)
    assert not conn.streams and conn.held == 0
    assert conn.recv_window + conn.recv_unacked == 1 << 20
    assert _goaway_code(t) is None


async def test_reads_do_not_release_until_the_message_is_handed_over() -> None:
    streams: list[h2.Stream] = []
    conn, _ = _connection(streams)
    conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, _headers()) + h2.frame(h2.DATA, 0, 1, b"a" * 1000))
    (s,) = streams
    assert await s.read() == b"a" * 1000
    assert conn.held == 1000  # read into a message buffer: still held
    s.release(600)
    assert conn.held == 400 and conn.recv_unacked == 600


async def test_a_stalled_buffer_refuses_the_largest_partial_message() -> None:
    streams: list[h2.Stream] = []
    conn, _ = _connection(streams)
    sizes = {1: 500_000, 3: 300_000, 5: 248_576}  # 1 MiB in all: the window is spent
    for sid, n in sizes.items():
        conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, _headers()))
        for i in range(0, n, 16384):
            conn.data_received(h2.frame(h2.DATA, 0, sid, b"p" * min(16384, n - i)))
    assert conn.recv_window == 0
    readers = []
    for s in streams:
        while s._chunks:
            await s.read()
        readers.append(asyncio.ensure_future(s.read(need=600_000)))  # each waits for the rest of a message
    await asyncio.sleep(0)
    done, pending = await asyncio.wait(readers, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert [r.exception().__class__ for r in done] == [h2.RequestRefused]
    assert readers[0] in done  # stream 1 held the most
    for r in pending:
        r.cancel()


async def test_ping_strikes() -> None:
    conn, t = _connection()
    for _ in range(3):
        conn.data_received(h2.frame(h2.PING, 0, 0, bytes(8)))
    assert _goaway_code(t) is None
    conn.data_received(h2.frame(h2.PING, 0, 0, bytes(8)))
    assert _goaway_code(t) == h2.ENHANCE_YOUR_CALM


async def test_random_input_never_reaches_the_guard() -> None:
    """Any bytes at all end in a normal answer or a GOAWAY of the rules, never in the
    last-resort guard (which would mean a bug)."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    frames = [h2.frame(h2.HEADERS, h2.END_HEADERS, 1, _headers()), h2.frame(h2.DATA, 0, 1, b"\0\0\0\0\1x"),
              h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 5)), h2.frame(h2.PING, 0, 0, bytes(8)),
              h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", 4, 100)), h2.frame(h2.RST_STREAM, 0, 1, bytes(4)),
              h2.frame(h2.HEADERS, 0, 3, _headers()), h2.frame(h2.CONTINUATION, h2.END_HEADERS, 3, b"")]
    for _ in range(3000):
        conn, _ = _connection()
        data = bytearray(b"".join(rng.choice(frames) for _ in range(rng.randint(1, 12))))
        for _ in range(rng.randint(0, 6)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        for i in range(0, len(data), step := rng.randint(1, 64)):
            conn.data_received(bytes(data[i:i + step]))
        assert not conn.failed, f"seed {seed}: {bytes(data).hex()}"
        conn.connection_lost(None)
        for s in list(conn.streams.values()):
            assert s.finished
