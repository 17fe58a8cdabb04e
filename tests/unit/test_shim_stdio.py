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
