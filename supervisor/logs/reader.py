"""Reading a container log: across its rotated files, from the end for a tail, following it.

The shim rotates by renaming (`container.log` → `.1` → `.2` …) while we read, so the set of
files is opened as a *snapshot*: open every name, then check each name still holds the file we
opened (else a rotation ran in between: try again). Open descriptors stay valid whatever is
renamed or unlinked later. Following, a rotation shows as `container.log` naming another file
than ours: we finish ours, find where it went, and go on with the files newer than it.

`--tail N` never scans the log: it reads blocks backwards from the end until it has seen N
lines (a line: any `P` pieces and the `F` record that ends it). Whether the log is complete is
the writer's flock (`writer.lock`): when we can take it, nobody writes; a follow ends after
one more drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import containerlog as cl
from dockyard_common.containerlog import Record
from dockyard_common.flocks import held_exclusively

log = logging.getLogger("dockyard.logs")

BLOCK = 64 * 1024
BATCH = 256 * 1024  # bytes read per step forward
POLL = 0.1  # seconds between looks at a followed log
SNAPSHOT_TRIES = 50


@dataclass(frozen=True)
class ReadOptions:
    follow: bool = False
    tail: int | None = None  # None: all
    since_ns: int = 0  # 0: no bound
    until_ns: int = 0


def _open_snapshot(path: Path) -> list[tuple[int, int]]:
    """(fd, inode) of every file of the log, oldest first; [] when there is no log."""
    for _ in range(SNAPSHOT_TRIES):
        files: list[tuple[int, int]] = []
        n = 0
        while True:
            try:
                fd = os.open(path / cl.rotated(n), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            files.append((fd, os.fstat(fd).st_ino))
            n += 1
        # Mid-rotation the renames leave one gap that moves towards the current file: a name
        # after the first missing one means the chain is being shifted right now.
        consistent = _still_named(path, files) and not (path / cl.rotated(n)).exists() and (
            not (path / cl.rotated(n + 1)).exists())
        if consistent:
            files.reverse()
            return files
        for fd, _ino in files:
            os.close(fd)
        time.sleep(0.001)  # a rotation is a few renames: it is over in an instant
    # Still a gap: not a rotation in flight but one that never finished (its shim was killed
    # between two renames, or an older shim met a full disk). Read the files there are, in
    # the order of their names, rather than refuse the log for good.
    files = _open_gapped(path)
    if not files:
        raise OSError(f"{path}: the log kept rotating while being opened")
    log.warning("%s: the log's files have a gap in their names (a rotation left unfinished); "
                "reading the %d there are", path, len(files))
    return files


def _open_gapped(path: Path) -> list[tuple[int, int]]:
    """(fd, inode) of the log's files whatever gaps their names leave, oldest first."""
    numbers = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path):
            if name == cl.CURRENT:
                numbers.append(0)
            elif name.startswith(cl.CURRENT + ".") and name[len(cl.CURRENT) + 1:].isdigit():
                numbers.append(int(name[len(cl.CURRENT) + 1:]))
    files = []
    for n in sorted(numbers, reverse=True):
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path / cl.rotated(n), os.O_RDONLY | os.O_CLOEXEC)
            files.append((fd, os.fstat(fd).st_ino))
    return files


def _still_named(path: Path, files: list[tuple[int, int]]) -> bool:
    for n, (_fd, ino) in enumerate(files):
        try:
            if os.stat(path / cl.rotated(n)).st_ino != ino:
                return False
        except FileNotFoundError:
            return False
    return True


def writer_active(path: Path) -> bool:
    """Whether the log's writer (a shim) still holds `writer.lock`: the log may grow."""
    return held_exclusively(path / cl.WRITER_LOCK)


def _is_full(record: bytes) -> bool:
    parts = record.split(b" ", 3)
    return len(parts) < 3 or parts[2] != b"P"


class LogReader:
    """Synchronous (run it in a thread): a position in the log and the files it spans."""

    def __init__(self, path: Path, tail: int | None) -> None:
        self.path = path
        self._files = _open_snapshot(path)
        self._idx = 0
        self._pos = 0
        self._buf = b""
        if tail is not None:
            self._idx, self._pos = self._tail_start(tail)

    def close(self) -> None:
        for fd, _ino in self._files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files = []

    def _tail_start(self, lines: int) -> tuple[int, int]:
        """Where the last `lines` lines begin, reading blocks backwards from the end."""
        if not self._files:
            return 0, 0
        if lines <= 0:
            last = len(self._files) - 1
            return last, os.fstat(self._files[last][0]).st_size
        seen = 0
        for idx in range(len(self._files) - 1, -1, -1):
            fd = self._files[idx][0]
            pos = os.fstat(fd).st_size  # bytes [pos, pos + len(buf)) are in buf
            buf = b""
            end = 0  # buf[:end] are whole records not yet looked at (the end is their newline)
            first = True
            while True:
                nl = buf.rfind(b"\n", 0, end - 1) if end > 0 else -1
                if nl < 0 and pos > 0:
                    start = max(0, pos - BLOCK)
                    block = os.pread(fd, pos - start, start)
                    buf = block + buf[:end]
                    end = len(buf)
                    pos = start
                    if first:  # a record still being written at the very end is not a line yet
                        end = buf.rfind(b"\n") + 1
                        first = False
                    continue
                if end <= 0:
                    break  # nothing (more) in this file
                record = buf[nl + 1:end]
                if _is_full(record[:-1]):
                    seen += 1
                    if seen > lines:
                        return idx, pos + end
                end = nl + 1
        return 0, 0

    def read_batch(self) -> list[Record]:
        """The next whole records (at most about BATCH bytes); [] at the end of the newest file."""
        while self._idx < len(self._files):
            fd = self._files[self._idx][0]
            if self._buf:
                # The unfinished record we hold may be gone: its writer cuts back a record it
                # could not finish (a full disk) and appends the next ones from there. Read
                # from where it began then, or we would glue it to the middle of another.
                whole = self._pos - len(self._buf)
                if os.pread(fd, len(self._buf), whole) != self._buf:
                    self._pos, self._buf = whole, b""
            if self._idx == len(self._files) - 1 and os.fstat(fd).st_size < self._pos:
                self._pos, self._buf = 0, b""  # one file only, truncated by its writer
            data = os.pread(fd, BATCH, self._pos)
            if not data:
                if self._idx == len(self._files) - 1:
                    return []
                self._idx, self._pos, self._buf = self._idx + 1, 0, b""  # rotated files end whole
                continue
            self._pos += len(data)
            data = self._buf + data
            cut = data.rfind(b"\n") + 1
            self._buf = data[cut:]
            out = []
            for line in data[:cut].split(b"\n")[:-1]:
                rec = cl.parse_record(line)
                if rec is not None:
                    out.append(rec)
            if out:
                return out
        return []

    def refresh(self) -> bool:
        """At the end of the newest file: True when the log rotated (or appeared), so there is
        more to read."""
        current = self.path / cl.CURRENT
        try:
            ino = os.stat(current).st_ino
        except FileNotFoundError:
            return False
        if self._files and ino == self._files[-1][1]:
            return False
        snapshot = _open_snapshot(self.path)
        mine = self._files[self._idx][1] if self._files else None
        keep = [i for i, (_fd, ino) in enumerate(snapshot) if ino == mine]
        if keep:
            newer = snapshot[keep[0] + 1:]
            old = snapshot[:keep[0] + 1]
        else:
            if mine is not None:
                log.warning("%s: a reader fell behind by more than the log keeps; lines skipped", self.path)
            newer, old = snapshot, []
        for fd, _ino in old:
            os.close(fd)
        if not keep:
            self.close()
            self._files, self._idx, self._pos, self._buf = newer, 0, 0, b""
        else:
            for fd, _ino in self._files[self._idx + 1:]:
                os.close(fd)
            self._files = [*self._files[:self._idx + 1], *newer]
        return True


async def read_log(path: Path, opts: ReadOptions) -> AsyncIterator[list[Record]]:
    """Batches of records in order, filtered by since/until; with follow until the writer is done."""
    reader = await asyncio.to_thread(LogReader, path, opts.tail)
    try:
        while True:
            idle = opts.follow and not await asyncio.to_thread(writer_active, path)
            while True:
                batch = await asyncio.to_thread(reader.read_batch)
                if not batch:
                    if opts.follow and await asyncio.to_thread(reader.refresh):
                        continue
                    break
                out = [r for r in batch if r.time_ns >= opts.since_ns]
                if opts.until_ns:
                    past = [r for r in out if r.time_ns > opts.until_ns]
                    if past:
                        yield [r for r in out if r.time_ns <= opts.until_ns]
                        return
                if out:
                    yield out
            if not opts.follow or idle:
                return
            await asyncio.sleep(POLL)
    finally:
        reader.close()
