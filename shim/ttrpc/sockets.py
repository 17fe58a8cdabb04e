"""Unix socket plumbing for ttrpc: listening sockets, addresses, peer credentials.

These are startup-time syscalls on local paths (microseconds), done inline: the shim runs no
threads, so there is no executor to hand them to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from supervisor import errors

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_SUN_PATH_MAX = 107  # sizeof(sun_path) - 1 for the NUL


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
    if len(text.encode()) > _SUN_PATH_MAX + (1 if text.startswith("\0") else 0):
        raise errors.InvalidArgument(f"ttrpc address {address!r} is longer than a unix socket path may be")
    return text


def _is_live(path: str) -> bool:
    """Whether a server accepts connections on the socket at path (a stale one refuses)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        rc = probe.connect_ex(path)
    finally:
        probe.close()
    # EAGAIN: the backlog is full, so someone is listening.
    return rc in (0, errno.EINPROGRESS, errno.EAGAIN)


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
    try:
        st = os.lstat(text)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode) or _is_live(text):
            raise errors.AlreadyExists(f"ttrpc socket {text}")
        os.unlink(text)
    if not target.parent.is_dir():
        raise errors.NotFound(f"ttrpc socket directory {target.parent}")
    tmp = os.fspath(target.parent / f".t{secrets.token_hex(4)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(tmp)
        except OSError as exc:
            raise errors.InvalidArgument(f"ttrpc socket {text}: bind: {exc.strerror}") from exc
        try:
            os.chmod(tmp, 0o600)
            os.rename(tmp, text)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
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

