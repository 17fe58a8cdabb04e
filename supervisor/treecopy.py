"""Copying files and directory trees through descriptors: the one copier of the daemon.

Its users: the native snapshotter copies a parent snapshot's tree (`snapshotter/tree.py`), a
volume is seeded from an image's content at its mount path (`volumes/store.py`, Docker's
copy-up), and COPY in a build walks its own sources (`build/copy.py`: its --chown, --chmod, no
xattrs) but copies bytes and sets attributes with `copy_bytes` and `set_attributes`.

Both trees are addressed only through directory descriptors and `*at` calls with O_NOFOLLOW,
and every new entry is made with O_EXCL/mkdir/symlink/mknod (which fail on anything already
there): a symlink in the source is copied as a link, never followed, and nothing put in the
target meanwhile can redirect a write outside it.

Kept, as containerd's `fs.CopyDir` keeps them: owners, permission bits (setuid & co. too: chown
before chmod, since chown clears them, and file capabilities, which chown drops too, set after
it), modification and access times, extended attributes of every entry (symlinks' own and
device nodes' too; ones the target file system refuses are skipped, as cp -a does), hard links
within the tree (of any non-directory), symlinks, device nodes, FIFOs; sockets when asked (the
snapshotter copies them as containerd does; a volume's seed skips them, as tar does: a socket
file means nothing without its listener).

The walk holds two descriptors per directory level (source and copy) and no Python recursion:
a tree deeper than half the open-file limit fails with EMFILE (real images are far shallower).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 30
_NO_RANGE_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
# The target file system cannot hold these (or this one) extended attributes: skip, as cp -a does.
_XATTR_SKIPPED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)


@dataclass
class CopyStats:
    entries: int = 0
    bytes: int = 0
    # (st_dev, st_ino) of a source entry with several links -> its first copy, relative to the
    # target root, so later names of it become hard links too.
    links: dict[tuple[int, int], str] = field(default_factory=dict)


@dataclass
class _Level:
    """One directory being copied: its descriptors, its stat, the names left to copy."""

    src: int
    dst: int
    rel: str
    st: os.stat_result
    names: list[str]
    owned: bool = True  # the caller's root descriptors are not ours to close


def copy_tree(src_fd: int, dst_fd: int, *, sockets: bool = False) -> CopyStats:
    """Copy the contents of directory `src_fd` into directory `dst_fd` (expected empty: an entry
    already there is FileExistsError), then give the target directory the source's owner, mode,
    xattrs and times. `sockets`: copy socket files too (else they are skipped)."""
    stats = CopyStats()
    stack = [_Level(src_fd, dst_fd, "", os.fstat(src_fd), _names(src_fd), owned=False)]
    try:
        while stack:
            top = stack[-1]
            if not top.names:
                # After the children: their copies touched the directory's mtime.
                copy_attributes(top.src, top.dst, top.st)
                stack.pop()
                _close(top)
                continue
            name = top.names.pop()
            child = _copy_entry(top, name, dst_fd, stats, sockets)
            if child is not None:
                stack.append(child)
    finally:
        for level in stack:
            _close(level)
    return stats


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted((e.name for e in entries), reverse=True)  # popped from the end: in name order


def _close(level: _Level) -> None:
    if level.owned:
        os.close(level.dst)
        os.close(level.src)


def _copy_entry(parent: _Level, name: str, root_fd: int, stats: CopyStats, sockets: bool) -> _Level | None:
    """Copy one entry of `parent`; a directory is made and returned, for the walk to fill."""
    st = os.lstat(name, dir_fd=parent.src)
    mode = st.st_mode
    path = f"{parent.rel}/{name}" if parent.rel else name
    if stat.S_ISDIR(mode):
        os.mkdir(name, 0o700, dir_fd=parent.dst)
        src = os.open(name, _DIR, dir_fd=parent.src)
        try:
            dst = os.open(name, _DIR, dir_fd=parent.dst)
        except BaseException:
            os.close(src)
            raise
        stats.entries += 1
        try:
            return _Level(src, dst, path, st, _names(src))
        except BaseException:
            os.close(dst)
            os.close(src)
            raise
    if stat.S_ISSOCK(mode) and not sockets:
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        raise OSError(errno.EINVAL, f"cannot copy a file of mode {mode:o}", path)
    stats.entries += 1
    ident = (st.st_dev, st.st_ino)
    first = stats.links.get(ident) if st.st_nlink > 1 else None
    if first is not None:
        os.link(first, name, src_dir_fd=root_fd, dst_dir_fd=parent.dst, follow_symlinks=False)
        return None
    if stat.S_ISREG(mode):
        stats.bytes += _copy_file(parent.src, parent.dst, name, st)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=parent.src), name, dir_fd=parent.dst)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=parent.dst, follow_symlinks=False)
        # The link's own xattrs (lgetxattr/lsetxattr through the parents' /proc names).
        copy_xattrs(f"/proc/self/fd/{parent.src}/{name}", f"/proc/self/fd/{parent.dst}/{name}", follow=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent.dst, follow_symlinks=False)
    else:
        _copy_node(parent.src, parent.dst, name, st)
    if st.st_nlink > 1:
        stats.links[ident] = path
    return None


def _copy_file(src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> int:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        dst = os.open(name, _CREATE, 0o600, dir_fd=dst_dir)
        try:
            done = copy_bytes(src, dst, st.st_size)
            copy_attributes(src, dst, st)
            return done
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_node(src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
    """A device node, FIFO or socket: made anew (never opened: that could block or touch a device),
    its attributes set through O_PATH descriptors' /proc names: never a path someone could swap."""
    os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dst_dir)
    src = os.open(name, _PATH, dir_fd=src_dir)
    try:
        dst = os.open(name, _PATH, dir_fd=dst_dir)
        try:
            copy_attributes(f"/proc/self/fd/{src}", f"/proc/self/fd/{dst}", st)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def copy_bytes(src: int, dst: int, size: int) -> int:
    """Copy up to `size` bytes from the offset of `src` to that of `dst`, in the kernel:
    copy_file_range (reflinks where the file system has them), else sendfile (copy_file_range
    refuses some pairs of file systems, e.g. an overlay snapshot and a volume's). The bytes copied:
    fewer when the source shrank meanwhile."""
    left, ranged = size, True
    while left > 0:
        if ranged:
            try:
                done = os.copy_file_range(src, dst, min(left, _CHUNK))
            except OSError as exc:
                if exc.errno not in _NO_RANGE_COPY:
                    raise
                ranged = False
                continue
        else:
            done = os.sendfile(dst, src, None, min(left, _CHUNK))
        if done == 0:
            break
        left -= done
    return size - left


def copy_attributes(src: int | str, dst: int | str, st: os.stat_result) -> None:
    """`st`'s owner, mode and times, and `src`'s xattrs, onto `dst`: open descriptors, or the
    /proc/self/fd names of O_PATH ones."""
    set_attributes(dst, st)
    copy_xattrs(src, dst)  # after chown, which drops file capabilities; setxattr leaves mtime alone


def set_attributes(dst: int | str, st: os.stat_result, *, owner: tuple[int, int] | None = None,
                   mode: int | None = None) -> None:
    """Owner, then permission bits (chown clears setuid/setgid), then access and modification
    times of `st` on `dst` (a descriptor, or a name that is followed: /proc/self/fd/N of an O_PATH
    one). `owner` and `mode` replace the source's (a build's --chown and --chmod)."""
    uid, gid = owner if owner is not None else (st.st_uid, st.st_gid)
    perm = mode if mode is not None else stat.S_IMODE(st.st_mode)
    if isinstance(dst, int):
        os.fchown(dst, uid, gid)
        os.fchmod(dst, perm)
    else:
        os.chown(dst, uid, gid)
        os.chmod(dst, perm)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_xattrs(src: int | str, dst: int | str, follow: bool = True) -> None:
    """Every extended attribute of `src` onto `dst`; those the target refuses are skipped (its
    file system has no xattrs, or no such namespace; a security.* label it will not take, as
    containerd's native snapshotter ignores: moby/buildkit#1189)."""
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _XATTR_SKIPPED:
            return
        raise
    for key in names:
        try:
            os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=follow), follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in (*_XATTR_SKIPPED, errno.ENODATA) and not key.startswith("security."):
                raise


def is_empty(dir_fd: int) -> bool:
    """Whether the directory holds nothing: what `copy_tree` expects of its target."""
    with os.scandir(dir_fd) as entries:
        return next(entries, None) is None
