"""Issue 11 item 12 (many concurrent clients): the caches on the List and header paths must
never answer stale. Cached List reads follow every change to their tables; a remembered HPACK
header block is never read against a changed table; a List answer reused between calls follows
the records it was built from."""

from __future__ import annotations

import asyncio
import random
import struct
from pathlib import Path
from typing import Any

import hpack

from dockyard_common.imagespec import Descriptor
from dockyard_common.types import AnyValue, Container
from supervisor.grpcserver import h2
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.db import Database
from supervisor.metadata.images import Image, ImageStore
from supervisor.services.list_memo import ListMemo

DIGEST = "sha256:" + "a" * 64
MEDIA = "application/vnd.oci.image.index.v1+json"


def _container(cid: str, **labels: str) -> Container:
    return Container(id=cid, runtime_name="io.containerd.runc.v2", spec=AnyValue("t", b"{}"), labels=labels)


async def test_container_list_follows_every_change(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        store = ContainerStore(db)
        assert await store.list("a") == []
        await store.create("a", _container("c1", team="x"))
        assert [c.id for c in await store.list("a")] == ["c1"]
        await store.update("a", _container("c1", team="y"), ["labels"])
        assert (await store.list("a"))[0].labels == {"team": "y"}
        assert [c.id for c in await store.list("a", ["labels.team==y"])] == ["c1"]
        assert await store.list("a", ["labels.team==x"]) == []
        await store.create("b", _container("c2"))
        assert [c.id for c in await store.list("b")] == ["c2"]
        assert [c.id for c in await store.list("a")] == ["c1"]  # namespaces apart
        await store.delete("a", "c1")
        assert await store.list("a") == []
        # a write by hand (as a migration or the collector might make) counts too
        await db.write(lambda conn: conn.execute("DELETE FROM containers WHERE namespace='b'"))
        assert await store.list("b") == []
    finally:
        await db.close()


async def test_image_list_follows_label_only_changes(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        store = ImageStore(db)
        await store.create("a", Image("docker.io/library/x:1", Descriptor(MEDIA, DIGEST, 1), {"k": "v"}))
        assert (await store.list("a"))[0].labels == {"k": "v"}
        # only image_labels changes here
        await db.write(lambda conn: conn.execute("UPDATE image_labels SET value='w' WHERE key='k'"))
        assert (await store.list("a"))[0].labels == {"k": "w"}
        await store.update("a", Image("docker.io/library/x:1", Descriptor(MEDIA, DIGEST, 2)), ["target"])
        assert (await store.list("a"))[0].target.size == 2
        await store.delete("a", "docker.io/library/x:1")
        assert await store.list("a") == []
    finally:
        await db.close()


def test_list_memo_follows_the_records() -> None:
    built: list[int] = []

    def build(found: Any) -> list[str]:
        built.append(len(found))
        return [str(x) for x in found]

    memo: ListMemo[object, list[str]] = ListMemo(build, size=2)
    a, b = object(), object()
    first = memo.get(("ns",), [a, b])
    assert memo.get(("ns",), [a, b]) is first and built == [2]  # the same records: reused
    assert memo.get(("ns",), [b, a]) is not first  # order counts
    assert memo.get(("ns",), [a]) == [str(a)]
    assert memo.get(("ns", "labels.x==y"), [a]) == [str(a)] and built == [2, 2, 1, 1]
    memo.get(("other",), [])
    assert len(memo._last) == 2  # bounded


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False


def _connection() -> tuple[h2.Connection, list[h2.Stream]]:
    streams: list[h2.Stream] = []
    conn = h2.Connection(streams.append, lambda c: None)
    conn.connection_made(_Transport())
    conn.data_received(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
    return conn, streams


def _literal_indexed(name: str, value: str) -> bytes:
    """A literal with incremental indexing, new name: it adds (name, value) to the table."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return bytes((0x40, len(n))) + n + bytes((len(v),)) + v


BASE = bytes((0x83, 0x86)) + b"\x44\x04/s/M"  # POST, http, :path literal without indexing


async def test_a_remembered_block_is_not_read_against_a_changed_table() -> None:
    conn, streams = _connection()
    sid = 1

    def send(block: bytes) -> dict[str, str]:
        nonlocal sid
        conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
        sid += 2
        return dict(streams[-1].headers)

    assert send(BASE + _literal_indexed("x-who", "first"))["x-who"] == "first"
    again = BASE + bytes((0x80 | 62,))  # "the newest table entry"
    assert send(again)["x-who"] == "first"
    assert send(again)["x-who"] == "first"  # remembered
    assert send(BASE + _literal_indexed("x-who", "second"))["x-who"] == "second"
    assert send(again)["x-who"] == "second"  # the same bytes, a changed table
    # a table size update alone (to 0: the table empties) also changes what the bytes mean
    conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, b"\x20" + BASE))
    sid += 2
    count = len(streams)
    conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, again))
    assert len(streams) == count  # index 62 is gone: a compression error, no new stream
    goaway = [f for f in _frames(conn) if f[0] == h2.GOAWAY]
    assert goaway and struct.unpack(">I", goaway[0][3][4:8])[0] == h2.COMPRESSION_ERROR


def _frames(conn: h2.Connection) -> list[tuple[int, int, int, bytes]]:
    buf = conn.transport.out  # type: ignore[union-attr]
    out, pos = [], 0
    while pos + 9 <= len(buf):
        length = int.from_bytes(buf[pos:pos + 3], "big")
        out.append((buf[pos + 3], buf[pos + 4], int.from_bytes(buf[pos + 5:pos + 9], "big"),
                    bytes(buf[pos + 9:pos + 9 + length])))
        pos += 9 + length
    return out


async def test_decoding_matches_a_fresh_decoder_on_random_traffic() -> None:
    """A client's encoder with a small table (evictions) and repeated header sets: every block
    decodes as an uncached decoder reads it."""
    rng = random.Random(12)
    conn, streams = _connection()
    encoder, reference = hpack.Encoder(), hpack.Decoder()
    encoder.header_table_size = 256
    sets = [[(":method", "POST"), (":scheme", "http"), (":path", f"/s/M{i}"), ("x-k", f"v{i % 3}")]
            for i in range(6)]
    sid = 1
    for _ in range(300):
        block = encoder.encode(rng.choice(sets))
        expect = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                  for k, v in reference.decode(block)]
        conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
        sid += 2
        assert streams[-1].headers == expect


async def test_what_a_connection_remembers_of_header_blocks_is_bounded() -> None:
    conn, streams = _connection()
    big = "v" * (h2.DECODED_BLOCK_MAX + 1)
    # a literal without indexing whose value is over the bound: decoded, not remembered
    n, v = b"x-big", big.encode()
    block = BASE + b"\x00" + h2._hpack_int(len(n), 7) + n + h2._hpack_int(len(v), 7) + v
    conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, block))
    assert dict(streams[-1].headers)["x-big"] == big
    assert block not in conn._decoded
    for i in range(3 * h2.DECODED_BLOCKS):  # distinct small blocks: the count stays bounded
        extra = f"x{i}".encode()
        small = BASE + b"\x00" + h2._hpack_int(len(extra), 7) + extra + b"\x01v"
        conn.data_received(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 3 + 2 * i, small))
        assert len(conn._decoded) <= h2.DECODED_BLOCKS
    assert len(streams) == 1 + 3 * h2.DECODED_BLOCKS
