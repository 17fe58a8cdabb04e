"""The differ's descriptor walk (supervisor/archive/diff.py): a tree that changes while it is
walked (a running container's live snapshot) never makes it follow a symlink, open a device or
FIFO, or read anything outside the two trees; deep trees keep few descriptors open and give the
bytes a wide window gives; every descriptor is closed, whatever happens.

The changes are made at the worst moments through the walk's own seams (the listing `_names`,
the opening `_Node.open`, the lower lstat `_lstat`), and by a thread swapping names with
renameat2(RENAME_EXCHANGE) while walks run.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition
from supervisor.archive import diff
from supervisor.archive.diff import write_diff

SECRET = b"host secret\n"
_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically, as the hostile container does."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(a))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory outside both trees holding a secret."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    return outside


def make_trees(tmp_path: Path, host: Path) -> tuple[Path, Path]:
    """lower: x/d/f; upper: the same with x/d/f changed, a new x/d/g, and x/s a symlink to the host."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        (root / "x" / "d").mkdir(parents=True)
        (root / "x" / "d" / "f").write_bytes(b"old\n")
        os.utime(root / "x" / "d" / "f", ns=(10**18, 10**18))
    (upper / "x" / "d" / "f").write_bytes(b"new\n")
    (upper / "x" / "d" / "g").write_bytes(b"added\n")
    os.symlink(host, upper / "x" / "s")
    return lower, upper


def members(raw: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (kind, contents or link target)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            kind = "dir" if m.isdir() else "sym" if m.issym() else "fifo" if m.isfifo() else "file"
            out[m.name] = (kind, f.read() if f is not None else m.linkname.encode())
    return out


def assert_no_host_data(raw: bytes) -> None:
    for name, (_kind, data) in members(raw).items():
        assert not name.rstrip("/").endswith("secret") and SECRET not in data, (name, data)


def run(lower: Path, upper: Path, **kw: object) -> bytes:
    out = io.BytesIO()
    write_diff(lower, upper, out, whiteout_mtime=1, **kw)  # type: ignore[arg-type]
    return out.getvalue()


def where(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def open_fds() -> int:
    """Descriptors open in this process, but the one the differ keeps for good (/proc/self/fd)."""
    return len([fd for fd in os.listdir("/proc/self/fd") if int(fd) != diff._proc_fd])


def on_listing(monkeypatch: pytest.MonkeyPatch, path: Path, action: Callable[[], None]) -> None:
    """Run `action` once, right after the walk listed the directory `path`."""
    real = diff._names
    done: list[int] = []

    def names(fd: int) -> list[bytes]:
        listed = real(fd)
        if not done and where(fd) == str(path):
            done.append(1)
            action()
        return listed
    monkeypatch.setattr(diff, "_names", names)


def test_a_still_tree_gives_the_expected_entries(tmp_path: Path, host: Path) -> None:
    lower, upper = make_trees(tmp_path, host)
    got = members(run(lower, upper))
    assert got == {"x": ("dir", b""), "x/d": ("dir", b""), "x/d/f": ("file", b"new\n"),
                   "x/d/g": ("file", b"added\n"), "x/s": ("sym", os.fsencode(host))}


def test_a_directory_swapped_for_a_symlink_after_the_listing_is_the_symlink(tmp_path: Path, host: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = make_trees(tmp_path, host)
    on_listing(monkeypatch, upper / "x", lambda: exchange(upper / "x" / "d", upper / "x" / "s"))
    raw = run(lower, upper)
    assert_no_host_data(raw)
    got = members(raw)
    # d is the symlink now (written as one, never followed); s the directory, walked as added.
    assert got["x/d"] == ("sym", os.fsencode(host))
    assert got["x/s/f"] == ("file", b"new\n") and got["x/s/g"] == ("file", b"added\n")
    assert not any(n.startswith("x/d/") for n in got)


def test_a_swap_between_opening_and_descending_walks_the_directory_that_was_opened(
        tmp_path: Path, host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = make_trees(tmp_path, host)
    real = diff._Node.open

    def node_open(dir_fd: int, name: bytes) -> diff._Node | None:
        node = real(dir_fd, name)
        if name == b"d" and where(dir_fd) == str(upper / "x"):
            exchange(upper / "x" / "d", upper / "x" / "s")  # the name is a symlink to the host now
        return node
    monkeypatch.setattr(diff._Node, "open", staticmethod(node_open))
    raw = run(lower, upper)
    assert_no_host_data(raw)
    got = members(raw)
    assert got["x/d/f"] == ("file", b"new\n") and got["x/d/g"] == ("file", b"added\n")


def test_a_lower_directory_swapped_after_its_lstat_is_not_followed(tmp_path: Path, host: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = make_trees(tmp_path, host)
    os.symlink(host, lower / "x" / "s")
    real = diff._lstat

    def lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
        st = real(dir_fd, name)
        if name == b"d" and where(dir_fd) == str(lower / "x"):
            exchange(lower / "x" / "d", lower / "x" / "s")
        return st
    monkeypatch.setattr(diff, "_lstat", lstat)
    raw = run(lower, upper)
    assert_no_host_data(raw)
    got = members(raw)
    # Not the directory lstat saw: upper's d is compared with nothing, so all of it is written.
    assert got["x/d/f"] == ("file", b"new\n") and got["x/d/g"] == ("file", b"added\n")


def test_a_lower_file_swapped_for_a_symlink_before_the_comparison_is_a_change(tmp_path: Path, host: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        root.mkdir()
        (root / "f").write_bytes(b"same\n")
        os.utime(root / "f", ns=(10**18, 10**18))  # whole seconds on both sides: contents compared
    os.symlink(host / "secret", lower / "l")
    real = diff._lstat

    def lstat(dir_fd: int, name: bytes) -> os.stat_result | None:
        st = real(dir_fd, name)
        if name == b"f" and where(dir_fd) == str(lower):
            exchange(lower / "f", lower / "l")
        return st
    monkeypatch.setattr(diff, "_lstat", lstat)
    raw = run(lower, upper)
    assert members(raw) == {"f": ("file", b"same\n"), ".wh.l": ("file", b"")}


def test_a_fifo_or_device_swapped_in_for_a_file_is_never_opened(tmp_path: Path, host: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (upper / "f").write_bytes(b"data\n")
    os.mkfifo(upper / "p")
    on_listing(monkeypatch, upper, lambda: exchange(upper / "f", upper / "p"))
    result: list[bytes] = []
    walker = threading.Thread(target=lambda: result.append(run(lower, upper)), daemon=True)
    walker.start()
    walker.join(30)  # a deadline, not a wait: an open FIFO would block it for good
    if walker.is_alive():
        os.close(os.open(upper / "f", os.O_WRONLY | os.O_NONBLOCK))  # let it go
        pytest.fail("the walk opened the FIFO swapped in for a file")
    got = members(result[0])
    assert got["f"][0] == "fifo" and got["p"] == ("file", b"data\n")


def test_a_thread_swapping_directories_and_host_symlinks_never_leaks(tmp_path: Path, host: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    (upper / "x").mkdir(parents=True)
    pairs = []
    for i in range(20):
        d, s = upper / "x" / f"d{i}", upper / "x" / f"s{i}"
        d.mkdir()
        (d / "f").write_bytes(b"inside\n")
        os.symlink(host, s)
        pairs.append((d, s))
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            for d, s in pairs:
                exchange(d, s)
                swaps[0] += 1
    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    try:
        for _ in range(30):
            assert_no_host_data(run(lower, upper))
    finally:
        stop.set()
        t.join()
    assert swaps[0] > 0


def deep_tree(root: Path, depth: int, name: bytes = b"level") -> None:
    """`depth` nested directories under `root`, each with a file before and after its child,
    built by descriptors (the path may be longer than PATH_MAX)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            for f in (b"a", b"z"):
                with open(os.open(f, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as w:
                    w.write(b"%d\n" % i)
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
    finally:
        os.close(fd)


def test_a_deep_tree_keeps_few_descriptors_and_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    deep_tree(lower, 60)
    deep_tree(upper, 60)
    (upper / "level" / "level" / "new").write_bytes(b"n\n")
    wide = run(lower, upper)
    before = open_fds()
    seen: list[int] = []
    real = diff._names

    def names(fd: int) -> list[bytes]:
        seen.append(open_fds())
        return real(fd)
    monkeypatch.setattr(diff, "_names", names)
    monkeypatch.setattr(diff, "_OPEN_LEVELS", 3)
    assert run(lower, upper) == wide
    assert max(seen) - before <= 3 * (3 + 1) + 4, max(seen) - before  # per tree: the window and the root
    assert open_fds() == before


def test_a_path_past_path_max_is_a_clear_error_and_closes_everything(tmp_path: Path) -> None:
    """(containerd's walk cannot name such a path either; test_commit_hostile.py has the words.)"""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    deep_tree(upper, 600, b"directory")  # 6 000 bytes of path
    before = open_fds()
    with pytest.raises(OSError) as e:
        run(lower, upper)
    assert e.value.errno == errno.ENAMETOOLONG and len(e.value.filename) > 4096
    assert open_fds() == before
    # Just short of it, walked (depth 400 with a window of 64 open directories per tree).
    shallower = tmp_path / "shallower"
    shallower.mkdir()
    deep_tree(shallower, 400, b"dirname")  # 3 200 bytes of path
    assert len(members(run(lower, shallower))) == 400 * 3 and open_fds() == before


def test_a_directory_moved_away_during_a_deep_walk_leaves_the_rest_of_it_out(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    deep_tree(upper, 6)
    lv = b"level"
    b_dir = upper / "level" / "level"  # frame 2
    c_dir = b_dir / "level"  # frame 3

    def move() -> None:
        # c leaves b (so c's ".." is not b) and b leaves its name (so b cannot be found again).
        os.rename(c_dir, upper / "moved-c")
        os.rename(b_dir, upper / "moved-b")
    real = diff._names
    done: list[int] = []

    def names(fd: int) -> list[bytes]:
        listed = real(fd)
        if not done and where(fd).endswith("/level/level/level/level/level"):
            done.append(1)
            move()
        return listed
    monkeypatch.setattr(diff, "_names", names)
    monkeypatch.setattr(diff, "_OPEN_LEVELS", 2)
    before = open_fds()
    got = members(run(lower, upper))
    assert open_fds() == before
    prefix = lambda n: b"/".join([lv] * n).decode()  # noqa: E731
    assert f"{prefix(1)}/z" in got  # a was reached again from the root
    assert f"{prefix(2)}/z" not in got  # b moved: the rest of it left out
    assert f"{prefix(5)}/z" in got  # what was walked before the move


def test_every_descriptor_is_closed_when_the_walk_fails(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    deep_tree(upper, 80)
    deep_end = upper / "/".join(["level"] * 70)
    (deep_end / ".wh.bad").write_bytes(b"x")
    before = open_fds()
    with pytest.raises(FailedPrecondition, match="whiteouts"):
        run(lower, upper)
    assert open_fds() == before


def test_an_error_names_the_path_in_the_tree(tmp_path: Path, host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lower, upper = make_trees(tmp_path, host)

    def broken(path_fd: int) -> int:
        raise OSError(errno.EIO, "Input/output error", b"/proc/self/fd/%d" % path_fd)
    monkeypatch.setattr(diff, "_reopen", broken)
    with pytest.raises(OSError) as e:
        run(lower, upper)
    assert e.value.errno == errno.EIO and e.value.filename == os.fsencode(upper / "x" / "d" / "f")


def test_the_upperdir_walk_never_lists_what_the_step_did_not_touch(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """(`changed`: only names the overlay upperdir holds are compared; an untouched directory is
    not even listed.) Plain directories stand in for the overlay: upper = lower + `new`."""
    lower, upper, changed = tmp_path / "lower", tmp_path / "upper", tmp_path / "changed"
    for root in (lower, upper):
        (root / "big").mkdir(parents=True)
        for i in range(20):
            (root / "big" / f"f{i}").write_text("x")
    changed.mkdir()
    (upper / "new").write_text("n")
    (changed / "new").write_text("n")
    listed: list[str] = []
    real = diff._names

    def names(fd: int) -> list[bytes]:
        listed.append(where(fd))
        return real(fd)
    monkeypatch.setattr(diff, "_names", names)
    assert list(members(run(lower, upper, changed=changed))) == ["new"]
    assert not any(p.endswith("/big") for p in listed), listed


@pytest.fixture(autouse=True)
def _no_leaked_descriptors() -> Iterator[None]:
    before = open_fds()
    yield
    assert open_fds() == before
