"""The shim zygote ends with the daemon state it serves, also when its socket lives elsewhere.

A long runtime state dir puts the zygote's socket in the shared fallback dir (sun_path is short),
so the socket outlives the state dir; the zygote must still notice the state dir going away."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim import zygote
from tests.waiting import wait_until


def _zygotes_serving(path: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if (entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "dockyard-zygote"
                    and path.encode() in Path(f"/proc/{entry}/cmdline").read_bytes()):
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    """(a runtime state dir, a separate dir for the socket, as the fallback dir would be)."""
    base = Path(tempfile.mkdtemp(prefix="dy-zygote-"))
    root, sockets = base / "state" / "tasks", base / "sockets"
    root.mkdir(parents=True)
    sockets.mkdir()
    yield root, sockets
    for pid in _zygotes_serving(str(sockets)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def test_the_zygote_exits_when_its_state_dir_is_removed(dirs: tuple[Path, Path]) -> None:
    root, sockets = dirs
    path = str(sockets / "zygote-test.sock")
    zygote.launch_zygote(path, str(root))
    wait_until(lambda: os.path.exists(path), 30, what="the zygote to listen")
    [pid] = _zygotes_serving(path)
    shutil.rmtree(root)
    wait_until(lambda: not _alive(pid), 15, what="the zygote to exit with its state dir")
    assert not os.path.exists(path)  # it took its socket with it


def test_the_zygote_exits_when_its_socket_is_removed(dirs: tuple[Path, Path]) -> None:
    root, sockets = dirs
    path = str(sockets / "zygote-test.sock")
    zygote.launch_zygote(path, str(root))
    wait_until(lambda: os.path.exists(path), 30, what="the zygote to listen")
    [pid] = _zygotes_serving(path)
    os.unlink(path)
    wait_until(lambda: not _alive(pid), 15, what="the zygote to exit without its socket")
    assert root.is_dir()
