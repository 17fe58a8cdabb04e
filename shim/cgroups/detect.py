"""Which cgroup driver the host uses, and where each v1 controller is mounted."""

from __future__ import annotations

import os
import re

CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
# v1 controller names as they appear in a cgroup mount's options (other options are flags).
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                            "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"})


def host_version(root: str = CGROUP_ROOT) -> int:
    """2 when ``root`` is the unified hierarchy (it has cgroup.controllers), else 1.

    A "hybrid" host (v1 controllers plus an empty cgroup2 at root/unified) counts as v1: the
    controllers that limit resources live in the v1 hierarchies there.
    """
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040); most fields have none.
    if "\\" not in field:
        return field
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every line of a mountinfo text."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        out.append((_unescape(fields[4]), rfields[0], rfields[2]))
    return out


def v1_mounts(mountinfo: str = MOUNTINFO) -> dict[str, str]:
    """Controller name -> mount point for every cgroup v1 hierarchy (``name=systemd`` included).

    Co-mounted controllers (``cpu,cpuacct``) map to the same mount point. When a hierarchy is
    mounted more than once, the first mount wins.
    """
    with open(mountinfo) as f:
        text = f.read()
    mounts: dict[str, str] = {}
    for point, fstype, opts in parse_mountinfo(text):
        if fstype != "cgroup":
            continue
        for opt in opts.split(","):
            if opt in V1_CONTROLLERS or opt.startswith("name="):
                mounts.setdefault(opt, point)
    return mounts


def v2_mountpoint(mountinfo: str = MOUNTINFO) -> str | None:
    """The first cgroup2 mount point, or None."""
    with open(mountinfo) as f:
        text = f.read()
    for point, fstype, _opts in parse_mountinfo(text):
        if fstype == "cgroup2":
            return point
    return None
