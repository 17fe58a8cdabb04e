"""The container log the shim writes (format and layout: dockyard_common/containerlog.py).

One thread per log formats the process's output into CRI records and writes them, rotating by
size. A stream no client reads, it reads from the process's pipe itself (`read_from`): one read,
one clock reading, one format and one writev per chunk, no event-loop wake-up; while it writes,
the pipe (1 MiB) is the buffer, and when that is full the process blocks in write(2), as Docker's
default ("blocking") mode. A stream the loop also copies to a client comes from the loop's copier
through a bounded queue (`BUFFER` bytes; when full the copier waits, with the same effect).
Memory stays bounded whatever the process writes. The thread exists because a file write may
sleep on the disk, and the event loop must keep serving.

The log outlives the daemon: the shim writes it, so a daemon restart loses nothing. The writer
holds an flock on `writer.lock` until the last stream ended and everything is on disk; readers
following the log take that as the end.

A full disk (or a filesystem out of inodes) never stops or blocks the process, as with Docker's
and containerd's CRI loggers: output that cannot be written is dropped, the pipes are read on,
and every write after is tried again, so the log goes on once there is room. Nothing half
written stays: a write that fails part-way is cut back to the last whole record (the next one
must not be glued to a piece of it), and a rotation that cannot make its new file puts the
renamed files back (the set is never left with a gap). The loss is reported in the shim's log,
once when it begins and once, with the bytes lost, when the log is written again (or closed),
never per write: a process writing fast onto a full disk must not flood the daemon's log.
Nothing is written into the container log itself: its records are the process's output only
(kubelet, `crictl logs` and log shippers would show a marker as a line the program printed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard_common import containerlog as cl
from dockyard_common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, error_text

log = logging.getLogger("dockyard.shim.log")

BUFFER = 1 << 20  # bytes read from the process and not yet written
LOCK_WAIT = 2.0
IOV_MAX = 1024
READ_SIZE = 1 << 18  # a read of a pipe the thread drains itself (the pipe holds 1 MiB, see stdio)
# A read shorter than SMALL_READ means the thread keeps pace with the process: it then lets the
# pipe fill for GATHER seconds, so a process writing 4 KiB at a time costs one wake-up, one clock
# read, one format and one writev per GATHER of output instead of per write(2). The pipe holds
# far more than a process writes in that time, so the process is not held up; a line waits in
# the pipe at most GATHER longer.
SMALL_READ = 64 * 1024
GATHER = 0.002
REPORT_EVERY = 60.0  # seconds between reports that the log still cannot be written
RESUME_QUIET = 1.0  # seconds of writes going through after output was lost: the loss is over
Buffer = bytes | memoryview


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class LogConfig:
    path: str
    max_size: int
    max_file: int
    file: str = cl.CURRENT  # the log's name in `path` (the CRI's names its own)

    @classmethod
    def from_bundle(cls, bundle: str) -> LogConfig | None:
        try:
            with open(os.path.join(bundle, cl.CONFIG_FILE), "rb") as f:
                raw = json.loads(f.read())
            config = cls(str(raw["path"]), int(raw["max_size"]), int(raw["max_file"]),
                         str(raw.get("file") or cl.CURRENT))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"bundle {bundle}: bad {cl.CONFIG_FILE}: {error_text(exc)}") from None
        if not os.path.isabs(config.path) or config.max_size < 1 or config.max_file < 1 \
                or "/" in config.file or config.file in (".", ".."):
            raise InvalidArgument(f"bundle {bundle}: bad {cl.CONFIG_FILE}: {raw!r}")
        return config


class LogWriter:
    """The files: append, rotate by size. Used by the sink's thread only (after __init__)."""

    def __init__(self, config: LogConfig) -> None:
        self.config = config
        os.makedirs(config.path, mode=0o700, exist_ok=True)
        self._lock = os.open(os.path.join(config.path, cl.lock_name(config.file)),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._take_lock()
            self._fd = self._open()
        except BaseException:
            os.close(self._lock)
            raise
        self.size = os.fstat(self._fd).st_size
        self.kept = 0  # bytes of the last write call in the files (all, unless it failed)

    def _take_lock(self) -> None:
        # Readers hold it shared for an instant; a writer holding it is another live task of
        # this container, which must not be (refused rather than waited for: Create would hang).
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FailedPrecondition(f"another process writes the log in {self.config.path}") from None
                time.sleep(0.005)

    def _open(self, name: str | None = None) -> int:
        # Only a regular file is a log: a FIFO at the path (kubelet's log_path is the caller's)
        # would block this open, and with it the pod's shim; a symlink would have us write where
        # it points. O_NONBLOCK only for the open; writes to a regular file never block on it.
        path = os.path.join(self.config.path, name or self.config.file)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                         0o640)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # a symlink; a FIFO nobody reads; a dir
                raise InvalidArgument(f"log {path}: not a regular file") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidArgument(f"log {path}: not a regular file")
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def reopen(self) -> None:
        """Open the log's path again (a new file when it was renamed, as kubelet rotates) and
        write there from now on; the new one is opened first, so a failure keeps the old."""
        fd = self._open()
        os.close(self._fd)
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def write_buffers(self, buffers: list[Buffer]) -> None:
        """Append whole records given as buffers: one writev(2) while they fit the file, else
        joined and cut at record ends by `write`. On an OSError (a full disk) the records
        written whole stay (`kept` bytes of the call) and the piece of the next is cut off, so
        the file still ends with a whole record (readers may have read those already)."""
        self.kept = 0
        total = sum(len(b) for b in buffers)
        if not total:
            return
        if self.size + total > self.config.max_size:
            self.write(b"".join(buffers))
            return
        start = self.size
        try:
            for i in range(0, len(buffers), IOV_MAX):
                part = buffers[i:i + IOV_MAX]
                n = os.writev(self._fd, part)
                want = sum(len(b) for b in part)
                self.size += n
                if n < want:  # a short write (a full disk, a signal): finish the rest plainly
                    self._append_rest(b"".join(part)[n:])
        except OSError:
            self._cut_back(start, b"".join(buffers)[:self.size - start])
            raise
        self.kept = total

    def _append_rest(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.size += n

    def _cut_back(self, start: int, written: bytes) -> None:
        """After an append from `start` failed having `written` these bytes: cut the file after
        the last whole record among them (O_APPEND: the next write goes to the new end), so no
        piece of a record stays to be glued to the next. Shrinking needs no space."""
        keep = written.rfind(b"\n") + 1
        self.kept += keep
        if start + keep == self.size:
            return
        try:
            os.ftruncate(self._fd, start + keep)
        except OSError as exc:
            log.error("the container log %s: cannot cut a half-written record: %s",
                      os.path.join(self.config.path, self.config.file), exc)
            return
        self.size = start + keep

    def write(self, data: bytes) -> None:
        """Append whole records; a file is rotated before it would pass max_size (a single
        record longer than that gets a file of its own). On an OSError, as `write_buffers`."""
        self.kept = 0
        while data:
            room = self.config.max_size - self.size
            if len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1
            if cut == 0:
                if self.size:
                    self._rotate()
                    continue
                cut = data.find(b"\n", room) + 1 or len(data)
            self._append(data[:cut])
            data = data[cut:]
            if data:
                self._rotate()

    def _append(self, data: bytes) -> None:
        """Append whole records; on an OSError those written whole stay (`_cut_back`)."""
        start = self.size
        try:
            self._append_rest(data)
        except OSError:
            self._cut_back(start, data[:self.size - start])
            raise
        self.kept += len(data)

    def _rotate(self) -> None:
        """Start a new file, the current one becoming `.1`. The new file is made first, under a
        hidden name (`_staged`): no inode for it (a full filesystem) and nothing is renamed. A
        rename that fails puts back what was renamed. Either way it raises, the current file
        stays the log's (full: what does not fit is dropped) and the next write tries again."""
        if self.config.max_file <= 1:
            os.ftruncate(self._fd, 0)  # only one file: start it again (readers see it shrink)
            self.size = 0
            return
        name = functools.partial(os.path.join, self.config.path)
        staged = self._staged()
        fd = self._open(staged)
        done: list[int] = []
        try:
            os.ftruncate(fd, 0)  # one a crash left half-way
            # Oldest first, so every name always holds a whole file; the first rename drops the oldest.
            for n in range(self.config.max_file - 1, 0, -1):
                try:
                    os.rename(name(cl.rotated(n - 1, self.config.file)), name(cl.rotated(n, self.config.file)))
                except FileNotFoundError:
                    continue
                done.append(n)
            os.rename(name(staged), name(self.config.file))
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name(staged))
            # Back the other way, newest first: each name it goes back to was just vacated.
            for n in reversed(done):
                try:
                    os.rename(name(cl.rotated(n, self.config.file)), name(cl.rotated(n - 1, self.config.file)))
                except OSError as exc:
                    log.error("the container log %s: putting back %s after a failed rotation: %s",
                              name(self.config.file), cl.rotated(n, self.config.file), exc)
            raise
        os.close(self._fd)
        self._fd = fd
        self.size = 0

    def _staged(self) -> str:
        """The new file's name until the rotation renames it into place: hidden, so no reader
        takes it for one of the log's files."""
        return f".{self.config.file}.new"

    def close(self) -> None:
        try:
            os.close(self._fd)
        finally:
            os.close(self._lock)  # releases the flock: the log is complete


class _Formatter:
    """Bytes of a stream → CRI records; an unfinished line waits for its end (up to MAX_LINE)."""

    def __init__(self) -> None:
        self._pending: dict[str, bytes] = {}

    def format(self, ts: bytes, stream: str, data: bytes) -> list[Buffer]:
        """The records for `data`, as buffers to write in order (no copy joins them)."""
        data = self._pending.pop(stream, b"") + data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        out: list[Buffer] = []
        if cut:
            if self._may_be_long(data, cut):
                out.append(b"".join(self._records(ts, stream, line) for line in data[:cut - 1].split(b"\n")))
            else:
                # The common case: one C-speed pass puts a prefix after every newline; the
                # prefix after the last one (and the unfinished rest) are cut off by a view.
                prefix = b"%s %s F " % (ts, stream.encode())
                body = data.replace(b"\n", b"\n" + prefix)
                out += [prefix, memoryview(body)[:len(body) - len(prefix) - len(rest)]]
        while len(rest) >= cl.MAX_LINE:
            out.append(b"%s %s P %s\n" % (ts, stream.encode(), rest[:cl.MAX_LINE]))
            rest = rest[cl.MAX_LINE:]
        if rest:
            self._pending[stream] = rest
        return out

    @staticmethod
    def _may_be_long(data: bytes, end: int) -> bool:
        """Whether data[:end] may hold a line longer than MAX_LINE: a newline-free run that long
        covers a whole aligned window of half that size, so only windows are looked at."""
        half = cl.MAX_LINE // 2
        return end > cl.MAX_LINE and any(data.find(b"\n", k, k + half) < 0 for k in range(0, end - half, half))

    @staticmethod
    def _records(ts: bytes, stream: str, line: bytes) -> bytes:
        """One whole line: P records of MAX_LINE bytes while it is longer, then its F record."""
        tag = b"%s %s " % (ts, stream.encode())
        pieces = [line[i:i + cl.MAX_LINE] for i in range(0, len(line), cl.MAX_LINE)] or [b""]
        return b"".join(tag + b"P " + piece + b"\n" for piece in pieces[:-1]) + tag + b"F " + pieces[-1] + b"\n"

    def end(self, ts: bytes, stream: str) -> bytes:
        rest = self._pending.pop(stream, b"")
        return b"%s %s F %s\n" % (ts, stream.encode(), rest) if rest else b""


class LogSink:
    """The writer thread and what feeds it. A stream nobody else reads (no client FIFO to tee
    to) is handed over whole with `read_from` before `start`: the thread polls and reads that
    pipe itself, so a chunk costs no loop wake-up and no hand-off. A stream the loop also copies
    to a client comes through `await put(stream, data)` … `await end(stream)`."""

    def __init__(self, config: LogConfig, streams: int, bound: int = BUFFER) -> None:
        self._writer = LogWriter(config)
        self._bound = bound
        self._open_streams = streams
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[int, str, bytes | None]] = collections.deque()
        self._queued = 0
        self._waiting = False  # a put waits for room
        self._sleeping = False  # the thread waits in poll for the wake pipe or a source
        self._stop = False
        self._sources: dict[int, str] = {}  # fd → stream, read by the thread
        self._live: dict[int, str] = {}  # the thread's: sources not at EOF yet
        self._ended: set[str] = set()  # sources whose EOF the thread wrote
        self._source_done: dict[str, asyncio.Event] = {}
        self._reopens: list[asyncio.Future[None]] = []  # reopen calls the thread has to answer
        # Bytes the thread has written so far (it alone adds; the loop only reads it): how an
        # exit that waits for the output tells a slow disk, still going, from a stuck pipe.
        self.progress = 0
        # Bytes of log records dropped since the log last could be written (None: nothing
        # lost); the thread's.
        self._lost: int | None = None
        self._lost_since = 0.0  # when that began (epoch seconds)
        self._reported = 0.0  # when it was last reported (monotonic)
        self._failing = False  # the last write failed
        self._last_failure = 0.0  # monotonic
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._done = asyncio.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        # Set (by the loop) while clients are attached: each chunk the thread reads itself is also
        # posted to it on the loop (shim.attach). Read without the lock: a reference swap.
        self.tap: Callable[[str, bytes], None] | None = None

    def read_from(self, fd: int, stream: str) -> None:
        """Before `start`: the thread reads `fd` (the caller's; closed by it after `drained`)
        until EOF, which ends `stream`. Only the thread reads it then: the pipe is the bound."""
        self._sources[fd] = stream
        self._source_done[stream] = asyncio.Event()

    def start(self) -> None:
        """Start writing. Called once the init exists: forking it with no thread of ours alive
        leaves its Python set-up code nothing it could deadlock on."""
        self._thread.start()

    async def source_ended(self, stream: str) -> bool:
        """Until the thread stops reading `stream` (given to `read_from`): True at its EOF,
        False when the writer failed or was stopped (the caller then drains the pipe itself)."""
        await self._source_done[stream].wait()
        return stream in self._ended

    async def written(self) -> None:
        """Until the last stream ended and everything is written (or the writer stopped)."""
        await self._done.wait()

    def _wake(self) -> None:
        # Under self._lock. A byte only when the thread sleeps: no syscall per put otherwise.
        if self._sleeping and self._wake_w >= 0:  # (closed: the thread has finished)
            self._sleeping = False
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    async def put(self, stream: str, data: bytes) -> None:
        while True:
            with self._lock:
                if self._done.is_set():
                    return  # the writer failed (logged): keep draining the process
                if self._queued < self._bound or not self._queue:
                    self._queue.append((time.time_ns(), stream, data))
                    self._queued += len(data)
                    self._wake()
                    return
                self._waiting = True
                self._room.clear()
            await self._room.wait()

    async def end(self, stream: str) -> None:
        """The stream reached EOF; after the last one, wait until all is written."""
        with self._lock:
            self._queue.append((time.time_ns(), stream, None))
            self._wake()
        await self._done.wait()

    async def reopen(self) -> None:
        """Reopen the log file at its path (ReopenContainerLog). The thread does it between two
        writes: what it read before is in the old file, what comes after in the new one."""
        if self._thread.ident is None:  # not started: nothing writes, do it here
            self._writer.reopen()
            return
        done: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            if self._done.is_set() or self._stop:
                raise FailedPrecondition("the container log is closed: its output has ended")
            self._reopens.append(done)
            self._wake()
        await done

    async def aclose(self) -> None:
        """Stop (Delete): write what is queued or read, close the files."""
        if self._thread.ident is None:  # never started (the init never existed)
            self.close()
            return
        self._request_stop()
        await self._done.wait()

    def _request_stop(self) -> None:
        with self._lock:
            self._stop = True
            self._sleeping = True  # wake it even if it is busy: it sees _stop at its next poll
            self._wake()

    def close(self) -> None:
        """As aclose, for set-up paths that failed before anything was copied."""
        if not self._thread.is_alive() and not self._done.is_set():
            if self._thread.ident is None:  # never started
                self._writer.close()
                self._close_wake()
                self._done.set()
            return
        self._request_stop()
        self._thread.join()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _run(self) -> None:
        fmt = _Formatter()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        self._live = dict(self._sources)
        for fd in self._live:
            poller.register(fd, select.POLLIN)
        gather = False
        try:
            while True:
                with self._lock:
                    batch = list(self._queue)
                    self._queue.clear()
                    reopens, self._reopens = self._reopens, []
                    stop = self._stop
                    if not batch and not reopens and not stop and self._open_streams > 0:
                        self._sleeping = True
                if stop:
                    self._write(fmt, batch + self._stop_sources(), wrote=sum(len(d) for _, _, d in batch if d),
                                eof=False)
                    self._answer(reopens, FailedPrecondition("the container log is closed: the task is deleted"))
                    break
                if batch:
                    self._write(fmt, batch, wrote=sum(len(d) for _, _, d in batch if d))
                if reopens:
                    self._reopen(reopens)
                if batch or reopens:
                    continue  # more may have come meanwhile: look again before sleeping
                with self._lock:
                    if self._open_streams <= 0:
                        break
                if gather:
                    time.sleep(GATHER)
                    gather = False
                quiet = self._resumed()  # output was lost: wake up to say when that is over
                events = poller.poll(None if quiet is None else quiet * 1000 + 1)
                with self._lock:
                    self._sleeping = False
                for fd, _ in events:
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    data = self._read(fd)
                    if data is None:
                        continue
                    gather = gather or 0 < len(data) < SMALL_READ
                    tap = self.tap
                    if tap is not None and data:
                        self._loop.call_soon_threadsafe(tap, self._sources[fd], data)
                    if not data:
                        poller.unregister(fd)
                        del self._live[fd]
                    self._write(fmt, [(time.time_ns(), self._sources[fd], data or None)], wrote=0)
        except Exception:
            log.exception("the container log writer failed")
        finally:
            if self._lost is not None and self._failing:
                log.error("the container log %s ends incomplete: %d bytes of log records lost since %s",
                          self._where(), self._lost, _utc(self._lost_since))
            elif self._lost is not None:
                self._last_failure = -RESUME_QUIET  # the end: no more writes to wait for
                self._resumed()
            with contextlib.suppress(OSError):
                self._writer.close()
            with self._lock:
                self._close_wake()
                reopens, self._reopens = self._reopens, []
            self._answer(reopens, FailedPrecondition("the container log is closed: its output has ended"))
            for event in [*self._source_done.values(), self._done, self._room]:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(event.set)

    # -- output that could not be written (a full disk): reported, never per write ----------------

    def _where(self) -> str:
        return os.path.join(self._writer.config.path, self._writer.config.file)

    def _dropped(self, size: int, exc: Exception) -> None:
        """A write failed: its output is lost. Reported when the loss begins, then every
        REPORT_EVERY seconds while it lasts."""
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        now = time.monotonic()
        self._failing, self._last_failure = True, now
        if self._lost is None:
            self._lost, self._lost_since, self._reported = size, time.time(), now
            log.error("the container log %s cannot be written: %s; the output is dropped until it can",
                      self._where(), why)
            return
        self._lost += size
        if now - self._reported >= REPORT_EVERY:
            self._reported = now
            log.error("the container log %s still cannot be written: %s; %d bytes of log records lost since %s",
                      self._where(), why, self._lost, _utc(self._lost_since))

    def _resumed(self) -> float | None:
        """With output lost: once writes have gone through for RESUME_QUIET seconds after the
        last failure, report the loss as over. The seconds left until then (None: nothing to
        wait for). Not at the first write that goes through: on a filesystem at its last blocks
        writes fail and succeed in turn, and that is one loss, not many."""
        if self._lost is None or self._failing:
            return None
        left = self._last_failure + RESUME_QUIET - time.monotonic()
        if left > 0:
            return left
        log.warning("the container log %s is written again; %d bytes of log records lost since %s",
                    self._where(), self._lost, _utc(self._lost_since))
        self._lost = None
        return None

    def _reopen(self, calls: list[asyncio.Future[None]]) -> None:
        try:
            self._writer.reopen()
        except InvalidArgument as exc:  # a non-file at the path: the caller's to hear, not the thread's end
            log.error("reopening the container log failed: %s", exc)
            self._answer(calls, exc)
            return
        except OSError as exc:
            log.error("reopening the container log failed: %s", exc)
            what = f"reopening the container log {self._where()}: {exc.strerror or exc}"
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)  # no inode for the new file
            self._answer(calls, ResourceExhausted(what) if full else FailedPrecondition(what))
            return
        self._answer(calls, None)

    def _answer(self, calls: list[asyncio.Future[None]], error: Exception | None) -> None:
        """Resolve reopen calls (from the thread) on the loop."""
        def resolve() -> None:
            for call in calls:
                if call.done():  # the caller went away
                    continue
                if error is None:
                    call.set_result(None)
                else:
                    call.set_exception(error)

        if calls:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(resolve)

    @staticmethod
    def _read(fd: int) -> bytes | None:
        """One chunk of a source (all its lines get one time); b"" at EOF, None if nothing."""
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):  # EIO: a pty master whose slave closed
                return b""
            raise

    def _stop_sources(self) -> list[tuple[int, str, bytes | None]]:
        # Delete: the process may live on in a forked child; what is still in the pipes is not
        # waited for, but an unfinished line already read is written.
        return [(time.time_ns(), stream, None) for stream in self._live.values()]

    def _write(self, fmt: _Formatter, batch: list[tuple[int, str, bytes | None]], wrote: int,
               eof: bool = True) -> None:
        """Format and write a batch; `wrote`: how many of its bytes came through the queue.
        A None ends its stream (`eof`: the source's true EOF, not a stop)."""
        out: list[Buffer] = []
        size = 0
        for ns, stream, data in batch:
            ts = cl.timestamp(ns)
            if data is None:
                out.append(fmt.end(ts, stream))
                with self._lock:
                    self._open_streams -= 1
                done = self._source_done.get(stream)
                if done is not None:
                    if eof:
                        self._ended.add(stream)
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(done.set)
            else:
                out += fmt.format(ts, stream, data)
                size += len(data)
        try:
            self._writer.write_buffers(out)
        except (OSError, InvalidArgument) as exc:  # InvalidArgument: the rotation met a non-file
            self._dropped(sum(len(b) for b in out) - self._writer.kept, exc)
        else:
            if self._lost is not None and any(len(b) for b in out):
                self._failing = False
                self._resumed()
        self.progress += size
        if wrote:
            with self._lock:
                self._queued -= wrote
                if self._waiting:
                    self._waiting = False
                    self._loop.call_soon_threadsafe(self._room.set)
