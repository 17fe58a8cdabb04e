"""A raw SPDY/3.1 client of the CRI streaming server, on a blocking socket: the frames client-go's
spdystream sends, and the ones it never would (tests/unit/test_cri_streaming_bounds.py and
tests/integration/test_cri_streaming_bounds.py).

    c = SpdyClient(url, "v4.channel.k8s.io")     # or sock=: a connection made elsewhere
    c.upgrade()                                  # b"HTTP/1.1 101 ..." (status line and headers)
    c.syn(1, {"streamType": "error"}); c.sock.sendall(data_frame(...))
    c.frame(); c.until_end()                     # (control, type or stream id, flags, payload)
"""

from __future__ import annotations

import socket
import struct
import zlib
from urllib.parse import urlsplit

from supervisor.cri.streaming.spdy import GOAWAY, SYN_STREAM, control, encode_headers
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY

ANNOUNCED = (1 << 24) - 1  # the largest length a SPDY frame header can announce
PROTOCOL_ERROR = 1  # GOAWAY's status


class SpdyClient:
    """What client-go's spdystream sends, on a blocking socket (used from a thread)."""

    def __init__(self, url: str, protocol: str, sock: socket.socket | None = None) -> None:
        parts = urlsplit(url)
        self.url, self.protocol = url, protocol
        self.sock = sock or socket.create_connection((parts.hostname, parts.port), timeout=20)
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self._in = b""

    def upgrade(self) -> bytes:
        """The answer's status line and headers."""
        parts = urlsplit(self.url)
        self.sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                          f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {self.protocol}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self._in:
            got = self.sock.recv(65536)
            if not got:
                break
            self._in += got
        head, _, self._in = self._in.partition(b"\r\n\r\n")
        return head

    def syn(self, stream_id: int, headers: dict[str, str]) -> None:
        block = self.deflate.compress(encode_headers(headers)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(control(SYN_STREAM, 0, struct.pack(">IIH", stream_id, 0, 0) + block))

    def frame(self) -> tuple[bool, int, int, bytes] | None:
        """(control, type or stream id, flags, payload); None at the end of the connection."""
        while True:
            if len(self._in) >= 8:
                word, length = struct.unpack_from(">II", self._in)
                if len(self._in) >= 8 + (length & 0xFFFFFF):
                    payload = self._in[8:8 + (length & 0xFFFFFF)]
                    self._in = self._in[8 + len(payload):]
                    is_control = bool(word & 0x80000000)
                    return is_control, (word & 0xFFFF if is_control else word), length >> 24, payload
            try:
                got = self.sock.recv(65536)
            except ConnectionResetError:
                got = b""
            if not got:
                return None
            self._in += got

    def until_end(self) -> list[tuple[bool, int, int, bytes]]:
        frames = []
        while (f := self.frame()) is not None:
            frames.append(f)
        return frames

    def close(self) -> None:
        self.sock.close()


def goaway_status(frames: list[tuple[bool, int, int, bytes]]) -> int | None:
    for is_control, kind, _, payload in frames:
        if is_control and kind == GOAWAY:
            return int(struct.unpack(">II", payload)[1])
    return None
