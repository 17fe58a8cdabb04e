"""Hostile clients of the CRI streaming server, speaking raw SPDY/3.1 (what crictl never sends):
run inside the daemon's network namespace, where the server listens on 127.0.0.1.

    nsenter --net=NS python3 -m tests.cri_fuzz flood URL   # stdin as fast as it goes, then hold
    nsenter --net=NS python3 -m tests.cri_fuzz hold URL    # stdout opened, never read
    nsenter --net=NS python3 -m tests.cri_fuzz garbage URL # upgrade, then frames that mean nothing

Each prints one line of JSON ({"sent": bytes, "stalled": bool, ...}) once it holds the session,
then waits for a line on its stdin before it drops the connection (so the test decides when the
client disappears); `garbage` prints what came back and exits.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
import zlib
from urllib.parse import urlsplit

from supervisor.cri.streaming.spdy import SYN_STREAM, control, data_frame, encode_headers
from supervisor.cri.streaming.spdy_dictionary import DICTIONARY

CHUNK = 32 << 10


def upgrade(url: str, protocol: str = "v4.channel.k8s.io") -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                 f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        got = sock.recv(1)
        if not got:
            raise SystemExit(f"no answer to the upgrade: {head!r}")
        head += got
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"not upgraded: {head!r}")
    return sock


def open_streams(sock: socket.socket, kinds: list[str]) -> dict[str, int]:
    deflate = zlib.compressobj(zdict=DICTIONARY)
    ids = {}
    for i, kind in enumerate(kinds):
        stream_id = 2 * i + 1
        block = deflate.compress(encode_headers({"streamtype": kind})) + deflate.flush(zlib.Z_SYNC_FLUSH)
        sock.sendall(control(SYN_STREAM, 0, struct.pack(">IIH", stream_id, 0, 0) + block))
        ids[kind] = stream_id
    return ids


def flood(url: str, total: int = 256 << 20, stall: float = 3.0) -> dict[str, object]:
    """Stdin as fast as the server takes it, until `total` or a send waits `stall` seconds."""
    sock = upgrade(url)
    ids = open_streams(sock, ["error", "stdin", "stdout", "stderr"])
    sock.settimeout(stall)
    frame = data_frame(ids["stdin"], b"x" * CHUNK)
    sent, stalled = 0, False
    try:
        while sent < total:
            sock.sendall(frame)
            sent += CHUNK
    except TimeoutError:
        stalled = True
    return {"sock": sock, "sent": sent, "stalled": stalled}


def hold(url: str) -> dict[str, object]:
    """Asks for stdout and never reads it."""
    sock = upgrade(url)
    open_streams(sock, ["error", "stdout", "stderr"])
    return {"sock": sock}


def garbage(url: str) -> dict[str, object]:
    """Frames of an unknown version, an oversize length, then random bytes: the session ends."""
    sock = upgrade(url)
    open_streams(sock, ["error", "stdout", "stderr", "bogus", "stdout"])
    sock.sendall(struct.pack(">HHI", 0x8000 | 2, 1, 4) + b"\0" * 4 + os.urandom(4096))
    sock.settimeout(20)
    got = b""
    start = time.monotonic()
    try:
        while chunk := sock.recv(65536):
            got += chunk
            if time.monotonic() - start > 20:
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return {"received": len(got), "closed": True}


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    result = {"flood": flood, "hold": hold, "garbage": garbage}[mode](url)
    sock = result.pop("sock", None)
    print(json.dumps(result), flush=True)
    if isinstance(sock, socket.socket):
        sys.stdin.readline()  # the test says when the client disappears
        sock.close()


if __name__ == "__main__":
    main()
