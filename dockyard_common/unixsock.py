"""Filesystem unix sockets for `start` and the zygote, without importing the ttrpc package.

`dockyard_common.ttrpc.sockets.listen_unix` does the same, but importing it loads asyncio and protobuf
through the package; `start` must stay light (it only makes the socket and hands it over).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

# sizeof(sun_path) - 1 for the NUL: the longest filesystem path a unix socket may have.
MAX_PATH = 107


class AlreadyServing(Exception):
    """A live server accepts on the path already."""


def is_live(path: str, kind: int = socket.SOCK_STREAM) -> bool:
    """Whether a server accepts connections on the socket at `path` (a stale one refuses)."""
    probe = socket.socket(socket.AF_UNIX, kind)
    probe.setblocking(False)  # a full backlog must not block us: it means someone listens
    try:
        rc = probe.connect_ex(path)
    finally:
        probe.close()
    return rc in (0, errno.EINPROGRESS, errno.EAGAIN)


def listen(path: str, kind: int = socket.SOCK_STREAM, backlog: int = 128) -> socket.socket:
    """Listen at `path`, mode 0600 from the first moment (bound under a temporary name, listening,
    chmod'ed, renamed into place: whoever finds the path can connect). A stale socket file is
    replaced; a live one raises AlreadyServing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISSOCK(st.st_mode) and is_live(path, kind):
            raise AlreadyServing(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        os.unlink(path)
    tmp = os.path.join(os.path.dirname(path), f".s{os.getpid()}-{os.urandom(4).hex()}")
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(tmp)
        try:
            # Listening before it has its name: a connect that finds the path never gets refused
            # (a refused probe would take a live socket for a stale one).
            sock.listen(backlog)
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except BaseException:
        sock.close()
        raise
    return sock
