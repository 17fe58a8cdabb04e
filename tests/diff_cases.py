"""Filesystem changes of every kind, for tests of layer diffs (unit golden bytes, compat vs containerd).

A case is a base tree and a change made on a copy of it (or on a snapshot on top of it). All
modes, owners and mtimes are set explicitly, so two machines, two daemons or two umasks make
the same trees: `settle(root, when)` gives every entry a change touched (its mtime is "now")
the fixed time `when`.

Example::

    case = CASES["edits"]
    case.base(lower); settle(lower, BASE_TIME)
    copy(lower, upper); case.change(upper); settle(upper, CHANGE_TIME)
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_TIME = 1_600_000_000
CHANGE_TIME = 1_650_000_000
_RECENT = 1_700_000_000  # mtimes after this were made by the test run itself
# A valid VFS_CAP_REVISION_2 value (cap_net_bind_service, effective): the kernel checks the format.
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


@dataclass(frozen=True)
class DiffCase:
    name: str
    base: Callable[[Path], None]
    change: Callable[[Path], None]


def settle(root: Path, when: int) -> None:
    """Give every entry of `root` whose mtime is from this run the mtime `when`."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mtime > _RECENT:
                os.utime(path, ns=(when * 10**9, when * 10**9), follow_symlinks=False)


def write(path: Path, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    mkdir(path.parent)
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def mkdir(path: Path, mode: int = 0o755) -> None:
    """Make `path` and missing parents (0755: the umask must not matter); `mode` for `path`."""
    if path.is_dir():
        return
    mkdir(path.parent)
    path.mkdir()
    os.chmod(path, mode)


def mknod(path: Path, kind: int, major: int = 0, minor: int = 0, mode: int = 0o644) -> None:
    os.mknod(path, kind | mode, os.makedev(major, minor))
    os.chmod(path, mode)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _nothing(root: Path) -> None:
    pass


def _etc(root: Path) -> None:
    mkdir(root / "etc")
    write(root / "etc/hostname", b"box\n")


# -- the cases ------------------------------------------------------------------------------------


def _adds(root: Path) -> None:
    write(root / "etc/new", b"new file\n")
    mkdir(root / "a/b/c")
    write(root / "a/b/c/deep", b"deep\n", mode=0o600, uid=1000, gid=1000)
    write(root / "a/empty")
    mkdir(root / "z", mode=0o700)


def _edits_base(root: Path) -> None:
    _etc(root)
    write(root / "etc/passwd", b"root:x:0:0\n")
    write(root / "etc/same", b"AAAA")
    write(root / "etc/mode", b"m")
    write(root / "etc/owner", b"o")
    write(root / "etc/touched", b"t")
    write(root / "etc/untouched", b"u")
    mkdir(root / "var/lib")
    mkdir(root / "var/mode-dir")


def _edits(root: Path) -> None:
    write(root / "etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n")
    # Same size and the same whole-second mtime: only the bytes can tell.
    write(root / "etc/same", b"BBBB")
    os.utime(root / "etc/same", ns=(BASE_TIME * 10**9,) * 2)
    os.chmod(root / "etc/mode", 0o600)
    os.chown(root / "etc/owner", 1000, 1000)
    os.utime(root / "etc/touched", ns=((BASE_TIME + 1) * 10**9,) * 2)  # the mtime alone
    os.chmod(root / "var/mode-dir", 0o700)


def _deletions_base(root: Path) -> None:
    _etc(root)
    write(root / "etc/gone", b"g")
    mkdir(root / "tree/sub")
    write(root / "tree/sub/x", b"x")
    write(root / "tree/y", b"y")
    os.symlink("hostname", root / "etc/link")
    os.mkfifo(root / "etc/pipe")
    os.chmod(root / "etc/pipe", 0o600)
    write(root / "top", b"t")


def _deletions(root: Path) -> None:
    for name in ("etc/gone", "tree", "etc/link", "etc/pipe", "top"):
        remove(root / name)


def _opaque_base(root: Path) -> None:
    mkdir(root / "d/sub")
    write(root / "d/a", b"a")
    write(root / "d/b", b"b")
    write(root / "d/sub/x", b"x")


def _opaque(root: Path) -> None:
    # Deleted and made again: overlayfs marks it opaque; containerd writes one whiteout per name.
    shutil.rmtree(root / "d")
    mkdir(root / "d")
    write(root / "d/c", b"c")
    write(root / "d/a", b"a again")


def _hardlinks_base(root: Path) -> None:
    mkdir(root / "bin")
    write(root / "bin/busybox", b"\x7fELF" * 64, mode=0o755)
    os.link(root / "bin/busybox", root / "bin/ls")
    os.link(root / "bin/busybox", root / "bin/sh")
    mkdir(root / "opt")
    write(root / "opt/one", b"1")


def _hardlinks(root: Path) -> None:
    os.unlink(root / "bin/ls")
    write(root / "bin/busybox", b"\x7fELF-v2")
    os.link(root / "opt/one", root / "opt/two")
    write(root / "new/a", b"pair")
    os.link(root / "new/a", root / "new/b")
    os.link(root / "new/a", root / "new2")


def _symlinks_base(root: Path) -> None:
    os.symlink("a", root / "l1")
    os.symlink("/abs/target", root / "l2")
    write(root / "a", b"a")


def _symlinks(root: Path) -> None:
    os.unlink(root / "l1")
    os.symlink("b", root / "l1")  # the same length
    os.symlink("t" * 150, root / "long-target")
    mkdir(root / "dir")
    os.symlink("../a", root / "dir/up")
    os.symlink("a", root / "l3")
    os.link(root / "l3", root / "l3-hard")  # a hard link to a symlink


def _xattrs_base(root: Path) -> None:
    write(root / "f1", b"1")
    os.setxattr(root / "f1", "user.a", b"1")
    write(root / "f2", b"2")
    write(root / "f5", b"5")


def _xattrs(root: Path) -> None:
    os.setxattr(root / "f1", "user.a", b"2")  # not a change to containerd
    os.setxattr(root / "f2", "security.capability", CAPABILITY)  # a change
    write(root / "f3", b"3", mode=0o755)
    os.setxattr(root / "f3", "user.x", b"\xff\x00")
    os.setxattr(root / "f3", "security.capability", CAPABILITY)
    write(root / "f4", b"4")
    os.setxattr(root / "f4", "trusted.dockyard", b"t")
    mkdir(root / "dcap")
    os.setxattr(root / "dcap", "user.d", b"d")


def _devices_base(root: Path) -> None:
    mkdir(root / "dev")
    mknod(root / "dev/null", stat.S_IFCHR, 1, 3, mode=0o666)
    mknod(root / "dev/zero", stat.S_IFCHR, 1, 5, mode=0o666)


def _devices(root: Path) -> None:
    mknod(root / "dev/loop0", stat.S_IFBLK, 7, 0, mode=0o660)
    mknod(root / "dev/tty", stat.S_IFCHR, 5, 0, mode=0o666)
    mknod(root / "dev/big", stat.S_IFCHR, 511, 1048575, mode=0o600)
    os.mkfifo(root / "fifo")
    os.chmod(root / "fifo", 0o622)
    os.unlink(root / "dev/null")
    os.chmod(root / "dev/zero", 0o600)


_LONG_DIR = "d" * 120


def _long_names_base(root: Path) -> None:
    mkdir(root / _LONG_DIR)
    write(root / _LONG_DIR / "old", b"o")
    write(root / ("x" * 200), b"long-named file in the base")


def _long_names(root: Path) -> None:
    write(root / _LONG_DIR / ("f" * 150), b"long")
    write(root / ("n" * 100), b"exactly 100")
    write(root / ("p" * 60) / ("q" * 60), b"splits into prefix and name")
    deep = root / "deep" / "/".join(["abcdefghij" * 2] * 14)
    write(deep / "leaf", b"path over 255 bytes")
    write(Path(os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9")), b"a Latin-1 name")
    write(root / "caf\u00e9-utf8", b"a UTF-8 name")
    os.unlink(root / _LONG_DIR / "old")
    os.unlink(root / ("x" * 200))


def _sparse_base(root: Path) -> None:
    write(root / "shrinks", b"s" * 1000)


def _sparse(root: Path) -> None:
    with open(root / "sparse", "wb") as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(b"x")
    os.chmod(root / "sparse", 0o644)
    write(root / "empty")
    write(root / "shrinks", b"")


def _large(root: Path) -> None:
    """Megabytes that compress some but not all the way: many deflate and zstd blocks."""
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4000)]
    text = b" ".join(rng.choice(words) for _ in range(600_000))
    write(root / "text", text)
    write(root / "noise", rng.randbytes(1 << 20))


def _types_base(root: Path) -> None:
    write(root / "f", b"file")
    mkdir(root / "d")
    write(root / "d/x", b"x")


def _types(root: Path) -> None:
    os.unlink(root / "f")
    mkdir(root / "f")
    write(root / "f/child", b"c")
    shutil.rmtree(root / "d")
    write(root / "d", b"now a file")


def _special(root: Path) -> None:
    write(root / "suid", b"s", mode=0o4755)
    write(root / "sgid", b"s", mode=0o2711)
    mkdir(root / "tmp", mode=0o1777)
    write(root / "big-uid", b"u", uid=3_000_000, gid=3_000_001)
    write(root / "old", b"o")
    os.utime(root / "old", ns=(-100 * 10**9 - 5,) * 2)  # before 1970, with nanoseconds
    write(root / "nano", b"n")
    os.utime(root / "nano", ns=(BASE_TIME * 10**9 + 123,) * 2)  # truncated to seconds


CASES: dict[str, DiffCase] = {c.name: c for c in [
    DiffCase("empty", _etc, _nothing),
    DiffCase("adds", _etc, _adds),
    DiffCase("edits", _edits_base, _edits),
    DiffCase("deletions", _deletions_base, _deletions),
    DiffCase("opaque", _opaque_base, _opaque),
    DiffCase("hardlinks", _hardlinks_base, _hardlinks),
    DiffCase("symlinks", _symlinks_base, _symlinks),
    DiffCase("xattrs", _xattrs_base, _xattrs),
    DiffCase("devices", _devices_base, _devices),
    DiffCase("long-names", _long_names_base, _long_names),
    DiffCase("sparse-empty", _sparse_base, _sparse),
    DiffCase("types", _types_base, _types),
    DiffCase("large", _etc, _large),
    DiffCase("special", _etc, _special),
]}
