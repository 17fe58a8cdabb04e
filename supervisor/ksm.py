"""Whether the host merges our shims' shared pages (kernel samepage merging; see shim/zygote.py)."""

from __future__ import annotations

RUN = "/sys/kernel/mm/ksm/run"


def state(path: str = RUN) -> str:
    """"on" while ksmd runs, "off" when it does not, "unavailable" for a kernel without KSM."""
    try:
        with open(path) as f:
            return "on" if f.read().strip() == "1" else "off"
    except OSError:
        return "unavailable"
