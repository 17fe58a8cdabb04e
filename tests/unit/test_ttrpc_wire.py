"""ttrpc framing: header layout, frames across partial reads, oversized frames, the envelope proto."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import descriptor_pb2

from dockyard_api.ttrpc import ttrpc_pb2
from dockyard_common.ttrpc import wire
from dockyard_common.ttrpc.metadata import Metadata

FD = descriptor_pb2.FieldDescriptorProto


def reader_with(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_header_layout_is_big_endian_10_bytes() -> None:
    raw = wire.encode_frame(0x01020304, wire.TYPE_RESPONSE, b"abc", flags=0x7F)
    assert raw[:10] == bytes([0, 0, 0, 3, 1, 2, 3, 4, 2, 0x7F])
    assert raw[10:] == b"abc"
    assert wire.decode_header(raw[:10]) == wire.Header(3, 0x01020304, wire.TYPE_RESPONSE, 0x7F)


@pytest.mark.parametrize(
    "header",
    [wire.Header(0, 1, 1, 0), wire.Header(wire.MAX_MESSAGE_LENGTH, 0xFFFFFFFF, 2, 255), wire.Header(17, 3, 9, 1)],
)
def test_header_round_trip(header: wire.Header) -> None:
    assert wire.decode_header(wire.encode_header(header)) == header


def test_bad_header_and_stream_id() -> None:
    with pytest.raises(ValueError, match="10 bytes"):
        wire.decode_header(b"\0" * 9)
    with pytest.raises(ValueError, match="out of range"):
        wire.encode_frame(1 << 32, wire.TYPE_REQUEST, b"")


async def test_frames_round_trip_back_to_back() -> None:
    payloads = [b"", b"x", bytes(range(256)) * 100, b"y" * wire.MAX_MESSAGE_LENGTH]
    data = b"".join(wire.encode_frame(2 * i + 1, wire.TYPE_REQUEST, p) for i, p in enumerate(payloads))
    reader = reader_with(data)
    for i, p in enumerate(payloads):
        frame = await wire.read_frame(reader)
        assert (frame.stream_id, frame.type, frame.payload) == (2 * i + 1, wire.TYPE_REQUEST, p)
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await wire.read_frame(reader)
    assert info.value.partial == b""  # a clean end between frames


async def test_partial_reads_byte_by_byte() -> None:
    data = wire.encode_frame(7, wire.TYPE_RESPONSE, b"hello ttrpc") + wire.encode_frame(9, wire.TYPE_RESPONSE, b"!")
    reader = asyncio.StreamReader()
    first = asyncio.ensure_future(wire.read_frame(reader))
    for i, b in enumerate(data):
        reader.feed_data(bytes([b]))
        await asyncio.sleep(0)
        assert first.done() == (i >= len(data) - 12), i  # done exactly when its last byte arrived
    frame = first.result()
    assert (frame.stream_id, frame.payload) == (7, b"hello ttrpc")
    second = await wire.read_frame(reader)
    assert (second.stream_id, second.payload) == (9, b"!")


async def test_eof_inside_a_frame_is_an_incomplete_read() -> None:
    data = wire.encode_frame(1, wire.TYPE_REQUEST, b"0123456789")
    with pytest.raises(asyncio.IncompleteReadError):
        await wire.read_frame(reader_with(data[:5]))  # inside the header
    with pytest.raises(asyncio.IncompleteReadError):
        await wire.read_frame(reader_with(data[:-1]))  # inside the payload


async def test_oversized_frame_is_discarded_and_the_stream_stays_aligned() -> None:
    big = wire.MAX_MESSAGE_LENGTH + 1
    data = wire.encode_frame(5, wire.TYPE_REQUEST, b"z" * big) + wire.encode_frame(7, wire.TYPE_REQUEST, b"next")
    reader = reader_with(data)
    with pytest.raises(wire.FrameTooLarge) as info:
        await wire.read_frame(reader)
    assert info.value.header.stream_id == 5
    assert str(info.value) == f"message length {big} exceed maximum message size of {wire.MAX_MESSAGE_LENGTH}"
    frame = await wire.read_frame(reader)
    assert (frame.stream_id, frame.payload) == (7, b"next")


async def test_oversized_frame_cut_short_is_an_incomplete_read() -> None:
    header = wire.encode_header(wire.Header(wire.MAX_MESSAGE_LENGTH + 10, 1, 1))
    with pytest.raises(asyncio.IncompleteReadError):
        await wire.read_frame(reader_with(header + b"abc"))


def test_envelope_matches_ttrpc_types_go() -> None:
    """Field numbers and types of ttrpc's hand-written Go structs (types.go, v1.1)."""
    expected = {
        "Request": {
            1: ("service", FD.TYPE_STRING, FD.LABEL_OPTIONAL),
            2: ("method", FD.TYPE_STRING, FD.LABEL_OPTIONAL),
            3: ("payload", FD.TYPE_BYTES, FD.LABEL_OPTIONAL),
            4: ("timeout_nano", FD.TYPE_INT64, FD.LABEL_OPTIONAL),
            5: ("metadata", FD.TYPE_MESSAGE, FD.LABEL_REPEATED),
        },
        "Response": {
            1: ("status", FD.TYPE_MESSAGE, FD.LABEL_OPTIONAL),
            2: ("payload", FD.TYPE_BYTES, FD.LABEL_OPTIONAL),
        },
        "StringList": {1: ("list", FD.TYPE_STRING, FD.LABEL_REPEATED)},
        "KeyValue": {
            1: ("key", FD.TYPE_STRING, FD.LABEL_OPTIONAL),
            2: ("value", FD.TYPE_STRING, FD.LABEL_OPTIONAL),
        },
    }
    fdp = descriptor_pb2.FileDescriptorProto()
    ttrpc_pb2.DESCRIPTOR.CopyToProto(fdp)
    assert fdp.package == "ttrpc"
    got = {m.name: {f.number: (f.name, f.type, f.label) for f in m.field} for m in fdp.message_type}
    assert got == expected
    types = {(m.name, f.name): f.type_name for m in fdp.message_type for f in m.field if f.type_name}
    assert types == {("Request", "metadata"): ".ttrpc.KeyValue", ("Response", "status"): ".google.rpc.Status"}


def test_request_bytes_as_go_marshals_them() -> None:
    # Hand-encoded: what gogo/protobuf writes for these field tags.
    req = ttrpc_pb2.Request(service="s", method="m", payload=b"\x01", timeout_nano=5)
    req.metadata.add(key="k", value="v")
    assert req.SerializeToString() == (
        b"\x0a\x01s" b"\x12\x01m" b"\x1a\x01\x01" b"\x20\x05" b"\x2a\x06" b"\x0a\x01k" b"\x12\x01v"
    )


def test_metadata_is_case_insensitive_and_multi_valued() -> None:
    md = Metadata({"Containerd-Namespace-TTRPC": "default", "x": ["1", "2"]})
    assert md.get_first("containerd-namespace-ttrpc") == "default"
    assert md["X"] == ["1", "2"]
    assert md.get_first("missing") is None
    pairs = md.to_pairs()
    assert [(kv.key, kv.value) for kv in pairs] == [("containerd-namespace-ttrpc", "default"), ("x", "1"), ("x", "2")]
    assert dict(Metadata.from_pairs(pairs)) == dict(md)
