"""Docker's State.OOMKilled as a container label the daemon keeps (supervisor/runtime/oom.py).

    dockyard.oom-killed    "true": the kernel's OOM killer killed a process in the container's
                           cgroup during its current (or last) run. Removed when the next run's
                           task is created, as Docker clears OOMKilled at a start.

Any client reads it from the container record (`dock inspect` shows it as State.OOMKilled, the
CRI's ContainerStatus as reason "OOMKilled"); only the daemon writes it.
"""

from __future__ import annotations

from collections.abc import Mapping

LABEL = "dockyard.oom-killed"


def killed(labels: Mapping[str, str]) -> bool:
    return labels.get(LABEL) == "true"
