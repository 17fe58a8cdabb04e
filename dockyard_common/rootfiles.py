"""Reading a small text file of an untrusted root filesystem (an image's /etc/passwd, /etc/group)
as the container would see it, without letting the image choose what the reader touches.

An image decides what its /etc/passwd is: a symlink out (`-> /etc/passwd`, `-> ../../../etc`),
a FIFO (an open() that never returns), a character device (`/dev/zero`: a read that never ends),
a 1 GB file. So the name is resolved inside the root (dockyard_common/rootpath.py: symlinks as
if the root were `/`), the leaf is looked at through an O_PATH descriptor before anything opens
it for reading (opening a device can have effects of its own), only a regular file is read, and
never more than `limit` bytes.

    text = read_in_root(rootfs, "/etc/passwd")   # None: the image has none (or a directory there)
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dockyard_common.errors import InvalidArgument
from dockyard_common.rootpath import MAX_SYMLINKS, NotADirectory, ResolvedDir, RootDir

MAX_TEXT = 16 << 20  # an /etc/passwd of 16 MiB is already absurd; more is an attack
_LEAF = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def read_in_root(root: Path | str, name: str, *, limit: int = MAX_TEXT, what: str = "the image's") -> str | None:
    """The text of `name` (absolute in the root), undecodable bytes replaced; None when the root
    has nothing (or a directory) there. InvalidArgument, naming the file, for a FIFO, device or
    socket, a file larger than `limit`, or a symlink loop."""
    label = f"{what} {name}"
    with RootDir(root) as rd:
        fd = _open_leaf(rd, name, label)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                return None
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{label} is not a regular file ({_kind(st.st_mode)})")
            if st.st_size > limit:
                raise InvalidArgument(f"{label} is {st.st_size} bytes, more than the limit of {limit}")
            # O_NONBLOCK: belt and braces, should the file turn into a FIFO between the checks
            data_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(fd)
        with os.fdopen(data_fd, "rb") as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidArgument(f"{label} is more than the limit of {limit} bytes")
    return data.decode("utf-8", "replace")


def _open_leaf(rd: RootDir, name: str, label: str) -> int | None:
    """An O_PATH descriptor of what `name` leads to (its symlinks followed inside the root)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    base: ResolvedDir | None = None
    try:
        for _ in range(MAX_SYMLINKS + 1):
            if not parts or parts[-1] == "..":
                return None  # the root or a directory: never the file asked for
            try:
                parent = rd.resolve_dir(parts[:-1], base=base)
            except NotADirectory:
                return None  # a file on the way: as ENOTDIR, nothing there
            except InvalidArgument as exc:  # a symlink loop or an empty symlink on the way
                raise InvalidArgument(f"{label}: {exc.message}") from None
            if base is not None:
                os.close(base.fd)
            base = parent
            if parent is None:
                return None
            try:
                fd = os.open(parts[-1], _LEAF, dir_fd=parent.fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None
                raise InvalidArgument(f"{label}: {exc.strerror}") from None
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
            target = os.readlink(parts[-1], dir_fd=parent.fd)
            if not target:
                return None
            if target.startswith("/"):  # absolute: from the root we play, not the host's
                os.close(parent.fd)
                base = None
            parts = [p for p in target.split("/") if p not in ("", ".")]
        raise InvalidArgument(f"{label}: too many levels of symbolic links")
    finally:
        if base is not None:
            os.close(base.fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
