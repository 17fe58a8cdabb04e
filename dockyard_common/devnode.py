"""A host device node as a container's spec names it: its type, numbers and owner (for `dock run
--device` and the CRI's devices)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument


@dataclass(frozen=True)
class DeviceNode:
    kind: str  # "c" or "b", as OCI's linux.devices[].type and the device cgroup's rules
    major: int
    minor: int
    mode: int  # the permission bits
    uid: int
    gid: int


def device_node(path: str) -> DeviceNode:
    """Blocking: stat the host's device at `path` (InvalidArgument when it is none, or missing)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"device {path}: {exc.strerror or 'cannot be read'}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise InvalidArgument(f"device {path}: not a character or block device")
    return DeviceNode(kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
