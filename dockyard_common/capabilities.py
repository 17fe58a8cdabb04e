"""Linux capability names (OCI spellings) and the sets containers start with.

Names are what the OCI runtime spec writes (`CAP_SYS_ADMIN`); their position in `ALL` is the
capability's number in linux/capability.h.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

ALL: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# What Docker and containerd give a container that asks for nothing (in containerd's order).
DEFAULT: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_LAST_CAP = Path("/proc/sys/kernel/cap_last_cap")
_STATUS = Path("/proc/self/status")


class UnknownCapability(ValueError):
    """A name that is no Linux capability."""


def normalize(name: str) -> str:
    """`sys_admin`, `SYS_ADMIN` or `CAP_SYS_ADMIN` as `CAP_SYS_ADMIN` (`ALL` stays `ALL`)."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in ALL:
        raise UnknownCapability(f"unknown capability {name!r}")
    return full


def supported() -> list[str]:
    """The capabilities this kernel knows (all of `ALL` when it does not say)."""
    try:
        last = int(_LAST_CAP.read_text())
    except (OSError, ValueError):
        return list(ALL)
    return list(ALL[: last + 1])


def current() -> list[str]:
    """The capabilities this process has in effect, of those this kernel knows: what "every
    capability" can mean for a container we start (containerd's WithAllCurrentCapabilities).
    A host whose own bounding set lacks one (a container host inside a container) could not
    give it: asking for it would make the runtime's capset fail."""
    known = supported()
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return [c for i, c in enumerate(known) if mask >> i & 1]
    except (OSError, ValueError, IndexError):
        pass
    return known


def tweak(base: Iterable[str], add: Iterable[str], drop: Iterable[str]) -> list[str]:
    """Docker's --cap-add/--cap-drop: `base` minus `drop`, then `add` (so a name both added and
    dropped is kept); `ALL` in `add` means every capability we have (`current()`) but the
    dropped ones, `ALL` in `drop` means only the added ones. Raises UnknownCapability."""
    adds = [normalize(c) for c in add]
    drops = [normalize(c) for c in drop]
    if "ALL" in adds:
        return [c for c in current() if c not in drops]
    out = [] if "ALL" in drops else [c for c in base if c not in drops]
    for cap in adds:
        if cap not in out:
            out.append(cap)
    return out
