"""Blocking file-tree work for snapshotters: copy, measure, remove (volumes and the CRI image
file system measure and empty theirs with it too).

Everything here blocks; callers run it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import errno
import os
import stat

from dockyard_common.types import Usage
from supervisor import treecopy

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def disk_usage(path: str) -> Usage:
    """Allocated bytes and distinct inodes under `path` (itself included).

    Counts like containerd's `fs.DiskUsage`: st_blocks * 512 per inode, each
    hard-linked inode once. Entries vanishing mid-walk (an active snapshot in
    use) are skipped rather than failing the measurement.
    """
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [path]
    first = True
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if first:
                raise
            continue
        first = False
        ident = (st.st_dev, st.st_ino)
        if ident not in seen:
            seen.add(ident)
            size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(current) as it:
                    stack.extend(entry.path for entry in it)
            except FileNotFoundError:
                continue
    return Usage(size=size, inodes=len(seen))


def copy_tree(src: str, dst: str) -> None:
    """Copy the tree at `src` into the existing empty directory `dst`, as containerd's
    `fs.CopyDir` does: every file type (sockets too), modes, owners, xattrs, times and hard
    links within the tree (supervisor/treecopy.py, through descriptors)."""
    sfd = os.open(src, _DIR_FLAGS)
    try:
        dfd = os.open(dst, _DIR_FLAGS)
        try:
            treecopy.copy_tree(sfd, dfd, sockets=True)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def remove_tree(path: str) -> None:
    """Delete the tree at `path`, refusing to descend into anything mounted in it.

    A snapshot's directory may have become a mount's source with shared
    propagation; deleting through a mount point would destroy someone else's files.

    Works through directory descriptors (openat, unlinkat and rmdir relative to the
    directory's fd), one open at a time, walking back up through ".." checked against
    the device and inode recorded on the way down: no path longer than one name is ever
    handed to the kernel, so a tree deeper than PATH_MAX (which a layer may build one
    openat at a time) goes as easily as a flat one, without recursion or an fd per level.
    """
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(path)
        return
    fd = os.open(path, _DIR_FLAGS)
    try:
        empty(fd, path)
    finally:
        os.close(fd)
    os.rmdir(path)


def empty(dir_fd: int, name: str | None = None) -> None:
    """Remove everything inside the directory `dir_fd` (left open, and in place), as `remove_tree`
    does: never into a mount (EBUSY), no recursion. `name`: the directory's, for errors. A
    volume's seed that failed half-way is undone with it."""
    fd = os.open(".", _DIR_FLAGS, dir_fd=dir_fd)  # ours to move down and up; the caller's stays
    st = os.fstat(fd)
    idents = [(st.st_dev, st.st_ino)]  # the directories from `dir_fd` down to the current one
    names: list[str] = []
    try:
        while True:
            sub = _clear_files(fd)
            if sub is not None:
                child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                cst = os.fstat(child)
                if cst.st_dev != st.st_dev:
                    os.close(child)
                    raise OSError(errno.EBUSY, "a filesystem is mounted inside the directory being emptied", name)
                names.append(sub)
                idents.append((cst.st_dev, cst.st_ino))
                os.close(fd)
                fd = child
                continue
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            pst = os.fstat(parent)
            if (pst.st_dev, pst.st_ino) != idents[-2]:
                os.close(parent)
                raise OSError(errno.EAGAIN, "a directory was moved while its tree was being removed", name)
            os.close(fd)
            fd = parent
            idents.pop()
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)


def _clear_files(dir_fd: int) -> str | None:
    """Unlink the non-directories in `dir_fd` until a subdirectory turns up; its name, or None
    when only an empty directory is left."""
    while True:
        with os.scandir(dir_fd) as it:  # a dup of the fd; closing the iterator rewinds it
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    return entry.name
                os.unlink(entry.name, dir_fd=dir_fd)
        # Names unlinked while reading may hide others from that same pass: look once more.
        with os.scandir(dir_fd) as it:
            if next(it, None) is None:
                return None


def _same_entry(st: os.stat_result, path: str, lower: os.stat_result, lower_path: str) -> bool:
    if (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_rdev) != (
        lower.st_mode,
        lower.st_uid,
        lower.st_gid,
        lower.st_size,
        lower.st_mtime_ns,
        lower.st_rdev,
    ):
        return False
    return not stat.S_ISLNK(st.st_mode) or os.readlink(path) == os.readlink(lower_path)


def diff_usage(path: str, lower: str) -> Usage:
    """Usage of what in the tree at `path` is new or changed compared to the tree at `lower`.

    For a full copy of a parent (the native snapshotter), this is the snapshot's
    own share, as continuity's `fs.DiffUsage` computes it: an entry whose type,
    mode, owner, size, mtime, device and link target all equal the parent's entry
    at the same path is the parent's and is not counted.
    """
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [""]
    while stack:
        rel = stack.pop()
        current = os.path.join(path, rel) if rel else path
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not rel:
                raise
            continue
        lower_path = os.path.join(lower, rel) if rel else lower
        try:
            unchanged = _same_entry(st, current, os.lstat(lower_path), lower_path)
        except OSError:
            unchanged = False
        ident = (st.st_dev, st.st_ino)
        if not unchanged and ident not in seen:
            seen.add(ident)
            size += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(current) as it:
                    stack.extend(os.path.join(rel, entry.name) for entry in it)
            except FileNotFoundError:
                continue
    return Usage(size=size, inodes=len(seen))
