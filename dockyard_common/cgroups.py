"""The host's cgroup layout and the rules for Dockyard's own cgroups, for the shim and the daemon.

- *version*: 2 when /sys/fs/cgroup is the unified hierarchy, else 1 (a "hybrid" host, v1
  controllers plus an empty cgroup2 at <root>/unified, counts as v1: the controllers that limit
  resources live in the v1 hierarchies there).
- *parent*: every cgroup Dockyard makes lives under one directory named ``dockyard`` at the top of
  each hierarchy. Nothing outside it is ever created, written or removed (`check_inside`).
- *cgroups path*: the OCI ``linux.cgroupsPath``, relative to the parent (`normalize_path`).

The shim makes and removes its containers' cgroups; the daemon reports the driver and prunes the
levels a foreign shim leaves behind. Both remove empty levels with `prune_parents`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from dockyard_common.errors import InvalidArgument
from dockyard_common.mountinfo import MOUNTINFO, mountinfo

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "dockyard"
# v1 controller names as they appear in a cgroup mount's options (other options are flags).
NAME_MAX = 255
MAX_PATH = 2048  # of a cgroups path; PATH_MAX (4096) leaves room for the hierarchy and file names
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                            "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"})


# ----- the host's layout -------------------------------------------------------------------------


def host_version(root: str = CGROUP_ROOT) -> int:
    """2 when ``root`` is the unified hierarchy (it has cgroup.controllers), else 1."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def detect_cgroup_driver(root: str = CGROUP_ROOT) -> str:
    """"v2" or "v1", as the daemon reports it (`host_version`)."""
    return f"v{host_version(root)}"


def v1_mounts(path: str = MOUNTINFO) -> dict[str, str]:
    """Controller name -> mount point for every cgroup v1 hierarchy (``name=systemd`` included).

    Co-mounted controllers (``cpu,cpuacct``) map to the same mount point. When a hierarchy is
    mounted more than once, the first mount wins.
    """
    mounts: dict[str, str] = {}
    for point, fstype, opts in mountinfo(path):
        if fstype != "cgroup":
            continue
        for opt in opts.split(","):
            if opt in V1_CONTROLLERS or opt.startswith("name="):
                mounts.setdefault(opt, point)
    return mounts


def v2_mountpoint(path: str = MOUNTINFO) -> str | None:
    """The first cgroup2 mount point, or None."""
    return next((point for point, fstype, _ in mountinfo(path) if fstype == "cgroup2"), None)


# ----- our cgroups -------------------------------------------------------------------------------


def normalize_path(cgroups_path: str) -> str:
    """The cgroups path relative to the parent, without leading slash: "/default/c1" -> "default/c1".

    Refuses what could leave the parent or is not a plain path (InvalidArgument).
    """
    if not isinstance(cgroups_path, str) or not cgroups_path.strip("/"):
        raise InvalidArgument(f"cgroups path {cgroups_path!r} must name a cgroup")
    if any(c in cgroups_path for c in "\0\n") or ":" in cgroups_path:
        # "slice:prefix:name" is the systemd driver's syntax, which Dockyard does not speak.
        raise InvalidArgument(f"cgroups path {cgroups_path!r} is not a cgroupfs path")
    parts = [p for p in cgroups_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"cgroups path {cgroups_path!r} escapes the {PARENT} cgroup")
    if not parts:
        raise InvalidArgument(f"cgroups path {cgroups_path!r} must name a cgroup")
    # Bounded so every file path below a hierarchy stays under PATH_MAX (mkdir would fail
    # half-way with ENAMETOOLONG) and each level is a name other filesystems accept too.
    rel = "/".join(parts)
    if len(rel.encode()) > MAX_PATH or any(len(p.encode()) > NAME_MAX for p in parts):
        raise InvalidArgument(f"cgroups path {cgroups_path[:80]!r}: too long (at most {MAX_PATH} bytes, "
                              f"{NAME_MAX} per level)")
    return rel


@functools.lru_cache(maxsize=256)
def _resolved_dir(path: str) -> str:
    """A directory's real path, remembered: a Create writes ~30 files in a dozen directories,
    and resolving each file's path anew was ~5 ms of it. Sound because cgroupfs cannot hold
    symlinks: only the mount points above it could be links, and those do not change."""
    return os.path.realpath(path)


def check_inside(path: str, parent: str) -> str:
    """Return ``path`` if it lies strictly under ``parent`` (both resolved), else InvalidArgument.

    Every write goes through this: a bug elsewhere must not reach the host's own cgroups.
    """
    directory, name = os.path.split(path)
    if name in ("", ".", ".."):
        real = os.path.realpath(path)
    else:
        real = os.path.join(_resolved_dir(directory), name)
    top = _resolved_dir(parent)
    if real != top and not real.startswith(top + os.sep):
        raise InvalidArgument(f"cgroup file {path} is outside {parent}")
    return real


def prune_parents(directory: str, top: str, keep: Callable[[str], bool] | None = None) -> None:
    """rmdir the ancestors of the removed cgroup ``directory`` that are empty now, up to (not
    including) ``top``: a namespace's directory goes with its last container.

    A level still holding a cgroup or a process refuses (EBUSY/ENOTEMPTY) and ends the walk,
    as does one already gone, or one `keep` (given the level's path relative to ``top``) wants
    kept: another container lives there, or is being created right now (whose ``make_dirs``
    starts again if we win the race). Nothing outside ``top`` is touched (InvalidArgument).
    """
    top = os.path.normpath(top)
    parent = os.path.dirname(os.path.normpath(directory))
    while parent.startswith(top + os.sep):
        if keep is not None and keep(parent[len(top) + 1:]):
            return
        check_inside(parent, top)
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = os.path.dirname(parent)
