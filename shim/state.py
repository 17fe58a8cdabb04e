"""Durable files a shim keeps in its bundle, for `delete` and for a daemon that restarts.

    init.pid        the container init's PID, as runc's --pid-file writes it
    init.start      the init's start time (field 22 of /proc/PID/stat): a PID alone may be reused
    exit            the init's exit, JSON {"pid", "status", "exited_at" (ns since the epoch)}
    cgroup          the cgroups path the shim made (relative to the dockyard parent)
    shim.pid        the serving shim's PID (of the bundle it was started for: one of a group
                    that joined a running shim has none)
    address         the shim's ttrpc address (`unix:///path`)

Every write is write → rename (habit 4), so a reader sees the old file or the new one. Not
fsynced: the files describe processes that a host crash ends anyway, and they only have to
outlive the shim or the daemon, which the page cache does (the fsyncs cost ~4 ms per Create on a
disk-backed state dir). The shim writes them inline (it has no threads to hand them to), at
moments that happen once per process.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from dockyard_common.shimlaunch import write_bundle_file as write_file  # one atomic write for both

INIT_PID = "init.pid"
INIT_START = "init.start"
EXIT = "exit"
CGROUP = "cgroup"
SHIM_PID = "shim.pid"
ADDRESS = "address"


@dataclass(frozen=True)
class ExitRecord:
    pid: int
    status: int
    exited_at: int  # nanoseconds since the epoch


def read_file(bundle: str, name: str) -> str:
    """The file's text, stripped; "" when it does not exist."""
    try:
        with open(os.path.join(bundle, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot), None when the process is gone.

    A zombie counts as gone: it runs nothing and only its parent's wait can remove it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after its last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def save_init(bundle: str, pid: int) -> None:
    start = process_start_time(pid)
    write_file(bundle, INIT_START, str(start or 0))
    write_file(bundle, INIT_PID, str(pid))


def load_init(bundle: str) -> tuple[int, int]:
    """(pid, start time) of the init; (0, 0) when never recorded."""
    pid, start = read_file(bundle, INIT_PID), read_file(bundle, INIT_START)
    try:
        return int(pid or 0), int(start or 0)
    except ValueError:
        return 0, 0


def init_alive(bundle: str) -> int:
    """The recorded init's PID when that very process still runs, else 0."""
    pid, start = load_init(bundle)
    if pid <= 0:
        return 0
    now = process_start_time(pid)
    if now is None or (start and now != start):
        return 0  # gone, or the PID was reused by another process
    return pid


def save_exit(bundle: str, record: ExitRecord) -> None:
    write_file(bundle, EXIT, json.dumps({"pid": record.pid, "status": record.status,
                                         "exited_at": record.exited_at}))


def load_exit(bundle: str) -> ExitRecord | None:
    text = read_file(bundle, EXIT)
    if not text:
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        d = json.loads(text)
        return ExitRecord(int(d["pid"]), int(d["status"]), int(d["exited_at"]))
    return None
