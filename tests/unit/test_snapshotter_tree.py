"""copy_tree, disk_usage, diff_usage and remove_tree on the real filesystem (as root)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.snapshotter.tree import copy_tree, diff_usage, disk_usage, remove_tree

pytestmark = pytest.mark.root


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A tree with every kind of entry and attribute the native snapshotter must keep."""
    s = tmp_path / "src"
    s.mkdir()
    os.chmod(s, 0o751)
    (s / "dir").mkdir()
    os.chmod(s / "dir", 0o2775)
    (s / "dir" / "file").write_bytes(b"content" * 1000)
    os.chmod(s / "dir" / "file", 0o4755)
    os.chown(s / "dir" / "file", 1000, 1001)
    os.setxattr(s / "dir" / "file", "user.comment", b"hello")
    os.setxattr(s / "dir" / "file", "trusted.secret", b"root only")
    os.link(s / "dir" / "file", s / "hardlink")
    os.symlink("dir/file", s / "symlink")
    os.lchown(s / "symlink", 7, 8)
    os.symlink("/does/not/exist", s / "dangling")
    os.mknod(s / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(s / "fifo", stat.S_IFIFO | 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(s / "sock"))
    sock.close()
    (s / "empty").mkdir(mode=0o700)
    (s / "empty-file").touch()
    for p in [s / "dir" / "file", s / "null", s / "dir"]:
        os.utime(p, ns=(1_000_000_123, 2_000_000_456))
    os.utime(s / "symlink", ns=(3_000_000_000, 4_000_000_789), follow_symlinks=False)
    return s


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            if not name and dirpath != str(root):
                continue
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            xattrs = sorted(
                (x, os.getxattr(path, x, follow_symlinks=False))
                for x in os.listxattr(path, follow_symlinks=False)
            )
            entry: tuple[object, ...] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, xattrs)
            if not stat.S_ISDIR(st.st_mode):
                entry += (st.st_mtime_ns, inodes.setdefault(st.st_ino, rel))
            else:
                entry += (st.st_mtime_ns if rel != "." else None,)
            if stat.S_ISREG(st.st_mode):
                entry += (Path(path).read_bytes(),)
            if stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            out[rel] = entry
    return out


def test_copy_tree_preserves_everything(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    assert describe(dst) == describe(src)
    # Hard links stay one inode; no inode is shared with the source.
    assert os.stat(dst / "hardlink").st_ino == os.stat(dst / "dir" / "file").st_ino
    assert os.stat(dst / "hardlink").st_ino != os.stat(src / "hardlink").st_ino


def test_copy_tree_keeps_file_capabilities(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    src.mkdir()
    dst.mkdir()
    (src / "ping").write_bytes(b"\x7fELF")
    os.chown(src / "ping", 5, 5)
    # VFS_CAP_REVISION_2 with CAP_NET_RAW permitted+effective.
    cap = bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12)
    os.setxattr(src / "ping", "security.capability", cap)
    copy_tree(str(src), str(dst))
    # chown after setxattr would have dropped it: the copy orders them right.
    assert os.getxattr(dst / "ping", "security.capability") == cap


def test_copy_tree_refuses_a_file_source(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    (tmp_path / "d").mkdir()
    with pytest.raises(NotADirectoryError):
        copy_tree(str(tmp_path / "f"), str(tmp_path / "d"))


def test_disk_usage_matches_du(src: Path) -> None:
    du = subprocess.run(["du", "-s", "-B1", str(src)], capture_output=True, text=True, check=True)
    usage = disk_usage(str(src))
    assert usage.size == int(du.stdout.split()[0])
    entries = sum(1 for _ in src.rglob("*")) + 1
    assert usage.inodes == entries - 1  # the hard link is one inode


def test_diff_usage_counts_only_changes(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    assert diff_usage(str(dst), str(src)).inodes == 0
    (dst / "empty" / "new").write_bytes(b"x" * 10000)
    usage = diff_usage(str(dst), str(src))
    assert usage.inodes == 2  # the new file and the directory it changed
    assert usage.size >= 10000
    os.unlink(dst / "fifo")
    assert diff_usage(str(dst), str(src)).inodes == 3  # plus the root, which lost an entry


def test_remove_tree(src: Path) -> None:
    remove_tree(str(src))
    assert not src.exists()
    remove_tree(str(src))  # already gone: nothing to do


@pytest.fixture
def tmpfs_inside(tmp_path: Path) -> Iterator[Path]:
    tree = tmp_path / "tree"
    (tree / "a" / "mnt").mkdir(parents=True)
    (tree / "a" / "file").touch()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tree / "a" / "mnt")], check=True)
    try:
        (tree / "a" / "mnt" / "precious").write_text("keep me")
        yield tree
    finally:
        subprocess.run(["umount", str(tree / "a" / "mnt")], check=False)


def test_remove_tree_does_not_descend_into_mounts(tmpfs_inside: Path) -> None:
    with pytest.raises(OSError) as err:
        remove_tree(str(tmpfs_inside))
    assert err.value.errno == errno.EBUSY
    assert (tmpfs_inside / "a" / "mnt" / "precious").read_text() == "keep me"
