"""Container log pieces without a daemon: records, the shim's formatter and rotation, the reader's
tail (across files, with partial lines) and following across a rotation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dockyard_common import containerlog as cl
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from shim.logfile import LogConfig, LogSink, LogWriter, _Formatter
from supervisor.config import ConfigError, load
from supervisor.logs.reader import LogReader, ReadOptions, read_log, writer_active


def test_timestamps_round_trip_and_sort() -> None:
    for ns in (0, 1, 1_700_000_000_123_456_789, 1_700_000_001_000_000_000):
        assert cl.parse_timestamp(cl.timestamp(ns)) == ns
    assert cl.parse_timestamp(b"2026-01-02T03:04:05.5+01:00") == cl.parse_timestamp(b"2026-01-02T02:04:05.5Z")
    assert cl.timestamp(5) < cl.timestamp(10**9)


def joined(f: _Formatter, ts: bytes, stream: str, data: bytes) -> bytes:
    return b"".join(f.format(ts, stream, data))


def test_formatter_splits_lines_and_long_pieces() -> None:
    f = _Formatter()
    ts = cl.timestamp(1)
    assert joined(f, ts, "stdout", b"a\nb") == ts + b" stdout F a\n"
    assert joined(f, ts, "stderr", b"x\n") == ts + b" stderr F x\n"  # streams keep their own pieces
    assert joined(f, ts, "stdout", b"c\n") == ts + b" stdout F bc\n"
    assert joined(f, ts, "stdout", b"1\n\n2\n3") == b"".join(ts + b" stdout F " + x + b"\n" for x in (b"1", b"", b"2"))
    assert f.end(ts, "stdout") == ts + b" stdout F 3\n"
    long = b"z" * (cl.MAX_LINE + 10)
    out = joined(f, ts, "stdout", long)
    assert out == ts + b" stdout P " + b"z" * cl.MAX_LINE + b"\n"
    assert f.end(ts, "stdout") == ts + b" stdout F " + b"z" * 10 + b"\n"
    assert f.end(ts, "stdout") == b""


def write_lines(path: Path, n: int, max_size: int, max_file: int) -> None:
    w = LogWriter(LogConfig(str(path), max_size, max_file))
    f = _Formatter()
    for i in range(n):
        w.write_buffers(f.format(cl.timestamp(i), "stdout" if i % 2 else "stderr", b"line %d\n" % i))
    w.close()


def read_all(path: Path, tail: int | None = None) -> list[bytes]:
    r = LogReader(path, tail)
    out = []
    while batch := r.read_batch():
        out += [x.content for x in batch]
    r.close()
    return out


def test_rotation_keeps_max_file_files_of_at_most_max_size(tmp_path: Path) -> None:
    write_lines(tmp_path, 1000, 2048, 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [cl.CURRENT, f"{cl.CURRENT}.1", f"{cl.CURRENT}.2", cl.WRITER_LOCK]
    assert all((tmp_path / n).stat().st_size <= 2048 for n in names)
    got = read_all(tmp_path)
    assert got == [b"line %d" % i for i in range(1000 - len(got), 1000)]
    assert not writer_active(tmp_path)


def test_tail_reads_from_the_end_across_files(tmp_path: Path) -> None:
    write_lines(tmp_path, 500, 1024, 50)
    for n in (0, 1, 7, 30, 499, 500, 10_000):
        want = [b"line %d" % i for i in range(max(0, 500 - n), 500)]
        assert read_all(tmp_path, n) == want, n


def test_tail_counts_a_long_line_once(tmp_path: Path) -> None:
    w = LogWriter(LogConfig(str(tmp_path), 10**6, 2))
    f = _Formatter()
    ts = cl.timestamp(1)
    w.write_buffers(f.format(ts, "stdout", b"first\n" + b"y" * (2 * cl.MAX_LINE + 5) + b"\nlast\n"))
    w.close()
    r = LogReader(tmp_path, 2)
    records = r.read_batch()
    r.close()
    assert [x.partial for x in records] == [True, True, False, False]
    assert b"".join(x.content for x in records[:3]) == b"y" * (2 * cl.MAX_LINE + 5)


def test_one_file_log_truncates_and_no_log_reads_empty(tmp_path: Path) -> None:
    write_lines(tmp_path / "one", 300, 1024, 1)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [cl.CURRENT, cl.WRITER_LOCK]
    got = read_all(tmp_path / "one")
    assert got and got == [b"line %d" % i for i in range(300 - len(got), 300)]
    assert read_all(tmp_path / "missing", 10) == []


async def test_follow_across_rotations_until_the_writer_is_done(tmp_path: Path) -> None:
    sink = LogSink(LogConfig(str(tmp_path), 512, 100), streams=1, bound=4096)
    sink.start()
    assert writer_active(tmp_path)
    got: list[bytes] = []

    async def follow() -> None:
        async for batch in read_log(tmp_path, ReadOptions(follow=True)):
            got.extend(r.content for r in batch)

    reader = asyncio.ensure_future(follow())
    for i in range(400):
        await sink.put("stdout", b"line %d\n" % i)
        if i % 50 == 0:
            await asyncio.sleep(0.02)
    await sink.end("stdout")
    await asyncio.wait_for(reader, 10)
    assert got == [b"line %d" % i for i in range(400)]
    assert len(list(tmp_path.glob(f"{cl.CURRENT}.*"))) > 5


async def test_a_full_buffer_makes_the_writer_wait_not_grow(tmp_path: Path) -> None:
    sink = LogSink(LogConfig(str(tmp_path), 10**9, 1), streams=1, bound=64 * 1024)
    sink.start()
    chunk = b"x" * 1023 + b"\n"
    for _ in range(2000):  # 2 MiB through a 64 KiB buffer
        await sink.put("stdout", chunk)
        assert sink._queued <= 64 * 1024 + len(chunk)
    await sink.end("stdout")
    assert len(read_all(tmp_path)) == 2000


def test_config_defaults_and_checks(tmp_path: Path) -> None:
    cfg = load(None, {"root": None})
    assert (cfg.container_log_max_size, cfg.container_log_max_file) == ("10m", 3)
    good = tmp_path / "good.toml"
    good.write_text('[container_log]\nmax_size = "1m"\nmax_file = 5\n')
    cfg = load(good, {})
    assert (cl.parse_size(cfg.container_log_max_size), cfg.container_log_max_file) == (1 << 20, 5)
    for body in ('max_size = "lots"', "max_file = 0"):
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[container_log]\n{body}\n")
        with pytest.raises(ConfigError, match="container_log"):
            load(bad, {})


def test_log_opts_become_labels_and_bad_ones_are_refused() -> None:
    assert cl.labels_from_opts(["max-size=10m", "max-file=2"]) == {
        cl.LABEL_DRIVER: cl.DRIVER, cl.LABEL_MAX_SIZE: "10m", cl.LABEL_MAX_FILE: "2"}
    for bad in ("max-size=0", "max-file=x", "mode=non-blocking", "max-size"):
        with pytest.raises(InvalidArgument):
            cl.labels_from_opts([bad])


async def test_a_sink_never_started_releases_the_log_and_a_second_writer_is_refused(tmp_path: Path) -> None:
    import shim.logfile

    sink = LogSink(LogConfig(str(tmp_path), 1024, 2), streams=2)
    assert writer_active(tmp_path)
    old, shim.logfile.LOCK_WAIT = shim.logfile.LOCK_WAIT, 0.05
    try:
        with pytest.raises(FailedPrecondition, match="another process"):
            LogSink(LogConfig(str(tmp_path), 1024, 2), streams=2)
    finally:
        shim.logfile.LOCK_WAIT = old
    sink.close()  # Create failed before the init existed
    assert not writer_active(tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_log_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """kubelet's log_path is the caller's: a FIFO there blocked the shim's open (and with it the
    pod's shim), a symlink had the log written where it points."""
    target = tmp_path / "elsewhere.log"
    path = tmp_path / "c.log"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        LogWriter(LogConfig(path=str(tmp_path), max_size=1 << 20, max_file=1, file="c.log"))
    assert not target.exists()
