"""Docker's `--rm` (HostConfig.AutoRemove) as a container label the daemon honours.

`dock run --rm` sets it; the daemon's exit monitor (supervisor/runtime/restart.py), seeing the
init of such a container exit, removes the task, the container, its rootfs snapshot and its
anonymous volumes (dockyard_common/volumelabels.py), whether a client is attached or not
(detached `-d --rm`, `-it --rm` then ctrl-p ctrl-q, a client that was killed). A daemon that
starts removes those whose task ended while none watched. A restart policy wins over it (`dock`
refuses the two together, as Docker does).

    dockyard.auto-remove         "true"
    dockyard.auto-remove.held    set while `dock restart` stops and starts it again: that exit
                                 is no reason to remove it (Docker's restart keeps an --rm container)
"""

from __future__ import annotations

from collections.abc import Mapping

LABEL = "dockyard.auto-remove"
HELD = "dockyard.auto-remove.held"


def labels() -> dict[str, str]:
    return {LABEL: "true"}


def wanted(found: Mapping[str, str]) -> bool:
    return found.get(LABEL) == "true" and HELD not in found
