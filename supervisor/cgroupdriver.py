"""Which cgroup hierarchy the host mounts: the unified v2 one or the v1 controllers."""

from __future__ import annotations

import os


def detect_cgroup_driver(root: str = "/sys/fs/cgroup") -> str:
    # cgroup2 exposes cgroup.controllers at its root; a v1 host mounts a tmpfs with one
    # directory per controller (a hybrid host's unified/ dir is not used for controllers).
    return "v2" if os.path.exists(os.path.join(root, "cgroup.controllers")) else "v1"
