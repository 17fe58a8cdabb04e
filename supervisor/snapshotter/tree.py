"""Blocking file-tree work for snapshotters: copy, measure, remove.

Everything here blocks; snapshotters run it in a worker thread, never on the
event loop.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from dockyard_common.types import Usage

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 30


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


def _copy_data(src: str, dst: str) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            # copy_file_range lets the filesystem share extents (reflinks) or at
            # least copy in the kernel; fall back to read/write across filesystems.
            try:
                while os.copy_file_range(sfd, dfd, _COPY_CHUNK):
                    pass
                return
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                os.lseek(sfd, 0, os.SEEK_SET)
                os.ftruncate(dfd, 0)
                os.lseek(dfd, 0, os.SEEK_SET)
            while chunk := os.read(sfd, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dfd, view) :]
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as e:
            # security.* (SELinux labels, ...) often cannot be set; containerd's native
            # snapshotter ignores those failures too (moby/buildkit#1189).
            if name.startswith("security.") or e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                log.debug("cannot copy xattr %s of %s: %s", name, src, e)
                continue
            raise


def _copy_metadata(src: str, dst: str, st: os.stat_result) -> None:
    # chown first: it clears setuid/setgid bits and security.capability, which
    # chmod and the xattr copy then restore.
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)
    if not stat.S_ISDIR(st.st_mode):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dst: str) -> None:
    """Copy the tree at `src` into the existing empty directory `dst`.

    Preserves file types (regular, directory, symlink, device, fifo, socket),
    modes, owners, xattrs, timestamps and hard links (within the tree).
    """
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    stack = [(src, dst)]
    while stack:
        s, d = stack.pop()
        st = os.lstat(s)
        mode = st.st_mode
        if s != src:
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                first = links.get((st.st_dev, st.st_ino))
                if first is not None:
                    os.link(first, d, follow_symlinks=False)
                    continue
                links[(st.st_dev, st.st_ino)] = d
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
            elif stat.S_ISREG(mode):
                _copy_data(s, d)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                os.mknod(d, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            else:
                raise OSError(errno.EINVAL, f"cannot copy file of mode {mode:o}", s)
        elif not stat.S_ISDIR(mode):
            raise NotADirectoryError(errno.ENOTDIR, "copy source is not a directory", s)
        _copy_metadata(s, d, st)
        if stat.S_ISDIR(mode):
            dirs.append((d, st))
            with os.scandir(s) as it:
                stack.extend((entry.path, os.path.join(d, entry.name)) for entry in it)
    # Directory times last: creating their entries touched them.
    for d, st in reversed(dirs):
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
    st = os.fstat(fd)
    idents = [(st.st_dev, st.st_ino)]  # the directories from `path` down to the current one
    names: list[str] = []
    try:
        while True:
            sub = _clear_files(fd)
            if sub is not None:
                child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                cst = os.fstat(child)
                if cst.st_dev != st.st_dev:
                    os.close(child)
                    raise OSError(errno.EBUSY, "a filesystem is mounted inside the snapshot directory", path)
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
                raise OSError(errno.EAGAIN, "a directory was moved while its tree was being removed", path)
            os.close(fd)
            fd = parent
            idents.pop()
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


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
