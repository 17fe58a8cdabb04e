"""A stdio path swapped between the shim's check and its open gains nothing (shim/stdiocheck.py,
shim/stdio.py). The shim judged a path by name (`check_stdio`, stat(2)) and then opened it by
name: a client that replaced the path in between (a symlink, a rename, a bind mount) had the
shim open /proc/self/mem, a memory device or a /proc file with its rights and hand it to the
process. Now the path itself is opened O_PATH|O_NOFOLLOW, that fd is judged, and every fd used is
opened from it. Each test here passes the early check, swaps the path, and opens: a real race
made deterministic. Root: device nodes and bind mounts."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument
from shim.stdio import ProcessIO, StdioPaths
from shim.stdiocheck import check_stdio

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="device nodes and mounts need root")]


def swap(path: Path, make: Path) -> None:
    """Replace `path` by `make` at once (rename(2): no moment without a file at the path)."""
    os.rename(make, path)


def passes_then_swapped(tmp_path: Path, uri_of: str, to: Path) -> StdioPaths:
    """A regular file that passes the early check as stdout, then swapped for `to`."""
    path = tmp_path / "out"
    path.touch()
    paths = StdioPaths(stdout=uri_of.format(path=path))
    check_stdio(paths)  # what Create/Exec/Start judge first
    swap(path, to)
    return paths


def refused(paths: StdioPaths, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match) as info:
        io = ProcessIO.open(paths)
        io.close()  # old code: opened what the swap put there
    assert "Error" not in info.value.message and "[Errno" not in info.value.message


@pytest.mark.parametrize("uri", ["{path}", "fifo://{path}", "file://{path}"])
def test_a_symlink_to_proc_self_mem_swapped_in_after_the_check(tmp_path: Path, uri: str) -> None:
    link = tmp_path / "link"
    link.symlink_to("/proc/self/mem")
    refused(passes_then_swapped(tmp_path, uri, link), "symbolic link")
    assert (tmp_path / "out").is_symlink()  # nothing was written through it either


@pytest.mark.parametrize("uri", ["{path}", "file://{path}"])
def test_a_memory_device_renamed_in_after_the_check(tmp_path: Path, uri: str) -> None:
    """/dev/kmsg's number (1, 11): the host's kernel log, which the old open handed over (this
    host's kernel has no /dev/mem, whose number is refused alike)."""
    node = tmp_path / "kmsg"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    refused(passes_then_swapped(tmp_path, uri, node), "memory device")


def test_a_fifo_renamed_over_a_file_uri_is_not_opened(tmp_path: Path) -> None:
    """file:// names a log file: a FIFO there would be opened write-only (blocking without a
    reader) and handed to the process. A reader is held so that an open does not block."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        refused(passes_then_swapped(tmp_path, "file://{path}", fifo), "not a regular file")
    finally:
        os.close(reader)


@contextlib.contextmanager
def bind(source: str, target: Path) -> Iterator[None]:
    subprocess.run(["mount", "--bind", source, str(target)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("uri", ["{path}", "file://{path}"])
def test_a_proc_file_bind_mounted_over_the_path_after_the_check(tmp_path: Path, uri: str) -> None:
    """No symlink at all: only judging the open file sees it is procfs's."""
    path = tmp_path / "out"
    path.touch()
    paths = StdioPaths(stdout=uri.format(path=path))
    check_stdio(paths)
    with bind("/proc/sys/kernel/hostname", path):
        refused(paths, "procfs")
    assert path.stat().st_size == 0


def test_a_magic_link_to_one_of_the_shims_own_pipes(tmp_path: Path) -> None:
    """/proc/self/fd/N followed is the shim's pipe N (another container's output, its wakeup
    pipe): a FIFO by stat(2), so the name check let it through."""
    r, w = os.pipe()
    try:
        for paths in (StdioPaths(stdout=f"/proc/self/fd/{w}"), StdioPaths(stdin=f"/proc/self/fd/{r}")):
            refused(paths, "symbolic link")
    finally:
        os.close(r)
        os.close(w)


def test_a_swap_after_the_judgement_changes_nothing_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between judging and opening is gone: the path is swapped for a symlink to
    /proc/self/mem right after the open file was judged, and what is opened is still the FIFO."""
    import shim.stdio

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    link = tmp_path / "link"
    link.symlink_to("/proc/self/mem")
    judge = shim.stdio.judge

    def judge_then_swap(fd: int, name: str, path: str, regular: bool = False) -> os.stat_result:
        st = judge(fd, name, path, regular)
        swap(fifo, link)
        return st

    monkeypatch.setattr(shim.stdio, "judge", judge_then_swap)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the FIFO's inode, whatever its name becomes
    io = ProcessIO.open(StdioPaths(stdout=str(fifo)))
    try:
        assert fifo.is_symlink()
        end = io._ends[1]
        assert end is not None and end.fifo
        os.write(end.fd, b"to the fifo")
        assert os.read(reader, 100) == b"to the fifo"
    finally:
        io.close()
        os.close(reader)


def test_what_a_client_may_name_still_opens(tmp_path: Path) -> None:
    """FIFOs (ctr's, the daemon's), a regular file, /dev/null, a new and an existing file:// log."""
    fifos = [tmp_path / n for n in ("in", "out", "err")]
    for f in fifos:
        os.mkfifo(f, 0o600)
    existing = tmp_path / "existing.log"
    existing.write_bytes(b"kept\n")
    new = tmp_path / "sub" / "new.log"  # its directory is made, as containerd's shim does
    for paths in (StdioPaths(str(fifos[0]), str(fifos[1]), str(fifos[2])), StdioPaths(f"fifo://{fifos[0]}", f"fifo://{fifos[1]}"),
                  StdioPaths("/dev/null", "/dev/null", "/dev/null"), StdioPaths(stdout=str(existing)),
                  StdioPaths(stdout=f"file://{existing}"), StdioPaths(stdout=f"file://{new}", stderr=f"file://{new}")):
        check_stdio(paths)
        io = ProcessIO.open(paths)
        fds = io.child_fds()
        for fd in (fds.stdout, fds.stderr):
            if fd is not None:  # what the process gets blocks as a file it opened would
                assert os.get_blocking(fd)
        io.close()
    assert existing.read_bytes() == b"kept\n"
    assert stat.S_IMODE(new.stat().st_mode) == 0o600


def test_the_early_check_words_a_symlink_as_the_open_does(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.touch()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        check_stdio(StdioPaths(stdout=str(link)))
    with pytest.raises(InvalidArgument, match="symbolic link"):
        ProcessIO.open(StdioPaths(stdout=str(link)))
