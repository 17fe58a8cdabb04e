"""dock's read-only view of a container's filesystem (dock/rootfs.py: run reads the image's /etc
files through it, export and diff walk it): the mount is detached at once and reached through a
descriptor, so a dock killed while it reads leaves no mount behind (it used to leave
/tmp/dock-rootfs-* mounted for good, e.g. when an image's /etc/passwd was a FIFO that hung it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dock.rootfs import mounted_readonly
from dockyard_common.mountinfo import mountinfo
from dockyard_common.types import Mount
from tests.daemon import REPO

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]


def _dock_rootfs_mounts() -> list[str]:
    """dock's views mounted, and their temp dirs (neither is left while one is read)."""
    return [p for p, _, _ in mountinfo() if "/dock-rootfs-" in p] + [str(p) for p in Path("/tmp").glob("dock-rootfs-*")]


def test_the_view_is_readable_and_nothing_is_mounted_meanwhile(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    before = _dock_rootfs_mounts()
    with mounted_readonly([Mount(type="bind", source=str(tmp_path), target="", options=["rbind", "ro"])]) as root:
        assert (root / "etc" / "passwd").read_text() == "root:x:0:0::/:/bin/sh\n"
        assert sorted(os.listdir(root)) == ["etc"]
        with pytest.raises(OSError):
            (root / "new").write_text("x")  # read-only
        assert _dock_rootfs_mounts() == before  # detached already: nothing to leave behind
    assert _dock_rootfs_mounts() == before


def test_a_dock_killed_while_reading_leaves_no_mount(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    before = _dock_rootfs_mounts()
    code = (
        "import sys, time\n"
        "from dock.rootfs import mounted_readonly\n"
        "from dockyard_common.types import Mount\n"
        f"with mounted_readonly([Mount(type='bind', source={str(tmp_path)!r}, target='', options=['rbind'])]) as r:\n"
        "    print((r / 'f').read_text(), flush=True)\n"
        "    sys.stdin.read()\n"  # holds the view until killed
    )
    with subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "x\n"
        finally:
            proc.kill()  # SIGKILL by PID, mid-read
            proc.wait(30)
    assert _dock_rootfs_mounts() == before
