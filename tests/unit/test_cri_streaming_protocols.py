"""The streaming server's protocol pieces without a network: SPDY/3.1 framing and header
compression (as a client's zlib with the SPDY dictionary makes it), remote command status and
resize decoding, one-time tokens."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator

import pytest

from supervisor.cri.streaming import remotecommand
from supervisor.cri.streaming.spdy import (
    FLAG_FIN,
    GOAWAY,
    PING,
    SYN_REPLY,
    SYN_STREAM,
    SpdySession,
    control,
    data_frame,
    encode_headers,
)
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY
from supervisor.cri.streaming.tokens import TokenStore


class Client:
    """The peer's half: its own compression context, as spdystream keeps one per connection."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)

    def syn_stream(self, stream_id: int, headers: dict[str, str], fin: bool = False) -> bytes:
        block = self.deflate.compress(encode_headers(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        return control(SYN_STREAM, FLAG_FIN if fin else 0, struct.pack(">IIH", stream_id, 0, 0) + block)


def frames(data: bytes) -> list[tuple[bool, int, int, bytes]]:
    """(control, type or stream id, flags, payload) of each frame in `data`."""
    out = []
    while data:
        word, length = struct.unpack_from(">II", data)
        flags, length = length >> 24, length & 0xFFFFFF
        payload, data = data[8:8 + length], data[8 + length:]
        is_control = bool(word & 0x80000000)
        out.append((is_control, word & 0xFFFF if is_control else word, flags, payload))
    return out


def session() -> tuple[SpdySession, bytearray]:
    sent = bytearray()

    async def drain() -> None:
        return None

    return SpdySession(sent.extend, drain), sent


def test_the_dictionary_is_the_specs() -> None:
    assert len(DICTIONARY) == 1423
    assert DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


async def test_streams_are_accepted_replied_to_and_carry_data() -> None:
    s, sent = session()
    client = Client()
    # Split across feeds, as TCP may deliver it.
    wire = client.syn_stream(1, {"streamType": "stdin"}) + client.syn_stream(3, {"streamType": "error"}) \
        + data_frame(1, b"hello") + data_frame(1, b"", fin=True)
    for i in range(0, len(wire), 7):
        s.feed(wire[i:i + 7])
    first, second = await s.accept(), await s.accept()
    assert first is not None and second is not None
    assert (first.id, first.headers["streamtype"]) == (1, "stdin")
    assert second.headers == {"streamtype": "error"}
    assert await first.read() == b"hello" and await first.read() == b""
    replies = frames(bytes(sent))
    assert [(c, t) for c, t, _, _ in replies] == [(True, SYN_REPLY), (True, SYN_REPLY)]
    inflate = zlib.decompressobj(zdict=DICTIONARY)
    for _, _, _, payload in replies:
        assert inflate.decompress(payload[4:]) == struct.pack(">I", 0)  # an empty header block

    sent.clear()
    await second.write(b"x" * 70_000, fin=True)
    out = frames(bytes(sent))
    assert b"".join(p for _, _, _, p in out) == b"x" * 70_000
    assert all(not c and sid == 3 for c, sid, _, _ in out) and out[-1][2] == FLAG_FIN


async def test_ping_is_echoed_and_goaway_ends_the_session() -> None:
    s, sent = session()
    s.feed(control(PING, 0, struct.pack(">I", 7)))
    assert frames(bytes(sent)) == [(True, PING, 0, struct.pack(">I", 7))]
    s.feed(Client().syn_stream(1, {"streamType": "data"}))
    stream = await s.accept()
    assert stream is not None
    s.feed(control(GOAWAY, 0, struct.pack(">II", 1, 0)))
    assert await s.accept() is None and await stream.read() == b""


async def test_a_corrupt_header_block_ends_the_session() -> None:
    s, sent = session()
    s.feed(control(SYN_STREAM, 0, struct.pack(">IIH", 1, 0, 0) + b"not zlib at all"))
    assert await s.accept() is None
    assert frames(bytes(sent))[-1][1] == GOAWAY


def test_status_is_what_client_go_decodes() -> None:
    assert json.loads(remotecommand.status(0)) == {"metadata": {}, "status": "Success"}
    failed = json.loads(remotecommand.status(3, ("sh", "-c", "exit 3")))
    assert failed["status"] == "Failure" and failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


class FakeProcess:
    stdin_eof_ends = False

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        return
        yield


class ResizeChannel:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = [*chunks, b""]

    async def read_resize(self) -> bytes:
        return self.chunks.pop(0)


async def test_resize_messages_are_decoded_across_chunks() -> None:
    proc = FakeProcess()
    ch = ResizeChannel([b'{"Width":80,', b'"Height":24}{"Width":1', b'00,"Height":40}\n', b"garbage"])
    await remotecommand._pump_resize(ch, proc)  # type: ignore[arg-type]
    assert proc.sizes == [(80, 24), (100, 40)]


def test_tokens_are_single_use_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    store: TokenStore[str] = TokenStore(ttl=60)
    token = store.issue("exec")
    assert store.take("nope") is None
    assert store.take(token) == "exec" and store.take(token) is None
    now = [1000.0]
    monkeypatch.setattr("supervisor.cri.streaming.tokens.time.monotonic", lambda: now[0])
    late = store.issue("attach")
    now[0] += 61
    assert store.take(late) is None

