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

Errors: a missing tree is NotFound; a file that changes size while it is read is
InvalidArgument; other I/O errors propagate as OSError (the caller owns `out` and the trees).

Example::

    with open(tmp, "wb") as f:
        write_diff(Path(parent_view), Path(snapshot_view), f)
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import time
from collections.abc import Iterator
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
    writer = _ChangeWriter(TarWriter(out), os.fsencode(upper), whiteout_mtime, mtime_clamp)
    pruning = os.fsencode(changed) if changed is not None else None
    for kind, rel, path, st in _double_walk(os.fsencode(lower), os.fsencode(upper), pruning):
        if kind is None or st is None:
            writer.delete(rel)
        else:
            writer.change(kind, rel, path, st)
    writer.close()


# -- the walk: what changed ---------------------------------------------------------------------

# (kind, relative name, path in upper, lstat of it); kind None = deleted (path and stat unused)
_Found = tuple[Change | None, bytes, bytes, os.stat_result | None]


class _Descend(tuple[bytes, bytes | None, bytes, bytes | None]):
    """Walk into (relative name, lower dir or None, upper dir, its changed dir or None) before
    the next sibling."""


def _double_walk(lower: bytes, upper: bytes, changed: bytes | None = None) -> Iterator[_Found]:
    """Both trees in merged walk order. A stack, not recursion: trees may be deep."""
    stack = [_directory(b"", lower, upper, changed)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, _Descend):
            stack.append(_directory(*item))
        else:
            yield item


def _directory(rel: bytes, lower_dir: bytes | None, upper_dir: bytes,
               changed_dir: bytes | None) -> Iterator[_Found | _Descend]:
    """The changes of one directory's entries, each directory's contents right after it.
    `changed_dir`: this directory in the overlay upperdir (see write_diff), or None."""
    lower_names = set(os.listdir(lower_dir)) if lower_dir is not None else set()
    upper_names = set(os.listdir(upper_dir))
    for name in sorted(lower_names | upper_names):
        child = rel + b"/" + name if rel else name
        if name not in upper_names:
            yield None, child, b"", None  # the contents of a deleted directory are not visited
            continue
        changed = changed_dir + b"/" + name if changed_dir is not None else None
        in_lower = lower_dir is not None and name in lower_names
        if changed is not None and in_lower and not os.path.lexists(changed):
            continue  # untouched by the step: the lower's entry and all below it
        upath = upper_dir + b"/" + name
        ust = os.lstat(upath)
        lpath = lower_dir + b"/" + name if lower_dir is not None and in_lower else None
        if lpath is None:
            yield Change.ADD, child, upath, ust
            if stat.S_ISDIR(ust.st_mode):
                yield _Descend((child, None, upath, None))
            continue
        lst = os.lstat(lpath)
        if not _same_file(lpath, lst, upath, ust):
            yield Change.MODIFY, child, upath, ust
        elif _is_linked(ust):
            yield Change.UNMODIFIED, child, upath, ust
        if stat.S_ISDIR(ust.st_mode):
            # A directory that replaced a file: all it holds is new.
            replaced = not stat.S_ISDIR(lst.st_mode)
            yield _Descend((child, None if replaced else lpath, upath, None if replaced else changed))


def _same_file(lpath: bytes, lst: os.stat_result, upath: bytes, ust: os.stat_result) -> bool:
    if (lst.st_dev, lst.st_ino) == (ust.st_dev, ust.st_ino):
        return True
    if (lst.st_mode, lst.st_uid, lst.st_gid, lst.st_rdev) != (ust.st_mode, ust.st_uid, ust.st_gid, ust.st_rdev):
        return False
    if _capability(lpath) != _capability(upath):
        return False
    if stat.S_ISDIR(lst.st_mode):
        return True
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
            return os.readlink(lpath) == os.readlink(upath)
        return lst.st_size == 0 or _same_content(lpath, upath)
    return lns == uns


def _is_linked(st: os.stat_result) -> bool:
    return not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1


# -- the writer: how a change is written --------------------------------------------------------


class _ChangeWriter:
    def __init__(self, tar: TarWriter, root: bytes, whiteout_mtime: int, mtime_clamp: int | None = None) -> None:
        self._tar = tar
        self._root = root
        self._whiteout_mtime = whiteout_mtime
        self._clamp = mtime_clamp
        self._added_dirs: set[bytes] = set()
        self._inode_first: dict[int, bytes] = {}  # the name an inode was written under
        self._inode_waiting: dict[int, list[bytes]] = {}  # unchanged names, linked once it is written

    def delete(self, rel: bytes) -> None:
        parent, slash, base = rel.rpartition(b"/")
        h = TarHeader(parent + slash + _WHITEOUT + base, TYPE_REG, mtime=self._whiteout_mtime)
        self._parents(h)
        self._tar.add(h)

    def change(self, kind: Change, rel: bytes, path: bytes, st: os.stat_result) -> None:
        if stat.S_ISSOCK(st.st_mode):
            return
        h = _header(rel, path, st)
        if self._clamp is not None and h.mtime > self._clamp:
            h.mtime = self._clamp
        extra_links: list[bytes] = []
        if _is_linked(st):
            first = self._inode_first.get(st.st_ino)
            if first is not None:
                h.typeflag, h.linkname, h.size = TYPE_LINK, first, 0
            elif kind is Change.UNMODIFIED:
                self._inode_waiting.setdefault(st.st_ino, []).append(h.name)
                return
            else:
                self._inode_first[st.st_ino] = h.name
                extra_links = self._inode_waiting.pop(st.st_ino, [])
        elif kind is Change.UNMODIFIED:
            return
        _refuse_reserved(rel)  # (its ancestors too: every component is looked at)
        capability = _getxattr(path, CAPABILITY_XATTR)
        if capability:
            h.pax[_PAX_CAPABILITY] = capability
        self._parents(h)
        if h.typeflag == TYPE_REG and h.size > 0:
            with _open_nofollow(path) as f:
                self._tar.add(h, f)
        else:
            self._tar.add(h)
        target = h.name
        for name in extra_links:
            _refuse_reserved(name)
            h.name, h.typeflag, h.linkname, h.size = name, TYPE_LINK, target, 0
            self._parents(h)
            self._tar.add(h)

    def close(self) -> None:
        self._tar.close()

    def _parents(self, h: TarHeader) -> None:
        """Write the ancestors of `h` not written yet, outermost first."""
        name = h.name.rstrip(b"/")
        missing: list[bytes] = []
        parent = name.rpartition(b"/")[0]
        while parent and parent not in self._added_dirs:
            self._added_dirs.add(parent)
            missing.append(parent)
            parent = parent.rpartition(b"/")[0]
        for d in reversed(missing):
            path = os.path.join(self._root, d)
            self.change(Change.MODIFY, d, path, os.stat(path))
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


def _header(rel: bytes, path: bytes, st: os.stat_result) -> TarHeader:
    mode = st.st_mode
    h = TarHeader(rel, TYPE_REG, mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid,
                  mtime=st.st_mtime_ns // _NS)  # truncated, as containerd does
    if stat.S_ISREG(mode):
        h.size = st.st_size
    elif stat.S_ISDIR(mode):
        h.typeflag, h.name = TYPE_DIR, rel + b"/"
    elif stat.S_ISLNK(mode):
        h.typeflag, h.linkname = TYPE_SYMLINK, os.readlink(path)
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


def _capability(path: bytes) -> bytes | None:
    return _getxattr(path, CAPABILITY_XATTR)


def _getxattr(path: bytes, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _open_nofollow(path: bytes) -> BinaryIO:
    """Open a file of the tree for reading; a symlink swapped in meanwhile is refused.

    Unbuffered: each read is one read(2) of the size asked, and opening thousands of small
    files costs no buffer each."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return open(fd, "rb", buffering=0)


def _same_content(a: bytes, b: bytes) -> bool:
    fa = os.open(a, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fb = os.open(b, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
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
