"""The dock zygote: a warm `dock` that forks a child per command (the launcher is dock/launch.py,
which also describes the protocol).

It imports the whole CLI once (and freezes it out of the cyclic GC, so children do not dirty the
shared pages), then serves commands from one thread: a child per request, its exit status sent
back when it is reaped, the launcher's signals passed on, a child whose launcher vanished killed
(as a killed cold `dock` would be gone). It refuses, so the command runs cold, a launcher whose
process differs in what a fork cannot copy: user, groups, capabilities, no_new_privs, seccomp,
root directory, namespaces; or that runs other code. It exits when idle for IDLE_EXIT seconds, when
its socket is removed or replaced, when its daemon's socket is gone, or on SIGTERM; in each case
only after its children are done, so every launcher gets its child's status.
"""

from __future__ import annotations

import array
import contextlib
import errno
import gc
import importlib
import io
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass

from dock.launch import HELLO, MAGIC, code_root, resource_limits
from dockyard_common.unixsock import AlreadyServing, listen

IDLE_EXIT = 600.0
REQUEST_TIMEOUT = 5.0  # a launcher that greeted must send its request by then
MAX_REQUEST = 1 << 20
MAX_FDS = 4  # stdin, stdout, stderr, cwd
TICK = 1.0
HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGUSR1,
        signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT, signal.SIGTSTP, signal.SIGCHLD}
# /proc/<pid>/status lines that must be the launcher's as they are ours.
SAME_STATUS = ("Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
               "NoNewPrivs:", "Seccomp:")


class Refused(Exception):
    """The command must run cold; the message says why."""


@dataclass
class Request:
    code: str
    executable: str
    encoding: str
    errors: str
    write_through: bool
    umask: int
    limits: list[tuple[int, int, int]]
    argv0: str
    argv: list[str]
    environ: dict[bytes, bytes]

    @classmethod
    def parse(cls, data: bytes) -> Request:
        fields = data.split(b"\0")
        try:
            if fields[0] != MAGIC:
                raise Refused("another protocol")
            argc = int(fields[9])
            argv = fields[10:10 + argc]
            env = fields[10 + argc:]
            if len(argv) != argc:
                raise Refused("a truncated request")
            limits = [tuple(int(n) for n in item.split(b":")) for item in fields[7].split(b";") if item]
            return cls(os.fsdecode(fields[1]), os.fsdecode(fields[2]), fields[3].decode(), fields[4].decode(),
                       fields[5] == b"1", int(fields[6]), [(r, s, h) for r, s, h in limits],
                       os.fsdecode(fields[8]), [os.fsdecode(a) for a in argv],
                       dict(item.split(b"=", 1) for item in env if b"=" in item))
        except (IndexError, ValueError, UnicodeDecodeError) as exc:
            raise Refused("a malformed request") from exc


def _status_lines(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return [line for line in f.read().splitlines() if line.startswith(SAME_STATUS)]


def check_peer(pid: int, req: Request, own_limits: dict[int, int]) -> None:
    """Raise Refused unless the child can be the launcher `pid` (see the module docstring)."""
    try:
        if pid <= 0 or _status_lines(pid) != _status_lines("self"):
            raise Refused("another user, groups or capabilities")
        for ns in os.listdir("/proc/self/ns"):
            if not ns.endswith("_for_children") and \
                    os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                raise Refused(f"another {ns} namespace")
        theirs, ours = os.stat(f"/proc/{pid}/root"), os.stat("/")
    except OSError as exc:
        raise Refused("a launcher that could not be looked at") from exc
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        raise Refused("another root directory")
    if os.path.realpath(req.code) != os.path.realpath(code_root()) or \
            os.path.realpath(req.executable) != os.path.realpath(sys.executable):
        raise Refused("other code")
    for number, _soft, hard in req.limits:
        if number in own_limits and _above(hard, own_limits[number]):
            raise Refused("a resource limit above ours")  # raising it takes CAP_SYS_RESOURCE


def _above(theirs: int, ours: int) -> bool:
    """Whether the hard limit `theirs` is above `ours` (-1 is RLIM_INFINITY)."""
    return ours != -1 and (theirs == -1 or theirs > ours)


class Sources:
    """The modules this zygote loaded: it must not serve a command once one changed on disk."""

    def __init__(self) -> None:
        root = os.path.realpath(code_root()) + os.sep
        self.files: dict[str, int] = {}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and os.path.realpath(path).startswith(root):
                with contextlib.suppress(OSError):
                    self.files[path] = os.stat(path).st_mtime_ns

    def changed(self) -> bool:
        for path, mtime in self.files.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False


def preload() -> None:
    """Import what commands run (the parser of every group, the client and its messages)."""
    from dock import parser

    for group in parser.GROUPS:
        importlib.import_module(f"dock.commands.{group}")
    parser.build_parser(groups=list(parser.GROUPS))
    for name in ("dock.cli", "dock.client", "grpc.aio", "asyncio.unix_events", "asyncio.selector_events"):
        importlib.import_module(name)


# ----- the child -----------------------------------------------------------------------------------


def run_child(req: Request, fds: list[int], mask: set[signal.Signals | int]) -> None:
    """Become the command's process and run it; never returns. `mask`: the signal mask to restore
    once the child has its handlers."""
    code = 1
    try:
        become(req, fds)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        from dock import cli

        code = cli.main(req.argv)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:  # ^C before the command's own handling began
        code = 130
    except BaseException as exc:  # the cold `dock` would have died of it: one line, no traceback
        with contextlib.suppress(Exception):
            os.write(2, f"dock: unexpected error in the warm client: {exc or 'no details'}\n".encode())
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code & 0xFF)


def become(req: Request, fds: list[int]) -> None:
    """Take the launcher's stdio (fds 0-2), working directory (fds[3]), umask, limits, environment
    and argv; drop every other descriptor and the zygote's signal handlers."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    os.closerange(3, _fd_limit())
    os.umask(req.umask)
    import resource

    for number, soft, hard in req.limits:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(number, (soft, hard))
    os.environb.clear()
    os.environb.update(req.environ)
    _forget_environment()
    sys.argv = [req.argv0, *req.argv]
    _stdio(req)


def _fd_limit() -> int:
    return max(os.sysconf("SC_OPEN_MAX"), 1024)


def _forget_environment() -> None:
    """Drop what was read from the zygote's environment before the launcher's replaced it."""
    import tempfile
    import time as clock

    tempfile.tempdir = None  # gettempdir() caches TMPDIR
    clock.tzset()  # TZ


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    with contextlib.suppress(Exception):
        print(value, file=sys.stderr)
    return 1


def _stdio(req: Request) -> None:
    """New sys.stdin/stdout/stderr on fds 0-2, buffered as Python buffers them for the launcher."""
    sys.stdin = _stream(0, req.encoding, req.errors)
    sys.stdout = _stream(1, req.encoding, req.errors, os.isatty(1), req.write_through)
    sys.stderr = _stream(2, req.encoding, "backslashreplace", True, req.write_through)


def _stream(fd: int, encoding: str, errors: str, line_buffering: bool = False,
            write_through: bool = False) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
    buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, line_buffering=line_buffering,
                            write_through=write_through)


# ----- the server ----------------------------------------------------------------------------------


@dataclass
class Job:
    conn: socket.socket
    pid: int = 0  # 0: greeted, waiting for the request
    since: float = 0.0


class Zygote:
    def __init__(self, path: str, sock: socket.socket, daemon: str) -> None:
        self.path = path
        self.daemon = daemon
        self.sock = sock
        self.ino = os.stat(path).st_ino
        self.sel = selectors.DefaultSelector()
        self.jobs: dict[socket.socket, Job] = {}
        self.by_pid: dict[int, Job] = {}
        self.stopping = False
        self.last = time.monotonic()
        self.sources = Sources()
        self.limits = {number: hard for number, _soft, hard in resource_limits()}
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.sel.register(sock, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)

    def stop(self) -> None:
        """Take no more commands; exit once the children are done."""
        if self.stopping:
            return
        self.stopping = True
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sock)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        self.sock.close()

    def serve(self) -> None:
        while not (self.stopping and not self.jobs):
            for key, _ in self.sel.select(TICK):
                if key.fileobj is self.sock:
                    self._accept()
                elif key.fileobj == self.wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                    self._reap()
                else:
                    self._readable(self.jobs[key.fileobj])  # type: ignore[index]
            self._reap()
            self._housekeeping()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for job in [j for j in self.jobs.values() if not j.pid and now - j.since > REQUEST_TIMEOUT]:
            self._drop(job)
        if self.stopping:
            return
        try:
            gone = os.stat(self.path).st_ino != self.ino or not os.path.exists(self.daemon)
        except OSError:
            gone = True
        if gone or (not self.by_pid and now - self.last > IDLE_EXIT):
            self.stop()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        try:
            conn.send(HELLO)
        except OSError:
            conn.close()
            return
        job = Job(conn, since=time.monotonic())
        self.jobs[conn] = job
        self.sel.register(conn, selectors.EVENT_READ)
        self.last = job.since

    def _readable(self, job: Job) -> None:
        if job.pid:
            try:
                data = job.conn.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the launcher is gone: so is its command
                self._kill(job, signal.SIGKILL)
                self._unwatch(job)
            elif data.startswith(b"sig "):
                with contextlib.suppress(ValueError):
                    self._kill(job, int(data[4:]))
            return
        self._start(job)

    def _start(self, job: Job) -> None:
        fds: list[int] = []
        try:
            msg, ancdata, flags, _ = job.conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(MAX_FDS * 4))
        except BlockingIOError:
            return
        except OSError:
            self._drop(job)
            return
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != MAX_FDS or not _usable(fds):
                raise Refused("a malformed request")
            req = Request.parse(msg)
            pid = _peer_pid(job.conn)
            check_peer(pid, req, self.limits)
            if self.sources.changed():
                self.stop()
                raise Refused("code changed since the zygote loaded it")
        except Refused as exc:
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                job.conn.send(b"cold " + str(exc).encode())
            self._drop(job)
            return
        # Signals for the child wait until it has its handlers (the zygote ignores SIGINT).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
        child = os.fork()
        if child == 0:
            run_child(req, fds, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in fds:
            os.close(fd)
        job.pid = child
        self.by_pid[child] = job
        try:
            job.conn.send(b"pid %d" % child)
        except OSError:
            self._kill(job, signal.SIGKILL)

    def _kill(self, job: Job, sig: int) -> None:
        if job.pid and job.pid in self.by_pid:  # not reaped yet: the pid is still the child's
            with contextlib.suppress(OSError):
                os.kill(job.pid, sig)

    def _reap(self) -> None:
        while self.by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue
            with contextlib.suppress(OSError):
                job.conn.setblocking(True)
                job.conn.settimeout(1.0)
                job.conn.send(b"exit %d" % status)
            self._drop(job)
            self.last = time.monotonic()

    def _unwatch(self, job: Job) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(job.conn)

    def _drop(self, job: Job) -> None:
        self._unwatch(job)
        self.jobs.pop(job.conn, None)
        if job.pid in self.by_pid:
            return  # its status is still to come: keep the connection until it is reaped
        job.conn.close()


def _usable(fds: list[int]) -> bool:
    """Three open descriptors and a directory."""
    import stat

    try:
        modes = [os.fstat(fd).st_mode for fd in fds]
    except OSError:
        return False
    return stat.S_ISDIR(modes[3])


def _peer_pid(conn: socket.socket) -> int:
    import struct

    pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return int(pid)


def main(argv: list[str]) -> int:
    """`python -m dock.warm SOCKET MARKER DAEMON_SOCKET`: started by a launcher, in its own session."""
    path, marker, daemon = argv
    os.chdir("/")  # hold no test's or user's directory
    with contextlib.suppress(OSError):
        with open("/proc/self/comm", "w") as comm:
            comm.write("dock-zygote")
    os.closerange(3, _fd_limit())  # nothing of the launcher's stays open here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        preload()
        gc.collect()
        gc.freeze()
        try:
            sock = listen(path, socket.SOCK_SEQPACKET)
        except (AlreadyServing, OSError):
            return 0
    finally:
        with contextlib.suppress(OSError):
            os.unlink(marker)
    Zygote(path, sock, daemon).serve()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        if exc.errno != errno.EINTR:
            sys.exit(1)
