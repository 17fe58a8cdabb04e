"""Where a process's cgroups are on this host (v1 hierarchies, the unified one, or both)."""

from __future__ import annotations

from pathlib import Path


def cgroup_dir(pid: int, controller: str) -> Path:
    """The directory of the process's cgroup for `controller` (v1), or its unified cgroup (v2)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {pid}")


def unmount_private(root: str) -> None:
    """Unmount and remove a test's private cgroup mount at `root`. Busy (an fd a test leaked below
    it, a claim's flock say), it is detached anyway, so nothing stays mounted, and the test fails."""
    import os
    import subprocess

    busy = subprocess.run(["umount", root], capture_output=True, text=True)
    if busy.returncode != 0:
        subprocess.run(["umount", "-l", root], check=True)
    os.rmdir(root)
    assert busy.returncode == 0, f"{root} was busy at the end (detached): {busy.stderr.strip()}"
