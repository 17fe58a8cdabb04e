"""cgroup drivers for the shim: v1 (one hierarchy per controller) and v2 (unified).

``new_manager()`` picks the driver the host uses; everything else is in ``base`` (the contract
and its dataclasses), ``v1``, ``v2`` and ``metrics`` (containerd Metrics messages). The host's
layout and the rules for the parent live in ``dockyard_common.cgroups`` (the daemon uses them too).
"""

from __future__ import annotations

from dockyard_common.cgroups import CGROUP_ROOT, PARENT, host_version, v1_mounts

from .base import CgroupManager, EventWatch, Resources, Stats
from .v1 import V1Manager
from .v2 import V2Manager


def new_manager(root: str = CGROUP_ROOT) -> CgroupManager:
    """A manager for the host's cgroup layout (v2 when ``root`` is the unified hierarchy)."""
    if host_version(root) == 2:
        return V2Manager(root)
    return V1Manager(v1_mounts())


__all__ = ["PARENT", "CgroupManager", "EventWatch", "Resources", "Stats", "V1Manager", "V2Manager",
           "new_manager"]
