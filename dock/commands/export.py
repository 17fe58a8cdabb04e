"""dock export: a container's whole filesystem (its image and its changes) as a tar (docker export).

    dock export web > web.tar
    dock export -o web.tar web

The container's snapshot is mounted read-only here (dock/rootfs.py; it needs root) and written
with Python's tarfile: owners (numeric; the host's user names mean nothing in the container),
modes, symlinks, device nodes and hard links as they are; sockets are left out. A tar is never
written to a terminal, as Docker refuses to.

A running container changes its tree while it is read (the view of a live native snapshot is
its very directory), and may swap a directory for a symlink to a host path between two calls
of a path-based walk (tarfile.add lstats a name, then lists or opens the path again, following
a symlink put there meanwhile: the host's files went into the archive). So the walk is one of
descriptors (`TreeWriter`): each name is opened O_PATH|O_NOFOLLOW relative to its directory's
descriptor, its type is that descriptor's fstat, and a directory is listed, a file read, a
link read through that same descriptor; nothing is ever looked up by a path again. A name gone
between the listing and its opening is left out, a file that shrinks while read is padded with
zeros (the header's size was taken first), as a changing tree gives no better answer.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import secrets
import stat
import sys
import tarfile
from pathlib import Path
from typing import IO, Any

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import resolve
from dock.rootfs import container_mounts_of, mounted_readonly
from dock.tarfiles import Unkept
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import Mount


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write a container's filesystem as a tar archive")
    p.add_argument("--output", "-o", default="", metavar="FILE", help="write to FILE instead of stdout")
    containers_arg(p, "container", help="container name, id or unique id prefix")
    p.set_defaults(handler=export)


def _entry(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # numeric owners only: the host's names are not the container's
    info.mtime = int(info.mtime)  # whole seconds, as Docker's (no PAX record for every entry)
    return info


def write_tree(root: Path, out: IO[bytes]) -> None:
    """Every name under `root` (not the root itself), sorted, as a tar stream on `out`."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with Unkept.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            TreeWriter(tar).directory(top, "")
    finally:
        os.close(top)


class TreeWriter:
    """Entries of a tree under a directory descriptor, written without one path lookup that
    could follow a symlink (see the module's docstring). Hard links as tarfile.add makes them:
    a regular file's later names (same inode) are links to its first."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.inodes: dict[tuple[int, int], str] = {}

    def directory(self, dir_fd: int, prefix: str) -> None:
        for name in sorted(os.listdir(dir_fd)):
            self.entry(dir_fd, name, prefix + name)

    def entry(self, dir_fd: int, name: str, arcname: str) -> None:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return  # gone since the listing
        try:
            st = os.fstat(fd)
            info = _entry(tarfile.TarInfo(arcname))
            info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                sub = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                try:
                    self.tar.addfile(info)
                    self.directory(sub, arcname + "/")
                finally:
                    os.close(sub)
            elif stat.S_ISREG(mode):
                inode = (st.st_ino, st.st_dev)
                first = self.inodes.get(inode)
                if st.st_nlink > 1 and first is not None and first != arcname:
                    info.type, info.linkname = tarfile.LNKTYPE, first
                    self.tar.addfile(info)
                    return
                if inode[0]:
                    self.inodes[inode] = arcname
                info.type, info.size = tarfile.REGTYPE, st.st_size
                # The O_PATH descriptor reopened through /proc: the very inode fstat described.
                with open(f"/proc/self/fd/{fd}", "rb", buffering=0) as f:
                    self.tar.addfile(info, _Exactly(f, st.st_size))
            elif stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink("", dir_fd=fd)
                self.tar.addfile(info)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                info.type = (tarfile.CHRTYPE if stat.S_ISCHR(mode) else
                             tarfile.BLKTYPE if stat.S_ISBLK(mode) else tarfile.FIFOTYPE)
                if not stat.S_ISFIFO(mode):
                    info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tar.addfile(info)
            # sockets (and anything else) are left out, as tarfile.add leaves them
        finally:
            os.close(fd)


class _Exactly(io.RawIOBase):
    """`size` bytes of `f`: what it holds, then zeros if it shrank while read (a running
    container's file); never more than the header announced if it grew."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        super().__init__()
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = b""
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:  # the end of a file that shrank: zeros for the rest
                data += bytes(n - len(data))
                break
            data += more
        self.left -= n
        return data


def export_to(mounts: list[Mount], out: IO[bytes]) -> None:
    """The tree `mounts` make, as a tar on `out`. Blocking: run it in a thread."""
    with mounted_readonly(mounts) as root:
        write_tree(root, out)


def export_file(mounts: list[Mount], path: str) -> None:
    """export_to a new file at `path`: written beside it (mode 0666 less the umask, as a shell's
    redirect), renamed into place once complete, so a failure leaves no half archive."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            export_to(mounts, f)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def export(client: Client, args: argparse.Namespace) -> int:
    if not args.output and sys.stdout.isatty():  # before asking anything: a terminal gets no binary
        raise InvalidArgument("refusing to write a tar archive to a terminal: redirect the output or use -o FILE")
    c = await resolve(client, args.container)
    mounts = await container_mounts_of(client, c)
    if args.output:
        await asyncio.to_thread(export_file, mounts, args.output)
    else:
        sys.stdout.flush()
        await asyncio.to_thread(export_to, mounts, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0
