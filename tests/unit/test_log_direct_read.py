"""The log's thread reading the process's pipes itself (`LogSink.read_from`): every line once and
in order per stream across rotations, small writes gathered, and a stop (Delete) while a writer
still holds the pipe."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from shim.logfile import LogConfig, LogSink
from supervisor.logs.reader import LogReader, writer_active


def records(path: Path) -> list[tuple[str, bool, bytes]]:
    r = LogReader(path, None)
    out = []
    while batch := r.read_batch():
        out += [(x.stream, x.partial, x.content) for x in batch]
    r.close()
    return out


def pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(r, False)
    return r, w


async def test_two_pipes_read_by_the_thread_keep_every_line_in_order_across_rotations(tmp_path: Path) -> None:
    sink = LogSink(LogConfig(str(tmp_path), 64 * 1024, 1000), streams=2)
    (out_r, out_w), (err_r, err_w) = pipe(), pipe()
    # Many small writes (one line each, as a shell loop does) on both streams at once, and an
    # unfinished last line on stdout that the EOF completes.
    script = ('i=0; while [ $i -lt 3000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done;'
              ' printf "tail"')
    proc = subprocess.Popen(["sh", "-c", script], stdout=out_w, stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    try:
        sink.read_from(out_r, "stdout")
        sink.read_from(err_r, "stderr")
        sink.start()
        assert await asyncio.wait_for(sink.source_ended("stdout"), 60)
        assert await asyncio.wait_for(sink.source_ended("stderr"), 60)
        await asyncio.wait_for(sink.written(), 10)
    finally:
        assert proc.wait(10) == 0
        os.close(out_r)
        os.close(err_r)
    assert not writer_active(tmp_path)
    got = records(tmp_path)
    assert [c for s, _, c in got if s == "stdout"] == [b"out %d" % i for i in range(3000)] + [b"tail"]
    assert [c for s, _, c in got if s == "stderr"] == [b"err %d" % i for i in range(3000)]
    assert not any(p for _, p, _ in got)
    assert len(list(tmp_path.glob("container.log.*"))) > 3


async def test_a_stop_while_the_pipe_is_still_held_writes_what_was_read(tmp_path: Path) -> None:
    sink = LogSink(LogConfig(str(tmp_path), 1 << 20, 2), streams=1)
    r, w = pipe()
    try:
        sink.read_from(r, "stdout")
        sink.start()
        os.write(w, b"whole\nhalf")
        loop = asyncio.get_running_loop()
        # The thread has read both (the pipe is empty) before the stop.
        while await loop.run_in_executor(None, lambda: os.stat(tmp_path / "container.log").st_size) == 0:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(sink.aclose(), 10)  # our w is open: no EOF, yet it ends
        assert not await asyncio.wait_for(sink.source_ended("stdout"), 1)
    finally:
        os.close(w)
        os.close(r)
    assert not writer_active(tmp_path)
    assert [c for _, _, c in records(tmp_path)] == [b"whole", b"half"]


async def test_a_pty_master_read_by_the_thread_ends_at_eio(tmp_path: Path) -> None:
    sink = LogSink(LogConfig(str(tmp_path), 1 << 20, 2), streams=1)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        sink.read_from(master, "stdout")
        sink.start()
        os.write(slave, b"one\ntwo\n")
        os.close(slave)  # the last slave fd gone: reads of the master fail with EIO
        slave = -1
        assert await asyncio.wait_for(sink.source_ended("stdout"), 10)
        await asyncio.wait_for(sink.written(), 10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert [c.rstrip(b"\r") for _, _, c in records(tmp_path)] == [b"one", b"two"]
