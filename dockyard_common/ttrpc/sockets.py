"""Unix socket plumbing for ttrpc: listening sockets, addresses, peer credentials.

These are startup-time syscalls on local paths (microseconds), done inline: the shim runs no
threads, so there is no executor to hand them to.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import errors, unixsock

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """SO_PEERCRED: who connected (as of connect(2))."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def same_user_or_root(cred: PeerCredentials) -> bool:
    """ttrpc's UnixSocketRequireSameUser, relaxed to also admit root (the daemon)."""
    return cred.uid in (os.geteuid(), 0)


def parse_address(address: str | os.PathLike[str]) -> str:
    """The sockaddr_un path for a ttrpc address.

    Accepts what shims print and containerd stores: `unix:///path` (a filesystem socket), a
    name starting with NUL or `@` (an abstract socket, as older shims use), or a plain path.
    The result for an abstract socket starts with NUL, as Python's socket module expects.
    """
    text = os.fspath(address)
    if text.startswith("unix://"):
        text = text[len("unix://") :]
    if text.startswith("@"):
        text = "\0" + text[1:]
    if not text or text == "\0":
        raise errors.InvalidArgument(f"ttrpc address {address!r} is empty")
    if len(text.encode()) > unixsock.MAX_PATH + (1 if text.startswith("\0") else 0):
        raise errors.InvalidArgument(f"ttrpc address {address!r} is longer than a unix socket path may be")
    return text


def listen_unix(path: str | os.PathLike[str], backlog: int = 128) -> socket.socket:
    """A listening, non-blocking unix socket at a filesystem path, mode 0600 from the start.

    It is bound under a hidden temporary name, chmod'ed, then renamed into place, so no client
    can ever connect through looser permissions (a umask change would be process-wide). A stale
    socket left at the path by a dead server is replaced; a live one is AlreadyExists.
    """
    target = Path(path)
    text = os.fspath(target)
    if not target.is_absolute():
        raise errors.InvalidArgument(f"ttrpc socket path {text!r} must be absolute")
    parse_address(text)  # length check with a clear error
    if not target.parent.is_dir():
        raise errors.NotFound(f"ttrpc socket directory {target.parent}")
    try:
        sock = unixsock.listen(text, backlog=backlog)  # the one bind → chmod → rename
    except (unixsock.AlreadyServing, FileExistsError):
        raise errors.AlreadyExists(f"ttrpc socket {text}") from None
    except OSError as exc:
        raise errors.InvalidArgument(f"ttrpc socket {text}: bind: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def adopt_listener(fd: int) -> socket.socket:
    """Wrap an inherited listening socket (a shim's fd 3, say); the fd now belongs to it."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise errors.InvalidArgument(f"ttrpc listener fd {fd}: {exc.strerror}") from exc
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise errors.InvalidArgument(f"ttrpc listener fd {fd} is not a unix stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise errors.InvalidArgument(f"ttrpc listener fd {fd} is not listening")
        sock.setblocking(False)
    except BaseException:
        sock.detach()  # leave the caller's fd as it was on a refusal
        raise
    return sock

