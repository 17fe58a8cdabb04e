"""supervisor/treecopy.py: the one tree copier (native snapshotter, volume seeds) and the byte and
attribute primitives a build's COPY shares; what one of the three former copiers kept and
another did not, on the real filesystem (as root)."""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.snapshotter.tree import empty, remove_tree
from supervisor.treecopy import copy_bytes, copy_tree, is_empty, set_attributes

pytestmark = pytest.mark.root

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# VFS_CAP_REVISION_2 with CAP_NET_RAW permitted and effective.
CAP = bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    yield src, dst


def copy(src: Path, dst: Path, *, sockets: bool = False) -> tuple[int, int]:
    sfd, dfd = os.open(src, DIR), os.open(dst, DIR)
    try:
        stats = copy_tree(sfd, dfd, sockets=sockets)
        return stats.entries, stats.bytes
    finally:
        os.close(sfd)
        os.close(dfd)


def test_setuid_setgid_and_capabilities_survive_the_chown(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    (src / "ping").write_bytes(b"\x7fELF")
    os.chown(src / "ping", 1000, 1001)
    os.chmod(src / "ping", 0o6755)
    os.setxattr(src / "ping", "security.capability", CAP)
    (src / "shared").mkdir()
    os.chown(src / "shared", 0, 50)
    os.chmod(src / "shared", 0o3775)
    copy(src, dst)
    f, d = (dst / "ping").lstat(), (dst / "shared").lstat()
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1000, 1001, 0o6755)
    assert os.getxattr(dst / "ping", "security.capability") == CAP
    assert (d.st_gid, stat.S_IMODE(d.st_mode)) == (50, 0o3775)


def test_a_symlink_keeps_its_own_owner_times_and_xattrs(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    (src / "target").write_bytes(b"t")
    os.symlink("target", src / "link")
    os.lchown(src / "link", 7, 8)
    # user.* is refused on symlinks by the kernel; trusted.* (root) is not.
    os.setxattr(src / "link", "trusted.own", b"of the link", follow_symlinks=False)
    os.utime(src / "link", ns=(3_000_000_001, 4_000_000_002), follow_symlinks=False)
    copy(src, dst)
    st = (dst / "link").lstat()
    assert os.readlink(dst / "link") == "target"
    assert (st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns) == (7, 8, 3_000_000_001, 4_000_000_002)
    assert os.getxattr(dst / "link", "trusted.own", follow_symlinks=False) == b"of the link"
    assert "trusted.own" not in os.listxattr(dst / "target")  # the link's, not its target's


def test_device_nodes_and_fifos_keep_xattrs_owner_mode_and_times(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "fifo", stat.S_IFIFO | 0o4620)
    for name in ("null", "fifo"):
        os.chown(src / name, 5, 6)
        os.setxattr(src / name, "trusted.k", name.encode())
        os.utime(src / name, ns=(1_000_000_007, 2_000_000_009))
    os.chmod(src / "null", 0o666)  # past the umask
    os.chmod(src / "fifo", 0o4620)  # after chown, which cleared it
    copy(src, dst)
    for name, kind, perm in (("null", stat.S_IFCHR, 0o666), ("fifo", stat.S_IFIFO, 0o4620)):
        st = (dst / name).lstat()
        assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (kind, perm, 5, 6)
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_007, 2_000_000_009)
        assert os.getxattr(dst / name, "trusted.k") == name.encode()
    assert (dst / "null").lstat().st_rdev == os.makedev(1, 3)


def test_hard_links_of_every_kind_stay_links_inside_the_copy(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "file").write_bytes(b"x" * 5000)
    os.link(src / "a" / "file", src / "a" / "b" / "file2")
    os.link(src / "a" / "file", src / "file3")
    os.symlink("a/file", src / "sym")
    os.link(src / "sym", src / "a" / "sym2", follow_symlinks=False)
    os.mkfifo(src / "fifo")
    os.link(src / "fifo", src / "a" / "b" / "fifo2")
    entries, size = copy(src, dst)
    assert (entries, size) == (9, 5000)  # the bytes once
    for first, *others in (("a/file", "a/b/file2", "file3"), ("sym", "a/sym2"), ("fifo", "a/b/fifo2")):
        ino = (dst / first).lstat().st_ino
        assert ino != (src / first).lstat().st_ino
        assert all((dst / o).lstat().st_ino == ino for o in others), first
        assert (dst / first).lstat().st_nlink == 1 + len(others)
    assert os.readlink(dst / "a" / "sym2") == "a/file"


def test_sockets_are_copied_only_when_asked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock"))
    os.chmod(src / "sock", 0o640)
    for sockets, want in ((False, []), (True, ["sock"])):
        dst = tmp_path / f"dst-{sockets}"
        dst.mkdir()
        copy(src, dst, sockets=sockets)
        assert os.listdir(dst) == want
    st = (tmp_path / "dst-True" / "sock").lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640


def test_a_tree_deeper_than_the_recursion_limit(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    depth = sys.getrecursionlimit() + 50
    fd = os.open(src, DIR)
    for _ in range(depth):  # one level at a time: pathlib and os.makedirs recurse
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", DIR, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    os.utime(src / "d", ns=(5, 6))
    try:
        entries, _ = copy(src, dst)
        assert entries == depth + 1
        assert dst.joinpath(*["d"] * depth, "f").is_file()
        assert (dst / "d").stat().st_mtime_ns == 6
    finally:  # iteratively: shutil.rmtree (pytest's cleanup too) recurses
        remove_tree(str(src))
        remove_tree(str(dst))


def test_nothing_is_followed_or_overwritten_in_the_target(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    src, dst = dirs
    outside = tmp_path / "outside"
    outside.mkdir()
    (src / "sub").mkdir()
    (src / "sub" / "f").write_bytes(b"new")
    os.symlink(outside, dst / "sub")  # planted where the copy will make a directory
    with pytest.raises(FileExistsError):
        copy(src, dst)
    assert os.listdir(outside) == []
    assert os.readlink(dst / "sub") == str(outside)


def test_copy_bytes_falls_back_to_sendfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(300_000)
    (tmp_path / "in").write_bytes(data)

    def refuse(*_args: object) -> int:  # as between two file systems that cannot share a copy
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    src = os.open(tmp_path / "in", os.O_RDONLY)
    dst = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert copy_bytes(src, dst, len(data)) == len(data)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "out").read_bytes() == data


def test_copy_bytes_stops_where_a_shrunk_source_ends(tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b"abc")
    src = os.open(tmp_path / "in", os.O_RDONLY)
    dst = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert copy_bytes(src, dst, 1000) == 3  # the size stat said, but the file is shorter now
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "out").read_bytes() == b"abc"


def test_set_attributes_overrides_keep_setuid_after_the_chown(tmp_path: Path) -> None:
    """A build's COPY --chown --chmod: the given owner and mode, the source's times."""
    (tmp_path / "f").write_bytes(b"x")
    os.utime(tmp_path / "f", ns=(11, 22))
    st = os.stat(tmp_path / "f")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        set_attributes(fd, st, owner=(33, 44), mode=0o4711)
    finally:
        os.close(fd)
    got = os.stat(tmp_path / "f")
    assert (got.st_uid, got.st_gid, stat.S_IMODE(got.st_mode), got.st_mtime_ns) == (33, 44, 0o4711, 22)


def test_empty_undoes_a_copy_and_leaves_the_directory_and_its_descriptor(dirs: tuple[Path, Path]) -> None:
    src, dst = dirs
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"x")
    os.symlink("/etc", src / "a" / "etc")  # removed as a link, never followed
    dfd = os.open(dst, DIR)
    try:
        sfd = os.open(src, DIR)
        try:
            copy_tree(sfd, dfd)
        finally:
            os.close(sfd)
        assert not is_empty(dfd)
        empty(dfd)
        assert is_empty(dfd) and os.listdir(dst) == []
        os.mkdir("again", dir_fd=dfd)  # the caller's descriptor still names the directory
    finally:
        os.close(dfd)
    assert os.path.exists("/etc/passwd")  # the link went, not what it points to
    assert (dst / "again").is_dir()
