"""The shim's attach socket: how the daemon reaches a running container's stdio (`dock attach`).

The shim of a container that logs (or keeps its stdin open) listens on `<bundle>/attach.sock`
(mode 0600, as its ttrpc socket). Each connection is one attached client: the shim sends it
everything the init writes from then on, and writes what it sends into the init's stdin (when
the container was created with an open stdin: the spec annotation `OPEN_STDIN`, Docker's
OpenStdin). Frames both ways are ``kind (1 byte) | length (4 bytes, big endian) | payload``:

    shim → daemon   HELLO {"tty": bool, "stdin": bool} first; then STDOUT/STDERR bytes (a
                    terminal's output is STDOUT); EXIT {"status", "exited_at"} once the init's
                    output is all sent, then the shim closes the connection.
    daemon → shim   STDIN bytes; CLOSE_STDIN (the process reads EOF; a terminal stays open).

The bundle path may be longer than a unix socket path can be: both sides go through
/proc/self/fd/<dirfd>/ (`short_path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from dockyard_common.jsonutil import json_value

SOCKET = "attach.sock"
OPEN_STDIN = "dockyard.open-stdin"  # spec annotation: "true" keeps the init's stdin writable

HELLO, STDOUT, STDERR, EXIT = 1, 2, 3, 4
STDIN, CLOSE_STDIN = 16, 17
MAX_PAYLOAD = 1 << 20
_HEADER = struct.Struct(">BI")


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def encode(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def encode_json(kind: int, value: dict[str, Any]) -> bytes:
    return encode(kind, json.dumps(value).encode())


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        value = json_value(payload, "a control frame")
    except ValueError:
        raise FrameError("a control frame that is not JSON") from None
    if not isinstance(value, dict):
        raise FrameError("a control frame that is not a JSON object")
    return value


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next frame; None at a clean end (EOF between frames)."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("the connection ended inside a frame header") from None
        return None
    kind, size = _HEADER.unpack(header)
    if size > MAX_PAYLOAD:
        raise FrameError(f"a frame of {size} bytes (the most is {MAX_PAYLOAD})")
    try:
        return kind, await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("the connection ended inside a frame") from None


@contextlib.contextmanager
def short_path(bundle: str) -> Iterator[str]:
    """The socket's path through an fd of the bundle directory: always short enough."""
    fd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET}"
    finally:
        os.close(fd)


def listen(bundle: str) -> socket.socket:
    """The shim's listening socket, mode 0600 before anyone can connect (bound under a temporary
    name, chmod'ed, renamed into place); a stale one is replaced."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with short_path(bundle) as path:
            tmp = f"{path}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            sock.bind(tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(bundle: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The daemon's side: FileNotFoundError when the container has no attach socket,
    ConnectionRefusedError when its shim no longer listens."""
    with short_path(bundle) as path:
        return await asyncio.open_unix_connection(path, limit=MAX_PAYLOAD + _HEADER.size)
