"""Value types the daemon, the shim and dock all speak, each defined once."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Mount:
    """One mount to perform, as `mount -t <type> -o <options> <source> <target>`.

    `target` is relative to the directory the whole list is mounted on; "" means
    that directory itself (containerd's `mount.Mount`).
    """

    type: str
    source: str
    target: str = ""
    options: list[str] = field(default_factory=list)
