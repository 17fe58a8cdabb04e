"""The container log on a full disk, without a daemon: a write that fails part-way leaves no piece
of a record, a rotation that cannot finish puts its renames back, the sink reports a loss once
(not per write) and when it is over, and the reader reads a set of files a killed rotation left
with a gap. (tests/integration/test_full_disk_more.py does it with real full filesystems.)"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import shim.logfile
from dockyard_common import containerlog as cl
from dockyard_common.errors import InvalidArgument, ResourceExhausted
from shim.logfile import LogConfig, LogSink, LogWriter, _Formatter
from supervisor.logs.reader import LogReader

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def records(n: int, first: int = 0) -> list[shim.logfile.Buffer]:
    return _Formatter().format(cl.timestamp(1), "stdout", b"".join(b"line %d\n" % i for i in range(first, first + n)))


def read_all(path: Path) -> list[bytes]:
    reader = LogReader(path, None)
    try:
        out: list[bytes] = []
        while batch := reader.read_batch():
            out += [r.content for r in batch]
        return out
    finally:
        reader.close()


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name != cl.WRITER_LOCK)


def test_a_write_cut_short_by_a_full_disk_leaves_no_piece_of_a_record(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    w = LogWriter(LogConfig(str(tmp_path), 1 << 20, 2))
    w.write_buffers(records(3))
    before = (tmp_path / cl.CURRENT).read_bytes()

    real = os.write

    def short_then_full(fd: int, bufs: list[shim.logfile.Buffer]) -> int:
        return real(fd, bytes(bufs[0])[:7])  # a piece of the first record, then no room

    def full(fd: int, data: object) -> int:
        raise ENOSPC

    with monkeypatch.context() as m:
        m.setattr(os, "writev", short_then_full)
        m.setattr(os, "write", full)
        with pytest.raises(OSError):
            w.write_buffers(records(5, 3))
    assert (tmp_path / cl.CURRENT).read_bytes() == before and w.size == len(before)
    assert w.kept == 0

    def two_and_a_piece(fd: int, bufs: list[shim.logfile.Buffer]) -> int:
        whole = b"".join(bytes(b) for b in bufs)
        return real(fd, whole[:whole.index(b"line 9") + 6 + 1 + 7])  # lines 8 and 9, a piece of 10

    with monkeypatch.context() as m:
        m.setattr(os, "writev", two_and_a_piece)
        m.setattr(os, "write", full)
        with pytest.raises(OSError):
            w.write_buffers(records(5, 8))
    # what was written whole stays (a reader may have read it), the piece goes
    assert (tmp_path / cl.CURRENT).read_bytes().endswith(b"line 9\n") and w.size == os.fstat(w._fd).st_size
    assert w.kept == w.size - len(before)
    w.write_buffers(records(1, 20))  # room again: the next record follows a whole one
    w.close()
    assert read_all(tmp_path) == [b"line 0", b"line 1", b"line 2", b"line 8", b"line 9", b"line 20"]


def test_the_rotating_write_cut_short_is_cut_back_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = LogWriter(LogConfig(str(tmp_path), 200, 3))
    w.write_buffers(records(2))
    real = os.write
    calls = 0

    def second_fails_part_way(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real(fd, bytes(data)[:5])
        raise ENOSPC

    monkeypatch.setattr(os, "write", second_fails_part_way)
    with pytest.raises(OSError):
        w.write(b"".join(bytes(b) for b in records(20, 2)))
    monkeypatch.undo()
    for f in tmp_path.glob(f"{cl.CURRENT}*"):
        assert f.read_bytes().endswith(b"\n") or not f.read_bytes()
    assert os.fstat(w._fd).st_size == w.size
    w.close()


def test_a_rotation_without_room_for_its_new_file_renames_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    w = LogWriter(LogConfig(str(tmp_path), 300, 3))
    for i in range(40):
        w.write_buffers(records(1, i))
    assert names(tmp_path) == [cl.CURRENT, f"{cl.CURRENT}.1", f"{cl.CURRENT}.2"]
    contents = {n: (tmp_path / n).read_bytes() for n in names(tmp_path)}
    real_open = w._open

    def no_inode(name: str | None = None) -> int:
        if name:  # the new file
            raise ENOSPC
        return real_open()

    monkeypatch.setattr(w, "_open", no_inode)
    with pytest.raises(OSError):
        for i in range(40, 60):
            w.write_buffers(records(1, i))
    # nothing renamed, nothing lost: the current file took what fitted
    assert names(tmp_path) == list(contents)
    assert all((tmp_path / n).read_bytes() == data for n, data in contents.items() if n != cl.CURRENT)
    assert (tmp_path / cl.CURRENT).read_bytes().startswith(contents[cl.CURRENT])
    assert os.path.getsize(tmp_path / cl.CURRENT) <= 300 and not (tmp_path / f".{cl.CURRENT}.new").exists()
    monkeypatch.undo()
    for i in range(60, 70):  # room again: it rotates and goes on
        w.write_buffers(records(1, i))
    w.close()
    got = read_all(tmp_path)
    assert got[-1] == b"line 69" and got == sorted(got, key=lambda r: int(r.split()[1]))
    assert names(tmp_path) == [cl.CURRENT, f"{cl.CURRENT}.1", f"{cl.CURRENT}.2"]


def test_a_rename_refused_half_way_is_put_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = LogWriter(LogConfig(str(tmp_path), 300, 3))
    for i in range(40):
        w.write_buffers(records(1, i))
    newest = (tmp_path / cl.CURRENT).read_bytes()
    older = (tmp_path / f"{cl.CURRENT}.1").read_bytes()
    real = os.rename

    def refuse_the_current(src: str, dst: str) -> None:
        if src.endswith("/" + cl.CURRENT):
            raise ENOSPC
        real(src, dst)

    monkeypatch.setattr(os, "rename", refuse_the_current)
    with pytest.raises(OSError):
        w.write_buffers(records(10, 40))
    monkeypatch.undo()
    # The rotation was dropping the oldest file: that one is gone, the others are where they were.
    assert names(tmp_path) == [cl.CURRENT, f"{cl.CURRENT}.1"]
    assert (tmp_path / cl.CURRENT).read_bytes().startswith(newest)  # and what fitted
    assert (tmp_path / f"{cl.CURRENT}.1").read_bytes() == older
    assert not (tmp_path / f".{cl.CURRENT}.new").exists()
    w.write_buffers(records(10, 50))
    w.close()
    assert read_all(tmp_path)[-1] == b"line 59"


async def test_the_sink_reports_a_loss_once_and_when_it_is_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(shim.logfile, "RESUME_QUIET", 0.05)
    sink = LogSink(LogConfig(str(tmp_path), 1 << 20, 1), streams=1)
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    sink.read_from(r, "stdout")
    failing = True
    real = sink._writer.write_buffers

    def maybe_full(buffers: list[shim.logfile.Buffer]) -> None:
        if failing:
            raise ENOSPC
        real(buffers)

    monkeypatch.setattr(sink._writer, "write_buffers", maybe_full)
    caplog.set_level(logging.INFO, "dockyard.shim.log")
    sink.start()
    try:
        sent = 0
        for i in range(50):  # 50 writes, each failing: one report
            sent += os.write(w, b"lost %d\n" % i)
            await wait_for(progressed(sink, sent))
        failing = False
        os.write(w, b"kept\n")
        await wait_for(lambda: "is written again" in caplog.text)
    finally:
        os.close(w)
        assert await sink.source_ended("stdout")
        await sink.written()
        os.close(r)
    reports = [rec.getMessage() for rec in caplog.records]
    assert len(reports) == 2, reports
    assert "cannot be written: No space left on device" in reports[0]
    lost = sink.progress - len(b"kept\n") + 50 * len(cl.timestamp(0) + b" stdout F ")  # the 50 records
    assert "is written again;" in reports[1] and f"{lost} bytes of log records lost" in reports[1], reports
    assert read_all(tmp_path) == [b"kept"]


def progressed(sink: LogSink, n: int) -> Callable[[], bool]:
    return lambda: sink.progress == n


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    from tests.waiting import wait_until_async

    await wait_until_async(predicate, timeout, interval=0.005)


async def test_a_reopen_that_cannot_make_its_file_keeps_the_old_one_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ReopenContainerLog (kubelet renamed the log) with no inode left for the new file:
    ResourceExhausted, and the writer goes on in the file it has; a FIFO put at the path:
    InvalidArgument, and the writer is still there for the next reopen."""
    sink = LogSink(LogConfig(str(tmp_path), 1 << 20, 1), streams=1)
    sink.start()
    await sink.put("stdout", b"one\n")
    os.rename(tmp_path / cl.CURRENT, tmp_path / "renamed")
    real = os.open

    def no_inode(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if str(path).endswith(cl.CURRENT) and flags & os.O_CREAT:
            raise ENOSPC
        return real(path, flags, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "open", no_inode)
        with pytest.raises(ResourceExhausted, match="No space left on device"):
            await asyncio.wait_for(sink.reopen(), 5)
    await sink.put("stdout", b"two\n")  # still into the renamed file
    os.mkfifo(tmp_path / cl.CURRENT)
    with pytest.raises(InvalidArgument, match="not a regular file"):
        await asyncio.wait_for(sink.reopen(), 5)
    os.unlink(tmp_path / cl.CURRENT)
    await asyncio.wait_for(sink.reopen(), 5)
    await sink.put("stdout", b"three\n")
    await sink.end("stdout")
    renamed = [r.content for r in map(cl.parse_record, (tmp_path / "renamed").read_bytes().splitlines()) if r]
    assert renamed == [b"one", b"two"] and read_all(tmp_path) == [b"three"]


def test_a_reader_holding_a_piece_the_writer_cut_back_reads_on_whole(tmp_path: Path) -> None:
    """A follower read a piece of a record the writer then cut back (a full disk), and the next
    records were appended from there: it reads them whole, neither glued to the piece nor twice."""
    log = tmp_path / cl.CURRENT
    first = b"".join(bytes(b) for b in records(1, 0))
    log.write_bytes(first + b"2026-01-01T00:00:00.000000000Z stdout F a piece of a long record")
    reader = LogReader(tmp_path, None)
    try:
        assert [r.content for r in reader.read_batch()] == [b"line 0"]
        assert reader.read_batch() == []
        os.truncate(log, len(first))  # cut back; then, before the reader looks again, more
        with open(log, "ab") as f:
            f.write(b"".join(bytes(b) for b in records(3, 1)))
        assert [r.content for r in reader.read_batch()] == [b"line 1", b"line 2", b"line 3"]
        whole = log.stat().st_size
        with open(log, "ab") as f:  # a piece again, then cut back with nothing after it
            f.write(b"2026-01-01T00:00:00.000000000Z stdout F another piece")
        assert reader.read_batch() == []
        os.truncate(log, whole)
        assert reader.read_batch() == []
        with open(log, "ab") as f:
            f.write(b"".join(bytes(b) for b in records(1, 4)))
        assert [r.content for r in reader.read_batch()] == [b"line 4"]
    finally:
        reader.close()


def test_a_set_of_files_with_a_gap_is_read_not_refused(tmp_path: Path) -> None:
    """A shim killed between two renames of a rotation left `.1` and `.2` but no current file."""
    for n, lines in ((2, [0, 1]), (1, [2, 3])):
        w = LogWriter(LogConfig(str(tmp_path), 1 << 20, 2))
        w.write_buffers(records(2, lines[0]))
        w.close()
        os.rename(tmp_path / cl.CURRENT, tmp_path / cl.rotated(n))
    assert read_all(tmp_path) == [b"line 0", b"line 1", b"line 2", b"line 3"]
