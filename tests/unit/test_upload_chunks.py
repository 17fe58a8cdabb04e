"""dock/upload.chunks: whatever a source comes as, it goes out in CHUNK-sized messages (small
pieces gathered, big ones cut), the last one shorter, the bytes unchanged and in order."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dock.upload import CHUNK, Source, chunks

DATA = os.urandom(3 * CHUNK + 12345)


async def pieces_async() -> AsyncIterator[bytes]:
    for i in range(0, len(DATA), 7000):  # a tar from a pipe: a few KiB at a time
        yield DATA[i:i + 7000]


def pieces_sync() -> Iterator[bytes]:
    yield DATA[:10]
    yield DATA[10:2 * CHUNK + 5]  # bigger than a chunk
    yield b""
    yield DATA[2 * CHUNK + 5:]


@pytest.mark.parametrize("kind", ["bytes", "path", "file", "async", "sync"])
async def test_sources_go_out_in_whole_chunks(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(DATA)
    sources: dict[str, Source] = {"bytes": DATA, "path": path, "file": io.BytesIO(DATA), "async": pieces_async(),
                                  "sync": pieces_sync()}
    source = sources[kind]
    out = [c async for c in chunks(source)]
    assert b"".join(out) == DATA
    assert [len(c) for c in out] == [CHUNK, CHUNK, CHUNK, 12345]


async def test_an_empty_source_sends_nothing() -> None:
    async def empty() -> AsyncIterator[bytes]:
        for piece in (b"", b""):
            yield piece

    assert [c async for c in chunks(empty())] == []
