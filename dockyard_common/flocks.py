"""Whether another process holds an exclusive flock(2) on a file: the writer of a container
log (`writer.lock`), the create that claimed a cgroup. Shared by the shim and the daemon."""

from __future__ import annotations

import fcntl
import os


def held_exclusively(path: str | os.PathLike[str], flags: int = 0) -> bool:
    """True when an exclusive flock on `path` refuses our shared one; False when it does not
    exist. Ours goes with the fd at once, so a probe never holds the file for long (a waiter
    for the exclusive lock may see it for an instant). `flags`: extra open(2) flags
    (O_DIRECTORY for a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock
    return False
