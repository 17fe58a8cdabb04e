"""The `dock` launcher: hand the command to a warm `dock` process, else run it here.

A cold `dock` spends most of a short command starting Python and importing grpc, protobuf and
asyncio (~150-250 ms here, more than podman's whole `run -d`). The dock zygote (dock/warm.py) has
imported the CLI once and forks a child per command, so a command costs a small interpreter start
(this module imports nothing but built-ins) and a fork.

The child must be the process a cold `dock` would have been. The launcher sends the zygote its
argv, environment, umask, resource limits, stdio encoding, and its stdin, stdout, stderr and
working directory as file descriptors (SCM_RIGHTS); the zygote refuses (and the command runs cold)
unless the launcher has its user, groups, capabilities, root directory and namespaces. The
launcher forwards the signals it gets to the child and exits as the child did.

Where: one zygote per daemon socket directory, user, interpreter, code location and set of
namespaces, at <socket dir>/.dock/zygote-<key>.sock (`zygote_path`). No zygote there: the command
runs cold, and starts one in the background if it is the second within REPEAT_WINDOW. DOCK_WARM=0
always runs cold.

Protocol, on a SOCK_SEQPACKET socket (one message each):
  zygote -> launcher  HELLO, once it takes a command
  launcher -> zygote  the request (`request`) with fds 0, 1, 2 and the cwd attached
  zygote -> launcher  b"cold <why>" (nothing ran) | b"pid <N>", then b"exit <wait status>"
  launcher -> zygote  b"sig <N>" for each signal to pass on
Before HELLO nothing was handed over and the launcher may run the command itself; after sending
the request it never does (the command may be running).
"""

from __future__ import annotations

import _signal as signal  # the C modules: signal's and socket's wrappers import enum (~5 ms)
import _socket as socket
import os
import struct
import sys
import zlib

TYPE_CHECKING = False  # typing itself costs this module's start more than all the rest
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

DEFAULT_ADDRESS = "/run/dockyard/dockyard.sock"
SWITCH = "DOCK_WARM"
HELLO = b"dock-zygote/1"
MAGIC = b"dock-request/1"
ZYGOTE_DIR = ".dock"
HELLO_TIMEOUT = 2.0  # a zygote that does not greet by then is stuck: run cold, nothing was sent
ZYGOTE_START_WAIT = 20.0  # DOCK_WARM=require: how long a zygote may take to start
REPEAT_WINDOW = 600.0  # a second cold command within this many seconds starts a zygote
STARTING_FRESH = 30.0  # seconds a start marker keeps other launchers from starting a second zygote
MAX_PATH = 107  # sun_path
# Signals the launcher passes on; SIGTSTP/SIGCONT stop and continue the child with it.
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCONT")
NAMESPACES = ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup")
# The global options that take a value, as dock/cli.py declares them.
_VALUED = ("--address", "-a", "--namespace", "-n", "--format", "--timeout")


def code_root() -> str:
    """The directory holding the `dock` package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def daemon_address(argv: list[str], environ: os._Environ[str] | dict[str, str]) -> str:
    """The daemon socket `argv` names before its command (else DOCKYARD_ADDRESS, else the default).
    Only picks the zygote: the child parses argv itself."""
    address = environ.get("DOCKYARD_ADDRESS", DEFAULT_ADDRESS)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        word = argv[i]
        if word in ("--address", "-a") and i + 1 < len(argv):
            address = argv[i + 1]
        elif word.startswith("--address="):
            address = word.split("=", 1)[1]
        elif word.startswith("-a") and not word.startswith("--"):
            address = word[2:]
        i += 2 if word in _VALUED else 1
    return os.path.abspath(address) if address else DEFAULT_ADDRESS


def zygote_path(address: str) -> str | None:
    """The zygote socket for this launcher and daemon socket; None when it cannot have one."""
    parts = [os.path.realpath(sys.executable), code_root(), str(os.geteuid())]
    for ns in NAMESPACES:
        try:
            parts.append(os.readlink(f"/proc/self/ns/{ns}"))
        except OSError:
            parts.append("-")
    key = zlib.crc32("\0".join(parts).encode())
    path = os.path.join(os.path.dirname(address), ZYGOTE_DIR, f"zygote-{key:08x}.sock")
    return path if len(os.fsencode(path)) <= MAX_PATH else None


def resource_limits() -> list[tuple[int, int, int]]:
    """(RLIMIT_* number, soft, hard) of this process, every limit the platform has."""
    import resource

    return [(number, *resource.getrlimit(number))
            for number in (getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))]


def request(argv: list[str]) -> bytes:
    """What the child needs to be this process (see dock/warm.py `Request.parse`)."""
    mask = os.umask(0)
    os.umask(mask)
    limits = [f"{number}:{soft}:{hard}" for number, soft, hard in resource_limits()]
    out = sys.stdout
    fields = [MAGIC, os.fsencode(code_root()), os.fsencode(os.path.realpath(sys.executable)),
              out.encoding.encode(), (out.errors or "strict").encode(),
              b"1" if getattr(out, "write_through", False) else b"0",
              str(mask).encode(), ";".join(limits).encode(), os.fsencode(sys.argv[0]),
              str(len(argv)).encode(), *(os.fsencode(a) for a in argv),
              *(k + b"=" + v for k, v in os.environb.items())]
    return b"\0".join(fields)


def try_warm(argv: list[str]) -> int | None:
    """Run `argv` in a warm child and return its exit status; None: run it here (nothing ran).
    DOCK_WARM=0: never; =require: a warm child or an error (waiting for a zygote to start)."""
    mode = os.environ.get(SWITCH, "1")
    if mode == "0" or "_ARGCOMPLETE" in os.environ:
        return None
    required = mode == "require"
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:  # a closed stdio fd cannot be handed over
        return _cold_or_fail(required, "stdin, stdout or stderr is closed")
    address = daemon_address(argv, os.environ)
    path = zygote_path(address)
    if path is None:
        return _cold_or_fail(required, "no zygote socket path fits")
    conn = _connect(path, address, required)
    if conn is None:
        return _cold_or_fail(required, "no zygote answered")
    try:
        signals = _Forwarder(conn)  # from here on a signal is the command's, not ours
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)
        try:
            conn.sendmsg([request(argv)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("4i", 0, 1, 2, cwd))])
        except OSError:  # too big, or the zygote went away: nothing was handed over
            signals.restore()
            signals.replay()
            return None
        finally:
            os.close(cwd)
        conn.settimeout(None)
        code = _follow(conn, signals)
        return _cold_or_fail(required, code.decode(errors="replace")) if isinstance(code, bytes) else code
    finally:
        conn.close()


def _repeated(path: str, now: float) -> bool:
    """Whether a command ran cold here within REPEAT_WINDOW (`path`'s time); notes this one."""
    try:
        repeated = now - os.stat(path).st_mtime < REPEAT_WINDOW
        os.utime(path)
    except FileNotFoundError:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return False
    return repeated


def _connect(path: str, address: str, required: bool) -> socket.socket | None:
    """A greeted connection to the zygote at `path` (one is started when there is none: waited
    for when `required`, else for the next command)."""
    import time

    deadline = time.monotonic() + ZYGOTE_START_WAIT
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.settimeout(HELLO_TIMEOUT)
        try:
            conn.connect(path)
            if conn.recv(64) == HELLO:
                return conn
        except (FileNotFoundError, ConnectionRefusedError):
            start_zygote(path, address, now=required)
            if required and time.monotonic() < deadline:
                conn.close()
                time.sleep(0.05)
                continue
        except OSError:
            pass
        conn.close()
        return None


def _cold_or_fail(required: bool, why: str) -> int | None:
    if not required:
        return None
    print(f"dock: {SWITCH}=require, but the command cannot run warm: {why}", file=sys.stderr)
    return 1


def _follow(conn: socket.socket, signals: _Forwarder) -> int | bytes:
    """Wait for the child's end, passing signals on; its exit status (a signal re-raised here),
    or the zygote's refusal (b"cold <why>": nothing ran)."""
    try:
        answer = _recv(conn)
        if answer.startswith(b"cold"):
            signals.restore()
            signals.replay()  # nothing ran: the cold command gets them
            return answer
        if not answer.startswith(b"pid "):
            print("dock: the warm client gave no answer; the command may not have run", file=sys.stderr)
            return 1
        pid = int(answer[4:])
        signals.started()
        answer = _recv(conn)
    finally:
        signals.restore()
    if not answer.startswith(b"exit "):
        return _wait_orphan(pid)
    status = int(answer[5:])
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def _recv(conn: socket.socket) -> bytes:
    while True:
        try:
            return conn.recv(64)
        except InterruptedError:
            continue
        except OSError:
            return b""


class _Forwarder:
    """Passes the launcher's signals to the child; holds them until the child exists."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.pending: list[int] = []
        self.running = False
        self.before: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        for name in (*FORWARDED, "SIGTSTP"):
            number = getattr(signal, name)
            self.before[number] = signal.signal(number, self._on_signal)

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        if self.running:
            self._send(sig)
        else:
            self.pending.append(sig)

    def _send(self, sig: int) -> None:
        try:
            if sig == signal.SIGTSTP:  # stop the child, then ourselves (SIGCONT resumes both)
                self.conn.send(b"sig %d" % signal.SIGSTOP)
                os.kill(os.getpid(), signal.SIGSTOP)
            else:
                self.conn.send(b"sig %d" % sig)
        except OSError:
            pass

    def started(self) -> None:
        self.running = True
        for sig in self.pending:
            self._send(sig)
        self.pending.clear()

    def restore(self) -> None:
        for number, handler in self.before.items():
            signal.signal(number, handler)

    def replay(self) -> None:
        for sig in self.pending:
            os.kill(os.getpid(), sig)
        self.pending.clear()


def _wait_orphan(pid: int) -> int:
    """The zygote went away while the child runs: wait for the child, its status is lost."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return 1
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)
    return 1


def start_zygote(path: str, address: str, now: bool = False) -> None:
    """Start a zygote for `path` in the background: at the second command without one within
    REPEAT_WINDOW (one `dock` in a script is not worth a warm process), or `now`. Not when one is
    being started already, or there is no daemon at `address` (a zygote lives as long as its
    daemon's socket)."""
    import time

    directory = os.path.dirname(path)
    if not os.path.exists(address):
        return  # no daemon: nothing to serve (and its directory is not ours to make)
    stem = path[:-len(".sock")]
    marker = stem + ".starting"
    try:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        if not now and not _repeated(stem + ".cold", time.time()):
            return
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if time.time() - os.stat(marker).st_mtime < STARTING_FRESH:
                return
            os.utime(marker)
        else:
            os.close(fd)
        devnull = os.O_RDWR
        python_path = os.pathsep.join(p for p in (code_root(), os.environ.get("PYTHONPATH", "")) if p)
        # this launcher's code, wherever the zygote starts (-P: not the cwd's `dock`, if it has one)
        environ = {**os.environ, "PYTHONPATH": python_path}
        os.posix_spawn(sys.executable, [sys.executable, "-P", "-m", "dock.warm", path, marker, address], environ,
                       file_actions=[(os.POSIX_SPAWN_OPEN, fd, os.devnull, devnull, 0) for fd in (0, 1, 2)],
                       setsid=True)
    except OSError:
        pass  # no zygote, then: every command runs cold
