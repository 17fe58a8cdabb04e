"""The shim's stdio copying, with real FIFOs and a real process (no container, no root)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument, NotFound
from shim.stdio import ProcessIO, StdioPaths


def fifos(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = (tmp_path / "stdin", tmp_path / "stdout", tmp_path / "stderr")
    for p in paths:
        os.mkfifo(p, 0o600)
    return paths


async def read_all(fd: int, timeout: float = 5) -> bytes:
    """Read a FIFO until EOF (every writer closed)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if not chunk:
            return buf
        buf += chunk
    raise AssertionError(f"no EOF; got {buf!r}")


def spawn(io: ProcessIO, *args: str) -> subprocess.Popen[bytes]:
    fds = io.child_fds()
    proc = subprocess.Popen(list(args), stdin=fds.stdin, stdout=fds.stdout, stderr=fds.stderr)
    io.attach(None)
    return proc


async def test_copies_both_ways_and_closeio_ends_stdin(tmp_path: Path) -> None:
    stdin, stdout, stderr = fifos(tmp_path)
    out = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    err = os.open(stderr, os.O_RDONLY | os.O_NONBLOCK)
    io = ProcessIO.open(StdioPaths(str(stdin), str(stdout), str(stderr)))
    proc = spawn(io, "sh", "-c", "cat; echo bye >&2")
    writer = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(writer, b"one\n")
        os.write(writer, b"two\n")
        # CloseIO alone is no EOF while the client still holds its writer (as containerd) ...
        io.close_stdin()
        await asyncio.sleep(0.2)
        assert proc.poll() is None
        # ... closing the writer is.
        os.close(writer)
        writer = -1
        assert await asyncio.to_thread(proc.wait, 5) == 0
        assert await io.drained(5)
        assert await read_all(out) == b"one\ntwo\n"  # EOF: the shim closed its end once drained
        assert await read_all(err) == b"bye\n"
    finally:
        await io.aclose()
        for fd in (out, err, writer):
            if fd >= 0:
                os.close(fd)


async def test_output_held_open_by_a_child_times_out(tmp_path: Path) -> None:
    _, stdout, _ = fifos(tmp_path)
    out = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    io = ProcessIO.open(StdioPaths(stdout=str(stdout)))
    proc = spawn(io, "sh", "-c", "sleep 30 & echo $!")
    sleeper = 0
    try:
        assert await asyncio.to_thread(proc.wait, 5) == 0
        assert not await io.drained(0.3)  # the background sleep still holds the pipe
        line = b""
        while not line.endswith(b"\n"):
            with contextlib.suppress(BlockingIOError):
                line += os.read(out, 64)
            await asyncio.sleep(0.01)
        sleeper = int(line)
    finally:
        if sleeper:
            os.kill(sleeper, signal.SIGKILL)
        await io.aclose()
        os.close(out)


async def test_files_go_to_the_process_directly(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    io = ProcessIO.open(StdioPaths(stdout=f"file://{log}"))
    assert io.child_fds().stdout is not None
    proc = spawn(io, "echo", "to a file")
    assert await asyncio.to_thread(proc.wait, 5) == 0
    assert await io.drained(1)  # nothing to copy
    await io.aclose()
    assert log.read_text() == "to a file\n"


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="stdio fifo"):
        ProcessIO.open(StdioPaths(stdout=str(tmp_path / "missing")))
    with pytest.raises(InvalidArgument, match="cannot start logging binary"):
        ProcessIO.open(StdioPaths(stdout=f"binary://{tmp_path}/no-such-logger"))
    with pytest.raises(InvalidArgument, match="binary://"):
        ProcessIO.open(StdioPaths(stdin="binary:///usr/bin/logger"))
    with pytest.raises(InvalidArgument, match="unknown STDIO scheme"):
        ProcessIO.open(StdioPaths(stdout="ftp://x"))
    with pytest.raises(InvalidArgument):
        ProcessIO.open(StdioPaths(stdin=f"file://{tmp_path}/in"))


async def test_an_exit_waits_for_a_slow_log_while_it_still_writes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The process printed and exited; the log's disk is slow. Each `timeout` passes with bytes
    still being written: the drain waits on, and the log is whole when it says so."""
    from shim.logfile import Buffer, LogConfig, LogWriter
    from supervisor.logs.store import UNROTATED

    slow = LogWriter.write_buffers

    def write_slowly(self: LogWriter, buffers: list[Buffer]) -> None:
        time.sleep(0.05)
        slow(self, buffers)

    monkeypatch.setattr(LogWriter, "write_buffers", write_slowly)
    monkeypatch.setattr("shim.logfile.READ_SIZE", 4096)  # many writes, each slow
    io = ProcessIO.open(StdioPaths(), log_config=LogConfig(str(tmp_path), UNROTATED, 1, "0.log"))
    proc = spawn(io, "sh", "-c", "i=0; while [ $i -lt 6000 ]; do echo line $i; i=$((i+1)); done")
    try:
        assert await asyncio.to_thread(proc.wait, 20) == 0
        started = time.monotonic()
        assert await io.drained(0.3)  # far longer than 0.3 s in all, but never 0.3 s without a byte
        assert time.monotonic() - started > 0.3
        lines = [ln for ln in (tmp_path / "0.log").read_bytes().splitlines() if b" F line " in ln]
        assert len(lines) == 6000
    finally:
        await io.aclose()


async def test_a_child_that_keeps_writing_is_waited_for_only_up_to_the_limit(tmp_path: Path) -> None:
    _, stdout, _ = fifos(tmp_path)
    out = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    io = ProcessIO.open(StdioPaths(stdout=str(stdout)))
    pidfile = tmp_path / "writer.pid"
    proc = spawn(io, "sh", "-c", f"(while :; do echo more; sleep 0.01; done) & echo $! > {pidfile}")
    drain = asyncio.ensure_future(asyncio.sleep(0))
    try:
        assert await asyncio.to_thread(proc.wait, 5) == 0

        async def empty_the_fifo() -> None:
            while True:
                with contextlib.suppress(BlockingIOError):
                    os.read(out, 65536)
                await asyncio.sleep(0.01)
        drain = asyncio.ensure_future(empty_the_fifo())
        started = time.monotonic()
        assert not await io.drained(0.3, limit=1.0)  # bytes keep coming: only the limit ends it
        assert 0.9 < time.monotonic() - started < 3
    finally:
        drain.cancel()
        with contextlib.suppress(BaseException):
            await drain
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        await io.aclose()
        os.close(out)
