"""Write the changes between two filesystem trees as an OCI layer tar (Diff.Diff), byte for
byte as containerd writes it.

Contract
--------
- `write_diff(lower, upper, out, whiteout_mtime=None)`: `lower` and `upper` are two full
  trees (mounted views of the parent and of the snapshot). Writes an uncompressed tar of
  what changed from `lower` to `upper` to `out`. For the same two trees the bytes equal
  those of containerd 1.6's walking differ (`archive.WriteDiff`), so the diff ID matches.

What containerd writes, and so do we (facts of its continuity double walk, ChangeWriter and
Go's archive/tar; see supervisor/archive/tarwrite.py for the header encoding):
- Both trees are walked in one merged order: names sorted bytewise within a directory, a
  directory before its contents. A name only in `lower` is deleted: `.wh.<name>` (and its
  contents are not visited); only in `upper` is added (all its contents too).
- A name in both is unchanged when it is the same inode, or type+mode, owner, device number
  and `security.capability` are equal and (not for directories) size and whole-second
  mtime are equal, and then: sub-second parts both zero -> the symlink targets, or the
  contents of non-empty files, decide; else equal sub-second parts -> unchanged. Directory
  mtimes and any other xattr are never a change.
- Entries: name relative, directories end in "/"; mode = permission, setuid/setgid/sticky
  bits; uid/gid numeric, no user or group names; mtime truncated to whole seconds; no
  access or change times; device numbers; size for regular files only. Only the
  `security.capability` xattr is carried (as PAX SCHILY.xattr.security.capability).
  Sockets are left out.
- A changed entry's ancestors that were not written yet come first, with their current
  metadata, outermost first (never the root itself).
- Whiteouts are empty regular files, mode 0, owner 0, with one mtime for the whole layer:
  the time the diff started, rounded to the second (pass `whiteout_mtime` to fix it, as
  SOURCE_DATE_EPOCH does in newer containerd). Nothing else is time-dependent.
- `mtime_clamp` (a reproducible build's SOURCE_DATE_EPOCH): every entry's mtime is at most it,
  and whiteouts get it (buildkit's rewrite-timestamp); the trees are not touched.
- Opaque directories are never marked with `.wh..wh..opq`: a directory emptied and reused
  shows as one whiteout per name it lost.
- Hard links (non-directories with more than one link, keyed by inode number): the first
  changed name is written as the file, later names as links to it; unchanged names met
  before it are written as links right after it.
- The archive ends with two zero blocks: an empty change is exactly 1024 bytes.

Names a layer reserves: an entry whose name starts with `.wh.` is a whiteout in a layer (applied,
`.wh.x` deletes x and `.wh..wh..opq` empties its directory), so a tree that holds such a name
itself (a container's `touch /.wh.bin`, a COPY of a context file so named) has no layer that
means what it holds: writing it is FailedPrecondition naming the path, checked on every name the
walk writes (the deletions' own whiteouts aside).

The walk is one of descriptors, never of paths: `upper` may be a running container's live tree
(a native snapshot's view is its very directory), whose processes can swap a directory for a
symlink to a host directory, or a file for a device node, at any moment (renameat2
RENAME_EXCHANGE in a loop). Each directory is opened O_DIRECTORY|O_NOFOLLOW relative to its
parent's descriptor and listed through it; each name of `upper` is opened O_PATH|O_NOFOLLOW
under it, and that descriptor's fstat is the entry (its type decides, never a second lookup),
its symlink target, `security.capability` and contents are read through it (contents by
reopening it through /proc/self/fd, only once fstat said regular file: a device or FIFO is never
opened), and a directory is descended through it. Names of `lower` are lstat'ed under their
directory's descriptor, and opened (O_PATH|O_NOFOLLOW, or O_DIRECTORY|O_NOFOLLOW) only when
their contents or children are compared, the opened inode checked against that lstat: one that
differs counts as changed (so the `upper` side is written). A name gone between the listing and
its opening is as if it had not been listed; a name whose type changed is what its descriptor
says. No symlink is ever followed, so nothing outside the two trees is read, however they
change meanwhile; on still trees the bytes are those of the path walk containerd does. At most
`_OPEN_LEVELS` directory descriptors per tree stay open (and the roots'): deeper walks close the
outer ones and reopen them on the way back, as `..` of the child or else name by name from the
nearest one open, each checked to be the same directory (one no longer found so has moved: the
rest of it is left out), so no depth exhausts the descriptors.

Errors: a missing tree is NotFound; a name whose path in the tree is past PATH_MAX is OSError
ENAMETOOLONG (containerd's walk cannot name it either; it also bounds the depth); a file that
changes size while it is read is InvalidArgument; other I/O errors propagate as OSError naming
the path in `upper` they met at (the caller owns `out` and the trees).

Example::

    with open(tmp, "wb") as f:
        write_diff(Path(parent_view), Path(snapshot_view), f)
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from dockyard_common.errors import FailedPrecondition, NotFound
from supervisor.archive.apply import WHITEOUT_PREFIX
from supervisor.archive.tarwrite import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarHeader,
    TarWriter,
)

CAPABILITY_XATTR = "security.capability"
_PAX_CAPABILITY = "SCHILY.xattr." + CAPABILITY_XATTR
_WHITEOUT = os.fsencode(WHITEOUT_PREFIX)
_COMPARE_CHUNK = 1 << 16
_NS = 1_000_000_000

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_MAX = 4096  # with the terminating NUL, as the kernel counts
_OPEN_LEVELS = 64  # directory descriptors kept open per tree (see the module docstring)
_LOWER, _UPPER, _CHANGED = 0, 1, 2
_CLOSED = -1  # a frame's directory in that tree, its descriptor closed for now (the window)


class Change(enum.Enum):
    ADD = "add"
    MODIFY = "modify"
    UNMODIFIED = "unmodified"  # only reported for hard-linked files, whose other names may change


def write_diff(lower: Path, upper: Path, out: BinaryIO, *, whiteout_mtime: int | None = None,
               mtime_clamp: int | None = None, changed: Path | None = None) -> None:
    """Write the changes from the full tree `lower` to the full tree `upper` to `out`.

    `changed`: the overlay upperdir that made `upper` from `lower`. Every path that differs has
    an entry there (a copy-up, a new entry or a whiteout), so the walk skips what is not in it
    instead of comparing both sides: the cost follows the change, not the tree. The bytes may
    then differ from containerd's (a copied-up directory whose entries came and went is written
    although the comparison would call it unchanged): for our own builds, never for Diff.Diff."""
    _require_dir(lower)
    _require_dir(upper)
    if whiteout_mtime is None and mtime_clamp is not None:
        whiteout_mtime = mtime_clamp
    if whiteout_mtime is None:
        now = time.time_ns()
        whiteout_mtime = now // _NS + (1 if now % _NS >= _NS // 2 else 0)  # Go's Round(time.Second)
    upper_b = os.fsencode(upper)
    walk = _Walk(os.fsencode(lower), upper_b, os.fsencode(changed) if changed is not None else None)
    try:
        writer = _ChangeWriter(TarWriter(out), whiteout_mtime, mtime_clamp)
        for kind, rel, node in walk:
            try:
                if kind is None or node is None:
                    writer.delete(rel, walk.dirs)
                else:
                    writer.change(kind, rel, node, walk.dirs)
            except OSError as e:
                raise _named(e, upper_b, rel) from None
        writer.close()
    finally:
        walk.close()


# -- one name, read through its descriptor ------------------------------------------------------


class _Node:
    """A name of `upper`, opened O_PATH|O_NOFOLLOW under its directory's descriptor: its stat is
    that descriptor's, and its target, capability and contents are read through it."""

    __slots__ = ("_capability", "_read", "dir_fd", "fd", "st")

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd  # -1 once closed
        self.st = st
        self.dir_fd: int | None = None  # a directory's O_RDONLY descriptor, opened to walk it
        self._capability: bytes | None = None
        self._read = False

    @staticmethod
    def open(dir_fd: int, name: bytes) -> _Node | None:
        """The entry `name` under `dir_fd`; None if it is gone (since the listing)."""
        try:
            fd = os.open(name, _O_PATH, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            return _Node(fd, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise

    def capability(self) -> bytes | None:
        if not self._read:
            if self.dir_fd is not None:
                self._capability = _getxattr(self.dir_fd)
            else:
                # An O_PATH descriptor carries no xattr calls; its /proc link is the very inode
                # (a symlink's too: the magic link is not followed further).
                self._capability = _getxattr(_proc(self.fd), follow=True)
            self._read = True
        return self._capability

    def readlink(self) -> bytes:
        return os.readlink(b"", dir_fd=self.fd)

    def open_dir(self) -> int:
        """This directory, opened for listing (the inode fstat described: through the O_PATH fd)."""
        if self.dir_fd is None:
            self.dir_fd = os.open(b".", _O_DIR, dir_fd=self.fd)
        return self.dir_fd

    def reopen(self) -> int:
        """This regular file opened for reading (the inode fstat described, through /proc); its
        capability is read through it, if it was not yet (cheaper than through /proc)."""
        fd = _reopen(self.fd)
        if not self._read:
            try:
                self._capability, self._read = _getxattr(fd), True
            except BaseException:
                os.close(fd)
                raise
        return fd

    def open_file(self) -> BinaryIO:
        """This regular file's contents, unbuffered (each read one read(2) of the size asked)."""
        return open(self.reopen(), "rb", buffering=0)

    def close(self) -> None:
        """Close the descriptors; the stat and a capability already read stay."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        # dir_fd is handed to the frame that walks the directory (see _Walk._entry).
        self.dir_fd = None


def _proc(fd: int) -> bytes:
    return b"/proc/self/fd/%d" % fd


_proc_fd = -1  # this process' /proc/self/fd, opened O_PATH once (a lookup of one name, not four, per file)
_proc_fd_lock = threading.Lock()


def _reopen(path_fd: int) -> int:
    """An O_PATH descriptor of a regular file, reopened for reading through /proc/self/fd: the
    same inode, whatever its name is now (a device or FIFO in its place is never opened)."""
    global _proc_fd
    if _proc_fd < 0:
        with _proc_fd_lock:
            if _proc_fd < 0:
                _proc_fd = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return os.open(b"%d" % path_fd, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=_proc_fd)


def _forget_proc_fd() -> None:
    """In a forked child: that descriptor is the parent's /proc/<pid>/fd, not the child's."""
    global _proc_fd
    if _proc_fd >= 0:
        os.close(_proc_fd)
        _proc_fd = -1


os.register_at_fork(after_in_child=_forget_proc_fd)


def _named(e: OSError, root: bytes, rel: bytes) -> OSError:
    """`e` naming the path in the tree `root` it was met at, not a name under a descriptor or a
    /proc link (which would mean nothing to whoever reads the error)."""
    return type(e)(e.errno, e.strerror, os.path.join(root, rel))


def _names(dir_fd: int) -> list[bytes]:
    """The names in the directory open as `dir_fd` (its /proc link: names as bytes)."""
    return os.listdir(_proc(dir_fd))


def _lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_dir_checked(dir_fd: int, name: bytes, same: tuple[int, int] | None) -> tuple[int, os.stat_result] | None:
    """The directory `name` under `dir_fd`, never through a symlink, if it is still the inode
    `same` (st_dev, st_ino) names (any directory when `same` is None); else None."""
    try:
        fd = os.open(name, _O_DIR, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink now
            return None
        raise
    try:
        now = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if same is not None and (now.st_dev, now.st_ino) != same:
        os.close(fd)
        return None
    return fd, now


# -- the walk: what changed ---------------------------------------------------------------------

# (kind, relative name, the upper entry); kind None = deleted (no entry)
_Found = tuple[Change | None, bytes, _Node | None]


class _Frame:
    """A directory being walked: per tree (lower, upper, changed) its descriptor (None: not in
    that tree, _CLOSED: closed for now) and identity, and its upper entry (stat, capability)."""

    __slots__ = ("fds", "ids", "lost", "node", "rel")

    def __init__(self, rel: bytes, node: _Node | None) -> None:
        self.rel = rel
        self.fds: list[int | None] = [None, None, None]
        self.ids: list[tuple[int, int]] = [(0, 0)] * 3
        self.node = node
        self.lost = False  # a directory that moved while it was walked: the rest is left out

    def set(self, tree: int, fd: int, st: os.stat_result) -> None:
        self.fds[tree] = fd
        self.ids[tree] = (st.st_dev, st.st_ino)

    def fd(self, tree: int) -> int:
        fd = self.fds[tree]
        assert fd is not None and _is_open(fd), (self.rel, tree, fd)
        return fd

    def close(self) -> None:
        for i, fd in enumerate(self.fds):
            if fd is not None and _is_open(fd):
                os.close(fd)
                self.fds[i] = _CLOSED


def _is_open(fd: int | None) -> bool:
    return fd is not None and fd >= 0


class _Walk:
    """Both trees in merged walk order, by descriptors (the module docstring). A stack of
    frames, not recursion: trees may be deep. `dirs`: the upper entries of the directories
    above the entry just yielded, outermost first (what the writer writes as its parents)."""

    def __init__(self, lower: bytes, upper: bytes, changed: bytes | None) -> None:
        self._upper = upper
        self._frames: list[_Frame] = []
        self._gens: list[Generator[_Found | _Frame, None, None]] = []
        self.dirs: Sequence[_Node] = _Ancestors(self._frames)
        root = _Frame(b"", None)
        self._frames.append(root)
        try:
            for tree, path in enumerate((lower, upper, changed)):
                if path is not None:  # the roots are the caller's (mount points): followed
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    root.set(tree, fd, os.fstat(fd))
        except BaseException:
            root.close()
            raise
        self._gens.append(self._directory(root))

    def __iter__(self) -> Iterator[_Found]:
        while self._gens:
            item = next(self._gens[-1], None)
            if item is None:
                self._gens.pop()
                self._pop()
            elif isinstance(item, _Frame):
                self._push(item)
            else:
                yield item

    def close(self) -> None:
        while self._gens:
            self._gens.pop().close()  # closes the entry it held (its finally)
        while self._frames:
            self._frames.pop().close()

    def _push(self, frame: _Frame) -> None:
        self._frames.append(frame)
        self._gens.append(self._directory(frame))
        # Within each tree, the frames holding a directory of it are a prefix of the stack:
        # keep the innermost _OPEN_LEVELS of them open, and the root's.
        outer = len(self._frames) - 1 - _OPEN_LEVELS
        if outer > 0:
            far = self._frames[outer]
            for tree in range(3):
                fd = far.fds[tree]
                if frame.fds[tree] is not None and fd is not None and _is_open(fd):
                    os.close(fd)
                    far.fds[tree] = _CLOSED

    def _pop(self) -> None:
        done = self._frames.pop()
        try:
            if self._frames:
                for tree in range(3):
                    if self._frames[-1].fds[tree] == _CLOSED:
                        self._reopen(tree, done.fds[tree])
        finally:
            done.close()

    def _reopen(self, tree: int, child_fd: int | None) -> None:
        """Reopen the top frame's directory in `tree`, whose descriptor the window closed: the
        child's `..` if that is still the same directory (`..` is never a symlink), else name by
        name down from the innermost directory still open, each the directory it was. If it
        cannot be reached so (it moved), the rest of it is left out."""
        at = len(self._frames) - 1
        parent = self._frames[at]
        if _is_open(child_fd):
            assert child_fd is not None
            opened = _open_dir_checked(child_fd, b"..", parent.ids[tree])
            if opened is not None:
                parent.fds[tree] = opened[0]
                return
        base = at - 1
        while base > 0 and not _is_open(self._frames[base].fds[tree]):  # the root's stays open
            base -= 1
        fd, owned = self._frames[base].fd(tree), False
        for frame in self._frames[base + 1:at + 1]:
            step = _open_dir_checked(fd, frame.rel.rpartition(b"/")[2], frame.ids[tree])
            if owned:
                os.close(fd)
            if step is None:
                parent.lost = True
                return
            fd, owned = step[0], True
        parent.fds[tree] = fd

    def _directory(self, frame: _Frame) -> Generator[_Found | _Frame, None, None]:
        """The changes of one directory's entries; a subdirectory to walk next is yielded as its
        frame (its descriptors open), before the next sibling."""
        lfd = frame.fds[_LOWER]
        try:
            lower_names = set(_names(lfd)) if lfd is not None else set()
            upper_names = set(_names(frame.fd(_UPPER)))
        except OSError as e:
            raise _named(e, self._upper, frame.rel) from None
        for name in sorted(lower_names | upper_names):
            if frame.lost:
                return
            child = frame.rel + b"/" + name if frame.rel else name
            try:
                if len(child) + 2 > _PATH_MAX:  # "/" + child + NUL
                    raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
                yield from self._entry(frame, name, child, name in lower_names, name in upper_names)
            except OSError as e:
                raise _named(e, self._upper, child) from None

    def _entry(self, frame: _Frame, name: bytes, child: bytes, in_lower: bool,
               in_upper: bool) -> Iterator[_Found | _Frame]:
        if not in_upper:
            yield None, child, None  # the contents of a deleted directory are not visited
            return
        cfd = frame.fds[_CHANGED]
        if cfd is not None and in_lower and _lstat(frame.fd(_CHANGED), name) is None:
            return  # untouched by the step: the lower's entry and all below it
        node = _Node.open(frame.fd(_UPPER), name)
        if node is None:  # gone since the listing: as if it had not been listed
            if in_lower:
                yield None, child, None
            return
        sub: _Frame | None = None
        try:
            lst = _lstat(frame.fd(_LOWER), name) if in_lower else None
            is_dir = stat.S_ISDIR(node.st.st_mode)
            if is_dir:
                sub = _Frame(child, node)
                try:
                    sub.set(_UPPER, node.open_dir(), node.st)
                except FileNotFoundError:  # removed since it was opened: as if it had not been listed
                    if in_lower:
                        yield None, child, None
                    return
                if lst is not None and stat.S_ISDIR(lst.st_mode):
                    opened = _open_dir_checked(frame.fd(_LOWER), name, (lst.st_dev, lst.st_ino))
                    if opened is None:
                        lst = None  # not the directory lstat saw: compare against nothing
                    else:
                        sub.set(_LOWER, *opened)
            if lst is None:
                yield Change.ADD, child, node
            else:
                if not _same_file(frame.fd(_LOWER), name, lst, node, sub):
                    yield Change.MODIFY, child, node
                elif _is_linked(node.st):
                    yield Change.UNMODIFIED, child, node
                if sub is not None and sub.fds[_LOWER] is not None and cfd is not None:
                    # (a directory that replaced a file: all it holds is new, nothing pruned)
                    opened = _open_dir_checked(frame.fd(_CHANGED), name, None)
                    if opened is not None:
                        sub.set(_CHANGED, *opened)
            if sub is not None:
                node.capability()  # kept for writing it as a parent later, its descriptors gone
                node.close()
                frame_out, sub = sub, None
                yield frame_out
        finally:
            node.close()
            if sub is not None:
                sub.close()


class _Ancestors(Sequence[_Node]):
    """The upper entries of the directories on the walk's stack, outermost first (the root's
    left out)."""

    def __init__(self, frames: list[_Frame]) -> None:
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames) - 1

    def __getitem__(self, i: int) -> _Node:  # type: ignore[override]
        node = self._frames[i + 1].node
        assert node is not None
        return node


def _same_file(lower_fd: int, name: bytes, lst: os.stat_result, node: _Node, sub: _Frame | None) -> bool:
    """Whether the lower entry `name` (lstat `lst`, under `lower_fd`) and the upper entry `node`
    are the same to containerd. `sub`: the frame of both directories, when they are. (Every test
    must hold; the stat's come first, the capability is read last, through an open descriptor
    where there is one.)"""
    ust = node.st
    if (lst.st_dev, lst.st_ino) == (ust.st_dev, ust.st_ino):
        return True
    if (lst.st_mode, lst.st_uid, lst.st_gid, lst.st_rdev) != (ust.st_mode, ust.st_uid, ust.st_gid, ust.st_rdev):
        return False
    if not stat.S_ISDIR(lst.st_mode):
        if lst.st_size != ust.st_size:
            return False
        lsec, lns = divmod(lst.st_mtime_ns, _NS)
        usec, uns = divmod(ust.st_mtime_ns, _NS)
        if lsec != usec:
            return False
        if lns == 0 and uns == 0:
            # Whole seconds on both sides may come from a tar, which drops the fraction: the
            # stat cannot tell, the target or the bytes can.
            if stat.S_ISLNK(lst.st_mode):
                try:
                    target = os.readlink(name, dir_fd=lower_fd)  # readlinkat: never followed
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.EINVAL):
                        return False  # no longer that symlink: changed
                    raise
                if target != node.readlink():
                    return False
            elif lst.st_size > 0:
                return _same_content(lower_fd, name, lst, node)
        elif lns != uns:
            return False
    lfd = sub.fds[_LOWER] if sub is not None else None
    if lfd is not None and _is_open(lfd):
        lower_capability = _getxattr(lfd)
    else:  # the name under the directory's /proc link, not followed
        try:
            lower_capability = _getxattr(_proc(lower_fd) + b"/" + name)
        except FileNotFoundError:
            return False  # gone since its lstat: changed
    return lower_capability == node.capability()


def _same_content(lower_fd: int, name: bytes, lst: os.stat_result, node: _Node) -> bool:
    """The capabilities and the bytes of two regular files of the same size."""
    try:
        lower = os.open(name, _O_PATH, dir_fd=lower_fd)
    except FileNotFoundError:
        return False
    try:
        now = os.fstat(lower)
        if (now.st_dev, now.st_ino) != (lst.st_dev, lst.st_ino) or not stat.S_ISREG(now.st_mode):
            return False  # not the file lstat saw: changed
        fa = _reopen(lower)
    finally:
        os.close(lower)
    try:
        fb = node.reopen()
        try:
            if _getxattr(fa) != node.capability():
                return False
            while True:
                ca, cb = os.read(fa, _COMPARE_CHUNK), os.read(fb, _COMPARE_CHUNK)
                if ca != cb:
                    return False
                if not ca:
                    return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)


def _is_linked(st: os.stat_result) -> bool:
    return not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1


# -- the writer: how a change is written --------------------------------------------------------


class _ChangeWriter:
    def __init__(self, tar: TarWriter, whiteout_mtime: int, mtime_clamp: int | None = None) -> None:
        self._tar = tar
        self._whiteout_mtime = whiteout_mtime
        self._clamp = mtime_clamp
        self._added_dirs: set[bytes] = set()
        self._inode_first: dict[int, bytes] = {}  # the name an inode was written under
        # unchanged names, linked once it is written (with their directories, for their parents)
        self._inode_waiting: dict[int, list[tuple[bytes, list[_Node]]]] = {}

    def delete(self, rel: bytes, dirs: Sequence[_Node]) -> None:
        parent, slash, base = rel.rpartition(b"/")
        h = TarHeader(parent + slash + _WHITEOUT + base, TYPE_REG, mtime=self._whiteout_mtime)
        self._parents(h, dirs)
        self._tar.add(h)

    def change(self, kind: Change, rel: bytes, node: _Node, dirs: Sequence[_Node]) -> None:
        """Write the upper entry `rel` (`node`); `dirs`: the entries of its directories."""
        st = node.st
        if stat.S_ISSOCK(st.st_mode):
            return
        h = _header(rel, node)
        if self._clamp is not None and h.mtime > self._clamp:
            h.mtime = self._clamp
        extra_links: list[tuple[bytes, list[_Node]]] = []
        if _is_linked(st):
            first = self._inode_first.get(st.st_ino)
            if first is not None:
                h.typeflag, h.linkname, h.size = TYPE_LINK, first, 0
            elif kind is Change.UNMODIFIED:
                self._inode_waiting.setdefault(st.st_ino, []).append((h.name, list(dirs)))
                return
            else:
                self._inode_first[st.st_ino] = h.name
                extra_links = self._inode_waiting.pop(st.st_ino, [])
        elif kind is Change.UNMODIFIED:
            return
        _refuse_reserved(rel)  # (its ancestors too: every component is looked at)
        if h.typeflag == TYPE_REG and h.size > 0:
            with node.open_file() as f:
                self._add(h, node, dirs, f)
        else:
            self._add(h, node, dirs, None)
        target = h.name
        for name, their_dirs in extra_links:
            _refuse_reserved(name)
            h.name, h.typeflag, h.linkname, h.size = name, TYPE_LINK, target, 0
            self._parents(h, their_dirs)
            self._tar.add(h)

    def close(self) -> None:
        self._tar.close()

    def _add(self, h: TarHeader, node: _Node, dirs: Sequence[_Node], data: BinaryIO | None) -> None:
        capability = node.capability()
        if capability:
            h.pax[_PAX_CAPABILITY] = capability
        self._parents(h, dirs)
        self._tar.add(h, data)

    def _parents(self, h: TarHeader, dirs: Sequence[_Node]) -> None:
        """Write the ancestors of `h` not written yet, outermost first, as the walk saw them
        (`dirs[i]`: the directory of i + 1 components above `h`)."""
        name = h.name.rstrip(b"/")
        missing: list[bytes] = []
        parent = name.rpartition(b"/")[0]
        while parent and parent not in self._added_dirs:
            self._added_dirs.add(parent)
            missing.append(parent)
            parent = parent.rpartition(b"/")[0]
        for d in reversed(missing):
            self.change(Change.MODIFY, d, dirs[d.count(b"/")], dirs)
        if h.typeflag == TYPE_DIR:
            self._added_dirs.add(name)


def _refuse_reserved(rel: bytes) -> None:
    """FailedPrecondition if a component of the tree's name `rel` is one layers keep for whiteouts."""
    if not any(part.startswith(_WHITEOUT) for part in rel.split(b"/")):
        return
    shown = "/" + os.fsdecode(rel).strip("/")
    shown = repr(shown) if len(shown) <= 200 else repr("..." + shown[-200:]) + f" ({len(shown)} characters)"
    raise FailedPrecondition(
        f"diff: the tree holds {shown}, a name image layers reserve for whiteouts ({WHITEOUT_PREFIX}<name> deletes "
        "<name> when the layer is applied): rename or remove it first")


def _header(rel: bytes, node: _Node) -> TarHeader:
    st = node.st
    mode = st.st_mode
    h = TarHeader(rel, TYPE_REG, mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid,
                  mtime=st.st_mtime_ns // _NS)  # truncated, as containerd does
    if stat.S_ISREG(mode):
        h.size = st.st_size
    elif stat.S_ISDIR(mode):
        h.typeflag, h.name = TYPE_DIR, rel + b"/"
    elif stat.S_ISLNK(mode):
        h.typeflag, h.linkname = TYPE_SYMLINK, node.readlink()
    elif stat.S_ISCHR(mode):
        h.typeflag = TYPE_CHAR
    elif stat.S_ISBLK(mode):
        h.typeflag = TYPE_BLOCK
    else:
        h.typeflag = TYPE_FIFO
    if mode & (stat.S_IFBLK | stat.S_IFCHR):
        # containerd tests the type bits this loosely, so directories and symlinks carry
        # their (zero) rdev too: only the value matters, and it is the same.
        h.devmajor, h.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return h


# -- filesystem helpers --------------------------------------------------------------------------


def _require_dir(p: Path) -> None:
    if not p.is_dir():
        raise NotFound(f"diff: directory {p}")


def _getxattr(target: int | bytes, *, follow: bool = False) -> bytes | None:
    """`security.capability` of a descriptor (not O_PATH), or of a path (its last component
    followed only if `follow`: a /proc/self/fd link); None if it has none."""
    try:
        if isinstance(target, int):
            return os.getxattr(target, CAPABILITY_XATTR)
        return os.getxattr(target, CAPABILITY_XATTR, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
