"""Build layer tars in memory, for tests of anything that consumes layers.

Entries are plain data; `build_tar` writes them with Python's tarfile exactly as given
(names are not cleaned, so hostile archives are easy to make). Example::

    from tests.unit.archive_fixtures import build_tar, directory, file, symlink, whiteout

    layer = build_tar([directory("etc"), file("etc/hostname", b"box\\n"), whiteout("etc/motd")])
    blob = gzip_compress(layer)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]

_TYPES: dict[str, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_DEFAULT_MODES = {"dir": 0o755, "symlink": 0o777}

DEFAULT_MTIME = 1_600_000_000


@dataclass
class TarEntry:
    """One member of a test tar; `mode` None means 0755 for dirs, 0777 symlinks, else 0644."""

    name: str
    kind: Kind = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int | float = DEFAULT_MTIME
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    pax: dict[str, str] = field(default_factory=dict)  # extra raw PAX records (e.g. "atime")


def file(name: str, data: bytes = b"", **kw: object) -> TarEntry:
    return TarEntry(name, "file", data, **kw)  # type: ignore[arg-type]


def directory(name: str, **kw: object) -> TarEntry:
    return TarEntry(name, "dir", **kw)  # type: ignore[arg-type]


def symlink(name: str, target: str, **kw: object) -> TarEntry:
    return TarEntry(name, "symlink", linkname=target, **kw)  # type: ignore[arg-type]


def hardlink(name: str, target: str, **kw: object) -> TarEntry:
    return TarEntry(name, "hardlink", linkname=target, **kw)  # type: ignore[arg-type]


def char_device(name: str, major: int, minor: int, **kw: object) -> TarEntry:
    return TarEntry(name, "char", devmajor=major, devminor=minor, **kw)  # type: ignore[arg-type]


def block_device(name: str, major: int, minor: int, **kw: object) -> TarEntry:
    return TarEntry(name, "block", devmajor=major, devminor=minor, **kw)  # type: ignore[arg-type]


def fifo(name: str, **kw: object) -> TarEntry:
    return TarEntry(name, "fifo", **kw)  # type: ignore[arg-type]


def whiteout(path: str) -> TarEntry:
    """`dir/.wh.name`: deletes `dir/name` of the lower layers."""
    parent, _, name = path.rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opaque(dir_path: str) -> TarEntry:
    """`dir/.wh..wh..opq`: hides everything lower layers have under `dir`."""
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq" if dir_path else ".wh..wh..opq")


def tarinfo_for(entry: TarEntry) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(entry.name)
    ti.type = _TYPES[entry.kind]
    ti.mode = entry.mode if entry.mode is not None else _DEFAULT_MODES.get(entry.kind, 0o644)
    ti.uid, ti.gid = entry.uid, entry.gid
    ti.uname = ti.gname = ""
    ti.mtime = entry.mtime
    ti.linkname = entry.linkname
    ti.devmajor, ti.devminor = entry.devmajor, entry.devminor
    ti.size = len(entry.data) if entry.kind == "file" else 0
    pax = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in entry.xattrs.items()}
    pax.update(entry.pax)
    ti.pax_headers = pax
    return ti


def build_tar(entries: Iterable[TarEntry], *, format: int = tarfile.PAX_FORMAT) -> bytes:
    """The tar bytes of `entries`, in order (PAX by default; GNU_FORMAT for GNU long names)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format, encoding="utf-8", errors="surrogateescape") as tf:
        for entry in entries:
            ti = tarinfo_for(entry)
            tf.addfile(ti, io.BytesIO(entry.data) if ti.size else None)
    return out.getvalue()


def gzip_compress(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstd_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- filesystem helpers for tests that apply layers ----------------------------------------


def tree_state(root: str | os.PathLike[str], *, dir_mtimes: bool = False) -> dict[str, tuple[object, ...]]:
    """Everything observable about a tree, by relative path, to compare two trees.

    Per entry: type, mode, owner, device, content digest or link target, xattrs (without
    trusted.*), mtime in seconds (directories only with `dir_mtimes`), and the other names
    of the same inode in the tree.
    """
    root = os.fspath(root)
    by_inode: dict[tuple[int, int], list[str]] = {}
    raw: dict[str, tuple[os.stat_result, tuple[object, ...]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content: object = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = None
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                    if not k.startswith("trusted.")
                )
            )
            is_dir = stat.S_ISDIR(st.st_mode)
            mtime = None if is_dir and not dir_mtimes else st.st_mtime_ns // 1_000_000_000
            raw[rel] = (
                st,
                (
                    stat.S_IFMT(st.st_mode),
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    st.st_rdev if not is_dir else 0,
                    content,
                    xattrs,
                    mtime,
                ),
            )
            if not is_dir:
                by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
    out: dict[str, tuple[object, ...]] = {}
    for rel, (st, info) in raw.items():
        names = by_inode.get((st.st_dev, st.st_ino), [rel])
        out[rel] = (*info, tuple(sorted(n for n in names if n != rel)))
    return out


def mount_overlay(lowers: list[str], upper: str, work: str, merged: str, *, options: str = "") -> None:
    """Mount overlayfs (root only); pair with `umount`. `options` are appended (e.g. "redirect_dir=off")."""
    opts = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}" + (f",{options}" if options else "")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], check=True)


def umount(path: str) -> None:
    subprocess.run(["umount", path], check=True)
