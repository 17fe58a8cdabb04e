"""Kernel samepage merging (KSM) for a test or a benchmark: ksmd on for a block, the host's
settings back after it, and what a process offers to it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

KSM = Path("/sys/kernel/mm/ksm")
_SETTINGS = ("run", "pages_to_scan", "sleep_millisecs")


def available() -> bool:
    return (KSM / "run").exists()


def read(name: str) -> int:
    return int((KSM / name).read_text())


def _write(name: str, value: int | str) -> None:
    (KSM / name).write_text(str(value))


@contextlib.contextmanager
def running(pages_to_scan: int | None = None, sleep_ms: int | None = None) -> Iterator[None]:
    """ksmd on (optionally scanning faster) for the block; a host that had it off gets it off
    again with everything merged meanwhile unmerged (run=2), so the block leaves no trace."""
    saved = {name: (KSM / name).read_text().strip() for name in _SETTINGS}
    try:
        if pages_to_scan is not None:
            _write("pages_to_scan", pages_to_scan)
        if sleep_ms is not None:
            _write("sleep_millisecs", sleep_ms)
        _write("run", 1)
        yield
    finally:
        if saved["run"] != "1":
            _write("run", 2)
        for name in _SETTINGS:
            _write(name, saved[name])


def set_pace(sleep_ms: int) -> None:
    """ksmd's pause between batches of pages_to_scan pages; inside `running`, which restores it."""
    _write("sleep_millisecs", sleep_ms)


def settle(scans: int = 2, timeout: float = 300.0) -> None:
    """Wait until ksmd has gone over every mergeable page `scans` more times."""
    target = read("full_scans") + scans
    deadline = time.monotonic() + timeout
    while read("full_scans") < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"ksmd did not finish {scans} scans in {timeout}s")
        time.sleep(0.1)


def ksmd_pid() -> int:
    """The ksmd kernel thread's PID (0 when there is none)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == "ksmd":
                    return int(entry)
    return 0


def smaps_kib(pid: int, field: str, flag: str | None = None) -> int:
    """Sum of one smaps field over a process' mappings (those with VmFlags `flag`, if given)."""
    total, value = 0, 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line.startswith(f"{field}:"):
            value = int(line.split()[1])
        elif line.startswith("VmFlags:"):
            if flag is None or flag in line.split()[1:]:
                total += value
            value = 0
    return total
