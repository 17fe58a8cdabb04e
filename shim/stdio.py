"""A container process's stdio: the client's FIFOs on one side, the process's pipes or pty on the other.

Paths come from CreateTaskRequest/ExecProcessRequest. A bare path (or `fifo://`) is a FIFO the
client made; `file://` is a log file (created with its directory, appended: plain output, as
containerd's shim writes it); `binary:///path?arg=value` starts a logging binary with containerd's
conventions (`_start_binary`). An output FIFO is opened
O_RDWR|O_NONBLOCK: the open never waits for a reader, and a reader that goes away never makes
our writes fail with EPIPE. The stdin FIFO is opened twice, as containerd does: a non-blocking
reader we copy from, and a writer we keep open so the client closing (or reopening) its end is
no EOF. CloseIO closes our writer; the process then reads EOF once the client's writer is closed
too and everything it wrote was delivered (ctr does both at its stdin's EOF, ctr-calls.md §6.9).
An empty path is /dev/null. What a path names is judged on the open file, not on the name
(`shim.stdiocheck`): the path is opened O_PATH|O_NOFOLLOW, that fd is fstat'ed, and every fd we
use is opened from it through /proc/self/fd, so a path swapped after a check gains nothing.

Without a terminal the process gets pipes, and the event loop copies FIFO → stdin pipe and
stdout/stderr pipes → FIFOs; files are handed to the process as they are. With a terminal the
process gets the pty (made in the container), and the loop copies between its master and the
FIFOs; ResizePty sets the master's window size.

With a container log (`LogConfig`, the init only) the process always gets pipes for stdout and
stderr (or the pty). An output with a client FIFO is copied by the loop, which also hands what it
reads to the log's sink (`logfile`); one without is read by the log's thread itself.

Lifecycle::

    io = ProcessIO.open(StdioPaths(stdin, stdout, stderr, terminal))   # NotFound: missing FIFO
    proc = create_container(..., io.child_fds())
    io.attach(proc.console)         # close the child's ends here, start copying
    ...
    io.close_stdin()                # CloseIO: EOF for the process once the client's writer closes too
    await io.drained(timeout)       # after the exit: output copied, FIFOs closed (EOF for the client)
    await io.aclose()               # Delete: stop everything, close every fd
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, from_os_error
from dockyard_common.fdwait import readable
from shim.init import StdioFds
from shim.logfile import LogConfig, LogSink
from shim.stdiocheck import file_uri_path, judge, open_path

log = logging.getLogger("dockyard.shim.stdio")

CHUNK = 32 * 1024
LOG_CHUNK = 256 * 1024  # reads of a logged stream
LOG_PIPE_SIZE = 1 << 20  # the kernel's default pipe-max-size
BINARY_READY_TIMEOUT = 10.0  # containerd's wait for a logging binary to signal it is ready
DRAIN_LIMIT = 30.0  # the longest an exit waits for output that is still moving
OPEN_ATTEMPTS = 8  # a file:// log that appears and vanishes under us this often is refused


@dataclass(frozen=True)
class StdioPaths:
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class _Endpoint:
    """One opened client path: a FIFO we copy through, or a file the process uses directly."""

    def __init__(self, fd: int, fifo: bool, keeper: int | None = None) -> None:
        self.fd = fd
        self.fifo = fifo
        self.keeper = keeper  # stdin: our own writer, closed by CloseIO


def _reopen(probe: int, flags: int) -> int:
    """Open the very file the O_PATH fd `probe` holds (its /proc/self/fd link names the inode,
    not a path that could have been swapped), non-blocking: a FIFO without a writer, a serial
    line without carrier never hold the open."""
    return os.open(f"/proc/self/fd/{probe}", flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)


def _handed(fd: int) -> int:
    """A file the process uses itself gets blocking I/O, as it would have opened it."""
    try:
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_log_file(file: str, name: str) -> int:
    """A file:// log: the regular file at `file`, made (0600) when missing, opened to append.
    What is at the path is judged on the open file (`stdiocheck.judge`): a symlink, a FIFO (whose
    open would wait for a reader), a device or a /proc file is refused, whenever it got there."""
    try:
        os.makedirs(os.path.dirname(file), mode=0o755, exist_ok=True)
    except OSError as e:
        raise from_os_error(f"{name} {file}: its directory", e) from None
    for _ in range(OPEN_ATTEMPTS):
        try:
            probe = open_path(file, name)
        except NotFound:
            try:  # O_EXCL: never follows, never opens what another made meanwhile (judged next turn)
                fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY
                             | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            except OSError as e:
                raise from_os_error(f"{name} {file}", e) from None
            try:
                judge(fd, name, file, regular=True)
            except BaseException:
                os.close(fd)
                raise
            return _handed(fd)
        try:
            judge(probe, name, file, regular=True)
            try:
                return _handed(_reopen(probe, os.O_WRONLY | os.O_APPEND))
            except OSError as e:
                raise from_os_error(f"{name} {file}", e) from None
        finally:
            os.close(probe)
    raise Unavailable(f"{name} {file}: kept being made and removed while it was opened")


def _open(path: str, output: bool, name: str) -> _Endpoint | None:
    if not path:
        return None
    scheme, sep, rest = path.partition("://")
    if not sep:
        scheme, rest = "fifo", path
    if scheme == "file":
        if not output:
            raise InvalidArgument(f"stdin cannot be a file:// URI: {path}")
        return _Endpoint(_open_log_file(file_uri_path(path, name), name), fifo=False)
    if scheme == "binary":
        raise InvalidArgument(f"binary:// stdio must be the same URI for stdout and stderr, not stdin: {path}")
    if scheme != "fifo":
        raise InvalidArgument(f"unknown STDIO scheme {scheme}")
    # The path itself, judged on the open file; every fd we use is opened from that one.
    probe = open_path(rest, name)
    try:
        fifo = stat.S_ISFIFO(judge(probe, name, rest).st_mode)
        try:
            if fifo and output:
                return _Endpoint(_reopen(probe, os.O_RDWR), fifo=True)
            if fifo:
                reader = _reopen(probe, os.O_RDONLY)
                try:
                    keeper = _reopen(probe, os.O_WRONLY)  # a reader exists: no ENXIO
                except BaseException:
                    os.close(reader)
                    raise
                return _Endpoint(reader, fifo=True, keeper=keeper)
            # A plain file or device given by path: the process reads or writes it itself.
            flags = (os.O_WRONLY | os.O_APPEND) if output else os.O_RDONLY
            return _Endpoint(_handed(_reopen(probe, flags)), fifo=False)
        except OSError as e:
            raise from_os_error(f"{name} {rest}", e) from None
    finally:
        os.close(probe)


def _start_binary(uri: str, namespace: str, id: str) -> tuple[int, int]:
    """Start a logging binary as containerd's shim does: the query's keys and values are its
    arguments, CONTAINER_ID and CONTAINER_NAMESPACE its environment, the read ends of the
    stdout and stderr pipes its fds 3 and 4, and fd 5 a pipe it closes once it is ready.
    Returns the pipes' write ends (the process's stdout and stderr). The binary sees EOF when
    the process and its children are gone, and exits; the reaper collects it."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.path or not os.path.isabs(parts.path):
        raise InvalidArgument(f"binary:// URI needs an absolute path: {uri}")
    args = [parts.path]
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        args.append(key)
        if value:
            args.append(value)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    ours = [out_r, err_r, ready_w]
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CONTAINER_ID": id, "CONTAINER_NAMESPACE": namespace}
        try:
            os.posix_spawn(parts.path, args, env, file_actions=[
                (os.POSIX_SPAWN_DUP2, out_r, 3), (os.POSIX_SPAWN_DUP2, err_r, 4),
                (os.POSIX_SPAWN_DUP2, ready_w, 5)])
        except OSError as exc:
            raise InvalidArgument(f"cannot start logging binary {parts.path}: {exc.strerror}") from None
        for fd in ours:
            os.close(fd)
        ours = []
        # Blocking on purpose: Create must not return before the logger reads (containerd waits too).
        if not readable(ready_r, BINARY_READY_TIMEOUT):
            raise Unavailable(f"logging binary {parts.path} did not signal ready in {BINARY_READY_TIMEOUT:.0f}s")
        while os.read(ready_r, 4096):
            pass
    except BaseException:
        for fd in (*ours, out_w, err_w):
            _close(fd)
        raise
    finally:
        _close(ready_r)
    return out_w, err_w


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


async def _wait_fd(fd: int, writable: bool) -> None:
    """Until fd is readable (or writable)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    add(fd, ready)
    try:
        await fut
    finally:
        remove(fd)
        fut.cancel()


async def _write_all(fd: int, data: bytes) -> bool:
    """Write everything; False when the other side is gone (the rest is dropped)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, writable=True)
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF):
                return False
            raise
        view = view[n:]
    return True


def _nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


Tap = Callable[[str, bytes], None]  # (stream, data): called on the loop for each chunk read


class ProcessIO:
    def __init__(self, paths: StdioPaths, open_stdin: bool = False) -> None:
        self.paths = paths
        self.open_stdin = open_stdin  # the init's stdin stays writable for attached clients
        self._tap: Tap | None = None
        self._stdin_lock = asyncio.Lock()
        self._sink: LogSink | None = None
        self._handed: list[bool] = [False, False, False]  # the process uses the client's file itself
        self._ends: list[_Endpoint | None] = [None, None, None]
        self._child: list[int | None] = [None, None, None]  # the process's side of each stream
        self._ours: list[int | None] = [None, None, None]  # our side of each pipe
        self._console: int | None = None
        self._outputs: list[asyncio.Task[None]] = []
        self._copied = 0  # output bytes the loop's copiers read (the log's thread counts its own)
        self._stdin_task: asyncio.Task[None] | None = None
        self._closed = False

    # ----- setup ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, paths: StdioPaths, log_config: LogConfig | None = None, namespace: str = "",
             id: str = "", open_stdin: bool = False) -> ProcessIO:
        """Open the client's paths; with `log_config`, also the container log (init only); with
        `open_stdin`, a stdin pipe (or the terminal) the shim keeps for attached clients."""
        io = cls(paths, open_stdin)
        try:
            if paths.stdout.startswith("binary://"):
                if not paths.terminal and paths.stderr not in ("", paths.stdout):
                    raise InvalidArgument("a logging binary takes both stdout and stderr (the same binary:// URI)")
                out_w, err_w = _start_binary(paths.stdout, namespace, id)
                io._ends = [_open(paths.stdin, False, "stdin"), _Endpoint(out_w, fifo=False),
                            _Endpoint(err_w, fifo=False)]
                if paths.terminal:
                    _close(err_w)
                    io._ends[2] = None
            else:
                io._ends = [_open(paths.stdin, False, "stdin"), _open(paths.stdout, True, "stdout"),
                            None if paths.terminal else _open(paths.stderr, True, "stderr")]
            if log_config is not None:
                io._sink = LogSink(log_config, streams=1 if paths.terminal else 2)
            if not paths.terminal:
                io._make_pipes()
        except BaseException:
            io.close()
            raise
        return io

    def _make_pipes(self) -> None:
        for i, end in enumerate(self._ends):
            logged = i > 0 and self._sink is not None
            # An open stdin is for attached clients (no FIFO needed), and so is the output then:
            # without a log or FIFO it would go to /dev/null, never reaching them.
            kept = self.open_stdin
            if end is None and not logged and not kept:
                continue
            if end is not None and not end.fifo and not logged:
                self._child[i] = end.fd  # a file: the process uses it directly
                self._handed[i] = True
                continue
            r, w = os.pipe2(os.O_CLOEXEC)
            if logged:
                # A logged stream is read in big chunks: fewer wake-ups per byte for the copier.
                with contextlib.suppress(OSError):
                    fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, LOG_PIPE_SIZE)
            child, ours = (r, w) if i == 0 else (w, r)
            self._child[i], self._ours[i] = child, _nonblocking(ours)

    def child_fds(self) -> StdioFds:
        """The fds that become the process's 0-2 (None: /dev/null; all None with a terminal)."""
        return StdioFds(self._child[0], self._child[1], self._child[2])

    def attach(self, console: int | None) -> None:
        """The process exists: drop our copies of its ends and start copying."""
        for i in range(3):
            if self._handed[i]:
                self._ends[i] = None  # a file handed to the process: its fd is closed just below
            _close(self._child[i])
            self._child[i] = None
        if self._closed:
            _close(console)
            return
        for i in (1, 2):  # an end we copy to (a file, a logger's pipe) must not block the loop
            end = self._ends[i]
            if end is not None and not end.fifo:
                os.set_blocking(end.fd, False)
        stdin, stdout = self._ends[0], self._ends[1]
        if console is not None:
            self._console = _nonblocking(console)
            if stdin is not None:
                self._stdin_task = self._spawn(self._copy_stdin(stdin.fd, self._console))
            self._outputs.append(self._spawn(self._output(self._console, stdout.fd if stdout else None,
                                                          "console")))
        else:
            pipe_in = self._ours[0]
            if stdin is not None and pipe_in is not None:
                self._stdin_task = self._spawn(self._copy_stdin(stdin.fd, pipe_in))
            for i in (1, 2):
                src, end = self._ours[i], self._ends[i]
                if src is not None and (end is not None or self._sink is not None or self.open_stdin):
                    self._outputs.append(self._spawn(self._output(src, end.fd if end else None,
                                                                  ("stdout", "stderr")[i - 1])))
        if self._sink is not None:
            self._sink.start()  # after every read_from

    @staticmethod
    def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro)

    # ----- copying -------------------------------------------------------------------------------

    def _output(self, src: int, dst: int | None, name: str) -> Coroutine[Any, Any, None]:
        """The copier of one output: a logged stream that no client reads is left to the log's
        thread whole (it reads the pipe itself: no loop wake-up, no hand-off per chunk)."""
        stream = "stderr" if name == "stderr" else "stdout"
        if self._sink is not None and dst is None:
            self._sink.read_from(src, stream)
            return self._logged_only(src, name, stream, self._sink)
        return self._copy_out(src, dst, name, self._sink)

    async def _logged_only(self, src: int, name: str, stream: str, sink: LogSink) -> None:
        if not await sink.source_ended(stream):
            # The writer failed (logged): drain the process here so it is not blocked for good.
            await self._copy_out(src, None, name, None)
            return
        self._finish_output(name)  # the thread no longer polls src
        await sink.written()

    async def _copy_out(self, src: int, dst: int | None, name: str, sink: LogSink | None) -> None:
        """Process output → FIFO (and the log), until EOF (every writer closed; EIO from a pty master)."""
        stream = "stderr" if name == "stderr" else "stdout"
        size = CHUNK if sink is None else LOG_CHUNK
        try:
            while True:
                try:
                    data = os.read(src, size)
                except BlockingIOError:
                    await _wait_fd(src, writable=False)
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.EBADF):
                        break
                    raise
                if not data:
                    break
                self._copied += len(data)
                if sink is not None:
                    await sink.put(stream, data)
                if self._tap is not None:
                    self._tap(stream, data)
                if dst is not None and not await _write_all(dst, data):
                    dst = None  # nobody can read it any more: keep draining the process
        except Exception:
            log.exception("copying %s failed", name)
        finally:
            self._finish_output(name)
        if sink is not None:  # not reached when cancelled (Delete): aclose ends the log then
            await sink.end(stream)

    def _finish_output(self, name: str) -> None:
        # EOF for the client: our fd is the FIFO's only writer once the process's side is done.
        i = 1 if name in ("stdout", "console") else 2
        if name != "console":
            _close(self._ours[i])
            self._ours[i] = None
        end = self._ends[i]
        if end is not None:
            _close(end.fd)
            self._ends[i] = None

    async def _copy_stdin(self, src: int, dst: int) -> None:
        """FIFO → process, until EOF (CloseIO and the client's writer closed) or the process
        stops reading."""
        try:
            while True:
                try:
                    data = os.read(src, CHUNK)
                except BlockingIOError:
                    await _wait_fd(src, writable=False)
                    continue
                if not data or not await _write_all(dst, data):
                    break
        except OSError as exc:
            log.warning("copying stdin failed: %s", exc)
        finally:
            self._end_stdin()

    def _end_stdin(self) -> None:
        end, self._ends[0] = self._ends[0], None
        if end is not None:
            _close(end.fd)
            _close(end.keeper)
        # The process reads EOF once the pipe's last writer closes (a pty is left open).
        _close(self._ours[0])
        self._ours[0] = None

    # ----- attached clients (shim.attach) ---------------------------------------------------------

    @property
    def tap(self) -> Tap | None:
        return self._tap

    @tap.setter
    def tap(self, tap: Tap | None) -> None:
        """Also hand every chunk read to `tap` (None: stop). The log's thread reads its streams
        itself: it posts them to the loop only while a tap is set."""
        self._tap = tap
        if self._sink is not None:
            self._sink.tap = tap

    @property
    def logged(self) -> bool:
        return self._sink is not None

    async def reopen_log(self) -> None:
        """Reopen the container log's file at its path (FailedPrecondition without a log)."""
        if self._sink is None:
            raise FailedPrecondition("the container has no log to reopen")
        await self._sink.reopen()

    @property
    def stdin_open(self) -> bool:
        return self.open_stdin and self._attached_stdin() is not None

    def _attached_stdin(self) -> int | None:
        return self._console if self.paths.terminal else self._ours[0]

    async def write_stdin(self, data: bytes) -> bool:
        """An attached client's input, into the process's stdin; False when it is closed (or was
        never open: the container was created without an open stdin)."""
        if not self.open_stdin:
            return False
        async with self._stdin_lock:  # one waiter per fd: the loop keeps one writer callback per fd
            fd = self._attached_stdin()
            return fd is not None and await _write_all(fd, data)

    def close_attached_stdin(self) -> None:
        """An attached client's stdin ended (`dock run -i`): the process reads EOF. A terminal
        stays open (it is also the output), as a FIFO-fed stdin is left to CloseIO."""
        if self.open_stdin and not self.paths.terminal and self._stdin_task is None:
            _close(self._ours[0])
            self._ours[0] = None

    # ----- requests ------------------------------------------------------------------------------

    def close_stdin(self) -> None:
        """CloseIO: drop our writer of the stdin FIFO, so the client's close is the EOF."""
        end = self._ends[0]
        if end is None:
            return
        if self._stdin_task is None:
            self._end_stdin()  # nothing copies it: the process has /dev/null or a file
        else:
            _close(end.keeper)
            end.keeper = None

    def resize(self, width: int, height: int) -> None:
        if self._console is None:
            return  # no terminal, or already closed: as containerd, not an error
        from dockyard_common.linux import set_winsize

        with contextlib.suppress(OSError):
            set_winsize(self._console, height, width)

    async def drained(self, timeout: float, limit: float = DRAIN_LIMIT) -> bool:
        """Wait until the output is copied and the FIFOs closed; False once `timeout` passed
        with no byte copied or written to the log (a forked child holds the pipe open: copying
        goes on in the background), or `limit` in all. A slow disk under the log, still
        writing what the process left in the pipe, is waited for: what was printed before the
        exit is in the log when the exit is told."""
        pending = {t for t in self._outputs if not t.done()}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + limit
        while pending:
            before = self._progress()
            _, pending = await asyncio.wait(pending, timeout=max(0.0, min(timeout, give_up - loop.time())))
            if pending and (self._progress() == before or loop.time() >= give_up):
                return False
        return True

    def _progress(self) -> int:
        return self._copied + (self._sink.progress if self._sink is not None else 0)

    async def aclose(self) -> None:
        """Stop copying and close every fd (Delete)."""
        self._closed = True
        tasks = [*self._outputs, *([self._stdin_task] if self._stdin_task else [])]
        for task in tasks:
            task.cancel()
        # Let the copiers unregister from the loop before their fd numbers can be reused.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sink is not None:
            await self._sink.aclose()
        self.close()

    def close(self) -> None:
        """Close every fd; copiers must be stopped already (`aclose`), or never started."""
        self._closed = True
        if self._sink is not None:
            self._sink.close()  # at once when aclose ended it already
            self._sink = None
        self._outputs.clear()
        self._stdin_task = None
        for i in range(3):
            end, self._ends[i] = self._ends[i], None
            if end is not None:
                _close(end.fd)
                _close(end.keeper)
            _close(self._child[i])
            _close(self._ours[i])
            self._child[i] = self._ours[i] = None
        _close(self._console)
        self._console = None

