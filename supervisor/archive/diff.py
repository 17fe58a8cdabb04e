"""Write the changes between two filesystem states as an OCI layer tar (Diff.Diff).

Contract
--------
- `write_diff(lower, upper, out)`: `lower` and `upper` are two full trees (native
  snapshots, or mounted views). Writes an uncompressed tar of what changed from `lower`
  to `upper`: added and changed entries, and `.wh.<name>` for each deleted one.
- `write_overlay_diff(upper_dir, lower_view, out)`: reads an overlayfs upperdir directly.
  0/0 character devices become `.wh.<name>`, directories with `trusted.overlay.opaque=y`
  get a `.wh..wh..opq` entry; `lower_view` (the merged lower layers) supplies the data of
  metacopy-only files. Renamed directories (`redirect_dir`) are FailedPrecondition.

Both write deterministic tars: names sorted bytewise within each directory, a directory
before its contents, PAX format, no user or group names, mtimes truncated to seconds
(as containerd does), whiteouts with mtime 0. A changed entry's parent directories are
included before it. Names of one inode within the layer become one file plus hard links
to it; a hard-linked inode that changes is written together with all its names, so
applying the layer keeps the link. xattrs are written as `SCHILY.xattr.*` PAX records,
except `trusted.*` (the overlay driver's) and `security.selinux` (a host label, not image
content). Sockets are skipped.

"Changed" follows containerd's continuity: file type, mode, owner, device number, xattrs,
symlink target; for non-directories also size and mtime, and the contents when both
mtimes have no sub-second part (they may have been truncated by a tar). Directory mtimes
alone are not a change.

Errors: a missing tree is NotFound; I/O errors propagate as OSError from `out` or the
trees (the caller owns both).

Example::

    with open(tmp, "wb") as f:
        write_diff(Path(parent_view), Path(snapshot_view), f)
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from supervisor.archive.apply import WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from supervisor.archive.tarread import XATTR_PREFIX
from supervisor.errors import FailedPrecondition, NotFound

OVERLAY_OPAQUE = "trusted.overlay.opaque"
OVERLAY_REDIRECT = "trusted.overlay.redirect"
OVERLAY_METACOPY = "trusted.overlay.metacopy"
_SKIPPED_XATTR_PREFIXES = ("trusted.", "security.selinux")
_COMPARE_CHUNK = 1 << 16
_COPY_CHUNK = 1 << 20

Xattrs = dict[str, bytes]


def write_diff(lower: Path, upper: Path, out: BinaryIO) -> None:
    """Write the changes from the full tree `lower` to the full tree `upper` to `out`."""
    _require_dir(lower)
    _require_dir(upper)
    with _LayerWriter(out, upper) as w:
        _TreeDiff(w).walk("", str(lower), str(upper))


def write_overlay_diff(upper_dir: Path, lower_view: Path, out: BinaryIO) -> None:
    """Write the changes an overlayfs upperdir holds over `lower_view` to `out`."""
    _require_dir(upper_dir)
    _require_dir(lower_view)
    with _LayerWriter(out, upper_dir) as w:
        _walk_overlay(w, "", str(upper_dir), str(lower_view))


# -- native: compare two trees -----------------------------------------------------------


class _TreeDiff:
    def __init__(self, writer: _LayerWriter) -> None:
        self.w = writer

    def walk(self, rel: str, lower_dir: str | None, upper_dir: str) -> None:
        """Diff one directory; `lower_dir` is None when `rel` is new (or was no directory)."""
        upper_names = set(_listdir(upper_dir))
        lower_names = set(_listdir(lower_dir))
        for name in _sorted_names(lower_names | upper_names):
            child = _join(rel, name)
            if name not in upper_names:
                self.w.add_whiteout(child)
                continue
            upath = os.path.join(upper_dir, name)
            ust = os.lstat(upath)
            if stat.S_ISSOCK(ust.st_mode):
                continue
            lpath = os.path.join(lower_dir, name) if lower_dir is not None and name in lower_names else None
            lst = _lstat_or_none(lpath) if lpath is not None else None
            if stat.S_ISDIR(ust.st_mode):
                if lpath is not None and lst is not None and stat.S_ISDIR(lst.st_mode):
                    if _dir_changed(lst, ust, lpath, upath):
                        self.w.add_path(child, upath, ust)
                    self.walk(child, lpath, upath)
                else:
                    self.w.add_path(child, upath, ust)
                    self.walk(child, None, upath)
                continue
            changed = lpath is None or lst is None or _file_changed(lst, ust, lpath, upath)
            self.w.add_nondir(child, upath, ust, changed=changed)


def _dir_changed(lst: os.stat_result, ust: os.stat_result, lpath: str, upath: str) -> bool:
    if _same_inode(lst, ust):
        return False
    if (lst.st_mode, lst.st_uid, lst.st_gid) != (ust.st_mode, ust.st_uid, ust.st_gid):
        return True
    return _xattrs(lpath) != _xattrs(upath)


def _file_changed(lst: os.stat_result, ust: os.stat_result, lpath: str, upath: str) -> bool:
    if _same_inode(lst, ust):
        return False
    if (lst.st_mode, lst.st_uid, lst.st_gid, lst.st_rdev) != (
        ust.st_mode,
        ust.st_uid,
        ust.st_gid,
        ust.st_rdev,
    ):
        return True
    if lst.st_size != ust.st_size:
        return True
    if _xattrs(lpath) != _xattrs(upath):
        return True
    if stat.S_ISLNK(ust.st_mode):
        return os.readlink(lpath) != os.readlink(upath)
    lsec, lns = divmod(lst.st_mtime_ns, 1_000_000_000)
    usec, uns = divmod(ust.st_mtime_ns, 1_000_000_000)
    if lsec != usec or lns != uns:
        return True
    if lns == 0 and stat.S_ISREG(ust.st_mode) and ust.st_size:
        # Both mtimes may have been truncated by a tar: the stat cannot tell, the bytes can.
        return not _same_content(lpath, upath)
    return False


# -- overlay: read an upperdir -----------------------------------------------------------


def _walk_overlay(w: _LayerWriter, rel: str, upper_dir: str, lower_view: str) -> None:
    for name in _sorted_names(_listdir(upper_dir)):
        child = _join(rel, name)
        upath = os.path.join(upper_dir, name)
        st = os.lstat(upath)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            w.add_whiteout(child)
            continue
        if stat.S_ISSOCK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            if _getxattr(upath, OVERLAY_REDIRECT) is not None:
                raise FailedPrecondition(
                    f"overlay diff of {upper_dir}: directory {child!r} was renamed (redirect_dir); "
                    "mount the snapshot without redirect_dir"
                )
            w.add_path(child, upath, st)
            if _getxattr(upath, OVERLAY_OPAQUE) == b"y":
                w.add_marker(_join(child, WHITEOUT_OPAQUE))
            _walk_overlay(w, child, upath, lower_view)
            continue
        data_path = upath
        if stat.S_ISREG(st.st_mode) and _getxattr(upath, OVERLAY_METACOPY) is not None:
            # metacopy=on copied up only the metadata; the bytes are still in the lower.
            data_path = os.path.join(lower_view, child)
        w.add_nondir(child, upath, st, changed=True, data_path=data_path)


# -- the tar writer ----------------------------------------------------------------------


class _LayerWriter:
    """Writes entries in call order, adding parents first and keeping hard links whole."""

    def __init__(self, out: BinaryIO, source_root: Path) -> None:
        self._tf = tarfile.open(
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
        )
        self._root = str(source_root)
        self._dirs_written: set[str] = set()
        # Hard links: the name an inode was first written under, and unchanged names of
        # inodes not written yet (they must follow if the inode is written later).
        self._inode_first: dict[tuple[int, int], str] = {}
        self._inode_unchanged: dict[tuple[int, int], list[str]] = {}

    def __enter__(self) -> _LayerWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._tf.close()  # end-of-archive blocks only for a complete layer

    def add_whiteout(self, rel: str) -> None:
        parent, _, name = rel.rpartition("/")
        self.add_marker(_join(parent, WHITEOUT_PREFIX + name))

    def add_marker(self, rel: str) -> None:
        """An empty regular file: a whiteout or the opaque marker."""
        self._parents(rel)
        ti = tarfile.TarInfo(rel)
        ti.mode = 0
        ti.mtime = 0
        ti.uname = ti.gname = ""
        self._tf.addfile(ti)

    def add_path(self, rel: str, path: str, st: os.stat_result, data_path: str | None = None) -> None:
        """Write the entry for `path` (any type) under the name `rel`."""
        self._parents(rel)
        ti = _tarinfo(rel, path, st)
        if ti.isdir():
            self._dirs_written.add(rel)
        if ti.isreg() and ti.size:
            with _open_nofollow(data_path or path) as f:
                self._tf.addfile(ti, f)
        else:
            self._tf.addfile(ti)

    def add_nondir(
        self, rel: str, path: str, st: os.stat_result, *, changed: bool, data_path: str | None = None
    ) -> None:
        """A non-directory seen in the walk; `changed` says whether the layer must carry it."""
        if st.st_nlink <= 1:
            if changed:
                self.add_path(rel, path, st, data_path)
            return
        key = (st.st_dev, st.st_ino)
        first = self._inode_first.get(key)
        if first is not None:
            # Another name of an inode already in the layer: always a link to it.
            self._add_link(rel, first, path, st)
            return
        if not changed:
            self._inode_unchanged.setdefault(key, []).append(rel)
            return
        self.add_path(rel, path, st, data_path)
        self._inode_first[key] = rel
        for other in self._inode_unchanged.pop(key, []):
            self._add_link(other, rel, path, st)

    def _add_link(self, rel: str, target: str, path: str, st: os.stat_result) -> None:
        self._parents(rel)
        ti = _tarinfo(rel, path, st)
        ti.type = tarfile.LNKTYPE
        ti.linkname = target
        ti.size = 0
        self._tf.addfile(ti)

    def _parents(self, rel: str) -> None:
        """Write the not yet written ancestors of `rel`, outermost first."""
        missing: list[str] = []
        parent = rel.rpartition("/")[0]
        while parent and parent not in self._dirs_written:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for d in reversed(missing):
            path = os.path.join(self._root, d)
            self._tf.addfile(_tarinfo(d, path, os.lstat(path)))
            self._dirs_written.add(d)


def _tarinfo(rel: str, path: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(rel)
    mode = st.st_mode
    ti.mode = stat.S_IMODE(mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = st.st_mtime_ns // 1_000_000_000  # truncated, as containerd writes them
    if stat.S_ISREG(mode):
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        ti.type = tarfile.FIFOTYPE
    else:
        raise FailedPrecondition(f"diff: {path}: unsupported file type {stat.S_IFMT(mode):o}")
    ti.pax_headers = {
        XATTR_PREFIX + key: value.decode("utf-8", "surrogateescape") for key, value in sorted(_xattrs(path).items())
    }
    return ti


# -- filesystem helpers ------------------------------------------------------------------


def _require_dir(p: Path) -> None:
    if not p.is_dir():
        raise NotFound(f"diff: directory {p}")


def _listdir(path: str | None) -> list[str]:
    return os.listdir(path) if path is not None else []


def _sorted_names(names: set[str] | list[str]) -> list[str]:
    return sorted(names, key=os.fsencode)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _xattrs(path: str) -> Xattrs:
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: Xattrs = {}
    for key in keys:
        if key.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        value = _getxattr(path, key)
        if value is not None:
            out[key] = value
    return out


def _getxattr(path: str, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _open_nofollow(path: str) -> BinaryIO:
    """Open a file of the tree for reading; a symlink swapped in meanwhile is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return open(fd, "rb", buffering=_COPY_CHUNK)


def _same_content(a: str, b: str) -> bool:
    with _open_nofollow(a) as fa, _open_nofollow(b) as fb:
        for ca, cb in _chunks(fa.read, fb.read):
            if ca != cb:
                return False
    return True


def _chunks(ra: Callable[[int], bytes], rb: Callable[[int], bytes]) -> Iterator[tuple[bytes, bytes]]:
    while True:
        ca, cb = ra(_COMPARE_CHUNK), rb(_COMPARE_CHUNK)
        yield ca, cb
        if not ca or not cb:
            return
