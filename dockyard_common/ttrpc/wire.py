"""ttrpc framing: a 10-byte header, then a protobuf-encoded Request or Response.

    0      4          8     9      10
    +------+----------+-----+------+----------------+
    |length| stream id| type| flags| payload (length)|
    +------+----------+-----+------+----------------+

`length` counts the payload only, big endian like the stream id. Clients pick odd stream ids,
increasing. A frame longer than MAX_MESSAGE_LENGTH is read and thrown away whole, so the stream
stays aligned on frame boundaries, and the reader reports it (`FrameTooLarge`) for the stream it
belongs to — the peer answers that stream with RESOURCE_EXHAUSTED, exactly as ttrpc does.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HEADER_LENGTH = 10
MAX_MESSAGE_LENGTH = 4 << 20
MAX_STREAM_ID = 0xFFFFFFFF

TYPE_REQUEST = 0x1
TYPE_RESPONSE = 0x2

_HEADER = struct.Struct(">IIBB")
_DISCARD_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    stream_id: int
    type: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    payload: bytes

    @property
    def stream_id(self) -> int:
        return self.header.stream_id

    @property
    def type(self) -> int:
        return self.header.type


class FrameTooLarge(Exception):
    """A frame over the limit arrived; its payload has been discarded from the stream."""

    def __init__(self, header: Header) -> None:
        super().__init__(oversized_message(header.length))
        self.header = header


def oversized_message(length: int) -> str:
    """ttrpc's wording for a message over the limit."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE_LENGTH}"


def encode_header(header: Header) -> bytes:
    return _HEADER.pack(header.length, header.stream_id, header.type, header.flags)


def decode_header(data: bytes) -> Header:
    if len(data) != HEADER_LENGTH:
        raise ValueError(f"ttrpc header must be {HEADER_LENGTH} bytes, got {len(data)}")
    length, stream_id, mtype, flags = _HEADER.unpack(data)
    return Header(length, stream_id, mtype, flags)


def encode_frame(stream_id: int, mtype: int, payload: bytes, flags: int = 0) -> bytes:
    """Header and payload as one buffer, so a single write keeps frames from interleaving.

    The length limit is the sender's to check (see `check_length`): the framing itself can
    carry up to 4 GiB, which is how tests provoke the receiver's limit.
    """
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"ttrpc stream id {stream_id} out of range")
    return _HEADER.pack(len(payload), stream_id, mtype, flags) + payload


def check_length(length: int) -> bool:
    return length <= MAX_MESSAGE_LENGTH


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame.

    Raises asyncio.IncompleteReadError at end of stream (clean when `partial` is empty and no
    header was started), FrameTooLarge after discarding an oversized frame.
    """
    header = decode_header(await reader.readexactly(HEADER_LENGTH))
    if header.length > MAX_MESSAGE_LENGTH:
        remaining = header.length
        while remaining:
            chunk = await reader.read(min(remaining, _DISCARD_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
        raise FrameTooLarge(header)
    payload = await reader.readexactly(header.length) if header.length else b""
    return Frame(header, payload)
