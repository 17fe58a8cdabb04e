"""A process' stdio as FIFOs in a private temp dir, copied to and from this process' own.

The shim opens the FIFOs we name in Tasks/Create (or Exec): it writes the process' output to
`stdout`/`stderr` and reads `stdin`. Our side, in order:

    io = await ProcessIO.open("web", stdin=True, tty=False)   # FIFOs made, read ends opened
    await client.tasks.create("web", ..., stdin=io.stdin, stdout=io.stdout, stderr=io.stderr)
    await client.tasks.start("web")
    io.start_stdin(on_eof)      # copy our stdin in; on EOF the FIFO is closed and on_eof runs
    ... wait for the process ...
    await io.drain()            # the rest of the output, until the shim closes its ends
    await io.close()            # fds closed, the temp dir removed

Until `drain`, each output FIFO also has a writer of ours open: a FIFO with no writer reads
as end-of-file, and the shim may open its end after we begin reading.

When our own stdout or stderr is a pipe whose reader went away (`dock exec c yes | head -1`),
copying stops and `output_gone` completes: the caller ends the command (as a shell pipeline's
writer dies of SIGPIPE) rather than copying into nowhere until the process exits, which may be
never.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

CHUNK = 64 * 1024
DRAIN_TIMEOUT = 10.0  # seconds to wait for output after the process exited


FIFO_PREFIX = "dock-fifo-"


def _owner_tag() -> str:
    """`<pid namespace inode>-<pid>`: a FIFO dir's owner, as this process can check it later."""
    return f"{os.stat('/proc/self/ns/pid').st_ino}-{os.getpid()}"


def make_fifo_dir(tmp: str | None = None) -> Path:
    """A private temp dir named for its owner; orphans of dead docks are swept first."""
    sweep_fifo_dirs(tmp)
    return Path(tempfile.mkdtemp(prefix=f"{FIFO_PREFIX}{_owner_tag()}-", dir=tmp))


def sweep_fifo_dirs(tmp: str | None = None) -> list[str]:
    """Remove the FIFO dirs of dock processes that are gone: a dock killed by SIGKILL (or its
    warm child, killed with its launcher) cannot remove its own. Only dirs of our uid and of a
    process in our pid namespace (where its pid means what it says) that no longer exists;
    the removed paths."""
    base = tmp or tempfile.gettempdir()
    pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    uid = os.geteuid()
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(FIFO_PREFIX):
            continue
        parts = entry.name[len(FIFO_PREFIX):].split("-", 2)
        if len(parts) != 3 or parts[0] != pidns or not parts[1].isdigit():
            continue  # another pid namespace's, or made by a dock before owners were named
        try:
            os.kill(int(parts[1]), 0)
            continue  # alive (or another user's: PermissionError below)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class ProcessIO:
    def __init__(self, directory: Path, name: str, stdin: bool, tty: bool, out_fd: int, err_fd: int,
                 in_fd: int) -> None:
        self.dir = directory
        self.tty = tty
        self.stdin = str(directory / f"{name}-stdin") if stdin else ""
        self.stdout = str(directory / f"{name}-stdout")
        self.stderr = "" if tty else str(directory / f"{name}-stderr")  # a terminal has one output
        self._targets = {self.stdout: out_fd, self.stderr: err_fd}
        self._in_fd = in_fd
        self._keep_open: list[int] = []
        self._copies: list[asyncio.Task[None]] = []
        self._transports: list[asyncio.BaseTransport] = []
        # Completed (with the BrokenPipeError) when one of our outputs has no reader any more.
        self.output_gone: asyncio.Future[BrokenPipeError] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, name: str, *, stdin: bool, tty: bool, out_fd: int = 1, err_fd: int = 2,
                   in_fd: int = 0) -> ProcessIO:
        directory = await asyncio.to_thread(make_fifo_dir)
        io = cls(directory, name, stdin, tty, out_fd, err_fd, in_fd)
        try:
            await io._open_outputs()
        except BaseException:
            await io.close()
            raise
        return io

    async def _open_outputs(self) -> None:
        loop = asyncio.get_running_loop()
        for path in (self.stdin, self.stdout, self.stderr):
            if path:
                os.mkfifo(path, 0o600)
        for path, target in self._targets.items():
            if not path:
                continue
            rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._keep_open.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            reader = asyncio.StreamReader(limit=CHUNK)
            transport, _ = await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r),  # type: ignore[misc]
                                                        os.fdopen(rfd, "rb", buffering=0))
            self._transports.append(transport)
            self._copies.append(asyncio.create_task(self._copy(reader, target)))

    async def _copy(self, reader: asyncio.StreamReader, target: int) -> None:
        while chunk := await reader.read(CHUNK):
            # Our stdout may be a slow pipe or terminal: never block the loop on it.
            try:
                await asyncio.to_thread(write_all, target, chunk)
            except BrokenPipeError as exc:  # nobody reads our output any more: the command ends
                if not self.output_gone.done():
                    self.output_gone.set_result(exc)
                return

    def start_stdin(self, on_eof: Callable[[], None]) -> None:
        """Copy our stdin into the process' (in a thread: a read of our stdin cannot be
        made non-blocking without changing it for whoever shares it); at EOF close the FIFO
        and call `on_eof` on the loop."""
        if not self.stdin:
            return
        loop = asyncio.get_running_loop()
        # O_RDWR: never blocks and never fails with ENXIO, whether or not the shim has its end open.
        fifo = os.open(self.stdin, os.O_RDWR | os.O_CLOEXEC)

        def pump() -> None:
            try:
                while data := os.read(self._in_fd, CHUNK):
                    write_all(fifo, data)
            except OSError:
                pass
            finally:
                os.close(fifo)
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                loop.call_soon_threadsafe(on_eof)

        threading.Thread(target=pump, name="dock-stdin", daemon=True).start()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Let go of our writers and copy what is left, until the shim closes its ends
        (or `timeout` passes: a process' orphaned children may keep them open)."""
        self._release_writers()
        if self._copies:
            _, pending = await asyncio.wait(self._copies, timeout=timeout)
            for task in pending:
                task.cancel()

    def _release_writers(self) -> None:
        for fd in self._keep_open:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keep_open.clear()

    async def close(self) -> None:
        self._release_writers()
        for task in self._copies:
            task.cancel()
        for transport in self._transports:
            transport.close()
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
