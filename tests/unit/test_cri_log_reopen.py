"""ReopenContainerLog in the shim's log writer: kubelet renames the file, the sink opens the
path again; every line lands in the old file or the new one, none lost, none doubled."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from dockyard_common import containerlog as cl
from dockyard_common.errors import FailedPrecondition
from shim.logfile import LogConfig, LogSink
from supervisor.logs.store import UNROTATED

LINES = 20000


def _records(path: Path) -> list[bytes]:
    out = []
    for line in path.read_bytes().splitlines():
        rec = cl.parse_record(line)
        assert rec is not None and not rec.partial, line
        out.append(rec.content)
    return out


async def _rotate_while_writing(tmp_path: Path, via_queue: bool) -> None:
    config = LogConfig(str(tmp_path), UNROTATED, 1, "0.log")
    r, w = os.pipe()
    sink = LogSink(config, streams=1)
    if not via_queue:
        sink.read_from(r, cl.STDOUT)
    sink.start()
    writer_done = threading.Event()

    def produce() -> None:
        with os.fdopen(w, "wb", buffering=0) as out:
            for i in range(LINES):
                out.write(b"line %d\n" % i)
        writer_done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    reader: asyncio.Task[None] | None = None
    if via_queue:
        async def copy() -> None:
            loop = asyncio.get_running_loop()
            while data := await loop.run_in_executor(None, os.read, r, 4096):
                await sink.put(cl.STDOUT, data)
            await sink.end(cl.STDOUT)
        reader = asyncio.create_task(copy())
    rotations = 0
    current = tmp_path / "0.log"
    while not writer_done.is_set() or rotations == 0:
        if current.exists():
            rotations += 1
            current.rename(tmp_path / f"0.log.{rotations:04d}")
            await sink.reopen()
            assert current.exists()  # a new file at the path, before anything is written to it
        await asyncio.sleep(0.001)
    producer.join()
    if reader is not None:
        await reader
    await sink.written()
    os.close(r)
    files = [*sorted(tmp_path.glob("0.log.*")), current]
    got = [rec for f in files for rec in _records(f)]
    assert got == [b"line %d" % i for i in range(LINES)]
    assert rotations >= 1
    with pytest.raises(FailedPrecondition, match="closed"):  # the output has ended: nothing to reopen
        await sink.reopen()


def test_reopen_loses_no_line_thread_reads(tmp_path: Path) -> None:
    asyncio.run(_rotate_while_writing(tmp_path, via_queue=False))


def test_reopen_loses_no_line_loop_copies(tmp_path: Path) -> None:
    asyncio.run(_rotate_while_writing(tmp_path, via_queue=True))
