"""dockyard_common.aio.BlockingReader: a worker thread reads chunks that arrive on the loop; a
cancel ends a read that waits for a chunk that never comes, and every later read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dockyard_common.aio import BlockingReader, ReaderCancelled


async def test_reads_then_eof() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    reader = BlockingReader(chunks(), asyncio.get_running_loop())
    assert await asyncio.to_thread(reader.read, 1) == b"a"
    assert await asyncio.to_thread(reader.read) == b"b"
    assert await asyncio.to_thread(reader.read, 10) == b"cde"
    assert await asyncio.to_thread(reader.read) == b""


async def test_cancel_ends_a_read_waiting_for_a_quiet_sender() -> None:
    started = asyncio.Event()

    async def quiet() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await asyncio.Event().wait()  # never sends more
        yield b"never"

    reader = BlockingReader(quiet(), asyncio.get_running_loop())
    assert await asyncio.to_thread(reader.read) == b"first"
    waiting = asyncio.ensure_future(asyncio.to_thread(reader.read))
    await started.wait()  # the second read's request for a chunk is in
    reader.cancel()
    with pytest.raises(ReaderCancelled):
        await asyncio.wait_for(waiting, 30)
    with pytest.raises(ReaderCancelled):
        await asyncio.to_thread(reader.read)
