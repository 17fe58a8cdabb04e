"""The shim's public launch contract: its command line, where it listens, and the zygote protocol.

Both sides use these definitions: the daemon (and the shim's own `start`) as clients, the shim
(`shim.__main__`, `shim.zygote`) as the server. The daemon starts shims only through this
contract, never by importing the shim.

Command line (containerd's runtime v2): `<shim> -namespace NS -address SOCK -publish-binary BIN
-id ID [-debug] start|delete`, run in the bundle, with TTRPC_ADDRESS in the environment naming the
daemon's events endpoint (`command_line`, `environment`).

Where a shim listens: `<bundle>/shim.sock`, or, when that path is too long for a unix socket,
/run/dockyard-shim/<hash>.sock (`socket_path`): the daemon dials the address `start` prints.

Grouping (a shim per pod, as containerd's runc shim does it, or per several pods: the daemon's CRI
names a group shared by up to `[cri] pods_per_shim` pods): a bundle whose config.json names a
group — the annotation `io.containerd.runc.v2.group`, else `io.kubernetes.cri.sandbox-id` (CRI: the
pod's sandbox id, on the sandbox and on every container of the pod) — is served by the group's
shim, at <runtime dir>/.dockyard-shim/group-<hash>.sock (`group_socket_path`; it outlives any one
bundle of the group). `start` for a bundle whose group's shim is alive answers that shim's address
and forks nothing; the first bundle of a group (or one whose group shim died) starts it. The
group's shim exits, as any shim, on a Shutdown that finds no container left; it stops listening
before it answers, so a `start` after that makes a new shim rather than join the old one.

The zygote (see `shim.zygote` for the server): one warm process per runtime state dir that forks
serving shims. Its socket is <runtime dir>/.dockyard-shim/zygote-<key>.sock (or a short path under
/run/dockyard-shim), where the runtime dir is the <dir> of a bundle at <dir>/<namespace>/<id> and
<key> hashes the interpreter, the code's location and its newest source (`zygote_socket_path`).
Protocol, on a SOCK_SEQPACKET socket: the zygote greets each connection it accepts (HELLO); the
client sends one message, the JSON `Launch` with the shim's listening socket attached
(SCM_RIGHTS); the zygote forks the shim, records `shim.pid` and `address` in the bundle, and
answers `{"pid": N}` (or `{"error": "..."}`). Without the greeting nothing was handed over and
the client may fork the shim itself (`start`) or run the `start` command (the daemon); after it, a
missing answer is NoAnswer (a shim may exist: starting a second one on the socket would be worse).
DOCKYARD_SHIM_ZYGOTE=0 turns the zygote off.

Kept light on purpose: `start` imports this and must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import zlib
from collections.abc import Mapping
from typing import TypedDict, cast

from dockyard_common.errors import error_text
from dockyard_common.unixsock import MAX_PATH, AlreadyServing, listen

RUN_MODULE = ("-m", "shim")  # `<python> -m shim`: Dockyard's own shim, run by an interpreter
SOCKET_NAME = "shim.sock"
# A socket whose path is too long lives here (containerd's own shims listen in the host-wide
# /run/containerd/s for the same reason).
FALLBACK_DIR = "/run/dockyard-shim"
ZYGOTE_DIR = ".dockyard-shim"  # in the runtime state dir: hidden, daemons skip it as a namespace
EVENTS_ENV = "TTRPC_ADDRESS"
SWITCH = "DOCKYARD_SHIM_ZYGOTE"
REQUEST_TIMEOUT = 5.0
HELLO = b"dockyard-zygote/1"
GROUP_LOCK = "groups.lock"  # beside the group sockets: held while one is checked and made
# Spec annotations naming the group a container's shim is shared with, in order of precedence.
GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
# The sources whose change makes a new zygote key (an updated shim is never served by an old one).
_SOURCE_DIRS = ("shim", "shim/init", "shim/cgroups", "dockyard_common", "dockyard_common/ttrpc")


class Launch(TypedDict):
    """What a serving shim needs to know (JSON: it crosses to the zygote)."""

    namespace: str
    id: str
    bundle: str
    socket: str  # the listening socket's path (removed at the end)
    events: str  # TTRPC_ADDRESS: the daemon's events endpoint
    debug: bool
    group: str  # the shim group (a pod's sandbox id), "" when the shim serves this bundle alone


class NoAnswer(Exception):
    """The request reached a zygote that then did not answer: it may or may not have forked a
    shim on the socket, so starting another could leave two serving it. The start fails instead;
    a retried start finds the socket served (or not) and acts on that."""


class BadRequest(Exception):
    """A request the zygote cannot serve (already answered with the reason)."""


# ----- the command line --------------------------------------------------------------------------


def command_line(command: tuple[str, ...], *, namespace: str, address: str, publish_binary: str, cid: str,
                 action: str, debug: bool = False) -> list[str]:
    """The argv of a shim action (`start`, `delete`) for `command` (a binary, or `python -m shim`)."""
    return [*command, "-namespace", namespace, "-address", address, "-publish-binary", publish_binary,
            "-id", cid, *(["-debug"] if debug else []), action]


def environment(events: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a shim action: `base` (ours by default) with the events endpoint."""
    return {**(os.environ if base is None else base), EVENTS_ENV: events}


def socket_path(bundle: str) -> str:
    """`<bundle>/shim.sock`, or a short stable path when that does not fit in sun_path."""
    path = os.path.join(bundle, SOCKET_NAME)
    if len(path.encode()) <= MAX_PATH:
        return path
    import hashlib

    digest = hashlib.sha256(os.path.realpath(bundle).encode()).hexdigest()[:32]
    return os.path.join(FALLBACK_DIR, f"{digest}.sock")


def group_of(bundle: str) -> str:
    """The shim group the bundle's spec names (see the module's note), "" for none or for a
    spec that cannot be read (the shim's create reports that one)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        annotations = spec.get("annotations") or {}
        for key in GROUP_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value:
                return value
    except (OSError, ValueError, AttributeError):
        pass
    return ""


def group_socket_path(root: str, namespace: str, group: str) -> str:
    """Where the shim of `group` in `namespace` listens, for the runtime state dir `root`."""
    import hashlib

    digest = hashlib.sha256(f"{namespace}\0{group}".encode()).hexdigest()[:32]
    path = os.path.join(root, ZYGOTE_DIR, f"group-{digest}.sock")
    if len(path.encode()) <= MAX_PATH:
        return path
    digest = hashlib.sha256(f"{os.path.realpath(root)}\0{namespace}\0{group}".encode()).hexdigest()[:32]
    return os.path.join(FALLBACK_DIR, f"group-{digest}.sock")


def launch_for(namespace: str, cid: str, bundle: str, events: str, debug: bool = False) -> Launch:
    launch: Launch = {"namespace": namespace, "id": cid, "bundle": bundle, "socket": socket_path(bundle),
                      "events": events, "debug": debug, "group": ""}
    group = group_of(bundle)
    root = runtime_dir(launch) if group else None
    if group and root is not None:  # a bundle laid out as no daemon's is never grouped
        launch["group"] = group
        launch["socket"] = group_socket_path(root, namespace, group)
    return launch


def address(launch: Launch) -> str:
    """The ttrpc address of the shim serving `launch` (what `start` prints)."""
    return f"unix://{launch['socket']}"


# ----- where the zygote listens ----------------------------------------------------------------------


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0"


def code_root() -> str:
    """The directory holding the `shim` and `dockyard_common` packages."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _newest_source(root: str) -> int:
    newest = 0
    for sub in _SOURCE_DIRS:
        with contextlib.suppress(OSError), os.scandir(os.path.join(root, sub)) as it:
            for entry in it:
                if entry.name.endswith(".py"):
                    newest = max(newest, entry.stat().st_mtime_ns)
    return newest


def runtime_dir(launch: Launch) -> str | None:
    """The runtime state dir the bundle lives in: `<dir>` of a bundle at <dir>/<namespace>/<id>,
    None for a bundle laid out otherwise (it is no daemon's: no zygote to share)."""
    bundle = os.path.realpath(launch["bundle"])
    ns_dir, cid = os.path.split(bundle)
    root, ns = os.path.split(ns_dir)
    if not launch["namespace"] or (ns, cid) != (launch["namespace"], launch["id"]) or root == "/":
        return None
    return root


def zygote_socket_path(launch: Launch) -> str | None:
    """The zygote socket for the runtime state dir of `launch`'s bundle (None: no zygote)."""
    root = runtime_dir(launch)
    if root is None:
        return None
    code = code_root()
    key = f"{os.path.realpath(sys.executable)}\0{code}\0{_newest_source(code)}\0{os.geteuid()}"
    path = os.path.join(root, ZYGOTE_DIR, f"zygote-{zlib.crc32(key.encode()):08x}.sock")
    if len(path.encode()) <= MAX_PATH:
        return path
    per_dir = zlib.crc32(f"{key}\0{root}".encode())
    return os.path.join(FALLBACK_DIR, f"zygote-{per_dir:08x}.sock")


# ----- the client side -----------------------------------------------------------------------------


def listen_for(launch: Launch) -> socket.socket | None:
    """The shim's listening socket, made at `launch["socket"]` (mode 0600); None when a live shim
    serves it already (a retried start, or a group whose shim runs)."""
    path = launch["socket"]
    if path.startswith(FALLBACK_DIR + "/"):
        os.makedirs(FALLBACK_DIR, mode=0o700, exist_ok=True)
    elif launch.get("group"):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        if not launch.get("group"):
            return listen(path)
        # Two containers of a pod starting at once must not each find no live shim and make
        # one: the check and the listen are one step for every group in this dir.
        import fcntl

        fd = os.open(os.path.join(os.path.dirname(path), GROUP_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return listen(path)
        finally:
            os.close(fd)
    except AlreadyServing:
        return None


def request_shim(launch: Launch, listener_fd: int, path: str) -> int:
    """Ask the zygote at `path` for a shim serving `listener_fd`; its PID, or 0 when there is no
    zygote (nothing was handed over). NoAnswer when it took the request and did not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(REQUEST_TIMEOUT)
    try:
        try:
            sock.connect(path)
            # The zygote greets a connection it accepted: without the greeting (no zygote, or one
            # exiting with us in its backlog) nothing is handed over.
            if sock.recv(64) != HELLO:
                return 0
            socket.send_fds(sock, [json.dumps(launch).encode()], [listener_fd])
        except OSError:
            return 0  # nothing was handed over
        try:
            answer = json.loads(sock.recv(65536) or b"{}")
        except (OSError, ValueError) as exc:
            raise NoAnswer(f"shim zygote {path}: {error_text(exc)}") from None
    finally:
        sock.close()
    if not answer.get("pid"):
        raise NoAnswer(f"shim zygote {path}: {answer.get('error') or 'no answer'}")
    return int(answer["pid"])


def write_bundle_file(bundle: str, name: str, text: str) -> None:
    """Atomically replace <bundle>/<name> with `text` (write a dot-file, rename; 0600, not
    fsynced: shim/state.py says why). The shim's state files and the launch contract's own."""
    tmp = os.path.join(bundle, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(bundle, name))


def record_address(launch: Launch) -> None:
    """`<bundle>/address` for a bundle that joined its group's running shim, as the zygote
    records it for a shim it forks."""
    write_bundle_file(launch["bundle"], "address", address(launch))


def start_via_zygote(launch: Launch) -> str | None:
    """Have a warm zygote fork the shim for `launch`; its address, or None when there is no zygote
    (or none for this bundle): the caller then runs the shim's `start` command. For a caller that
    must not fork (the daemon). NoAnswer as `request_shim`."""
    if not enabled():
        return None
    zpath = zygote_socket_path(launch)
    if zpath is None:
        return None
    listener = listen_for(launch)
    if listener is None:
        if launch["group"]:
            record_address(launch)
        return address(launch)
    try:
        pid = request_shim(launch, listener.fileno(), zpath)
    finally:
        listener.close()
    if not pid:
        os.unlink(launch["socket"])
        return None
    return address(launch)


# ----- the zygote's side ---------------------------------------------------------------------------


def receive_request(conn: socket.socket) -> tuple[Launch, int]:
    """Greet a client and take its request: the Launch and the listening socket's fd (owned by
    the caller). BadRequest, answered already, when it is not one."""
    conn.send(HELLO)
    data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
    if not fds:
        answer(conn, error="no listening socket attached")
        raise BadRequest("no listening socket attached")
    try:
        launch = json.loads(data)
        if not isinstance(launch, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        for fd in fds:
            os.close(fd)
        answer(conn, error=f"bad request: {exc}")
        raise BadRequest(str(exc)) from None
    return cast(Launch, launch), fds[0]


def answer(conn: socket.socket, *, pid: int = 0, error: str = "") -> None:
    conn.send(json.dumps({"pid": pid} if pid else {"error": error}).encode())
