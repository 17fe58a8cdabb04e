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
