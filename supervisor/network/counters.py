"""A container's network byte and packet counters, read from inside its network namespace.

Words: ``/proc/<pid>/net/dev`` lists the interfaces of the network namespace of process <pid>
(its main thread's), so with a pid of a process in the container - the task's init - a read is
a few stat calls and one small file read: no thread, no setns. Without a pid (no task yet, or it has
exited) ``read_counters`` falls back to entering the netns file in a fresh thread
(netns.in_netns) and reading ``/proc/thread-self/net/dev`` (``/proc/net`` follows the main
thread, and /sys/class/net the namespace sysfs was mounted in, so neither would do). Loopback is
left out, as Docker's stats do.

Lifecycle: callable any time the netns file exists; the stats stream calls it per sample with the
task's pid. The pid is trusted only while its namespace is the netns file's (a pid that exited
and was reused by another process must not report that process's counters); otherwise the
netns file is read.

Errors: NotFound when the netns file is gone (the container was removed meanwhile).

Example::

    counters = read_counters(manager.netns_path("default", "web"), pid=task_pid)
    counters["eth0"].rx_bytes, counters["eth0"].tx_bytes
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dockyard_common.errors import NotFound
from supervisor.network import netns


@dataclass(frozen=True)
class Counters:
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str, *, include_loopback: bool = False) -> dict[str, Counters]:
    """Parse /proc/net/dev: two header lines, then `name: 8 receive fields, 8 transmit fields`."""
    out: dict[str, Counters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        f = [int(x) for x in rest.split()]
        if len(f) < 16 or (name == "lo" and not include_loopback):
            continue
        out[name] = Counters(f[0], f[1], f[2], f[3], f[8], f[9], f[10], f[11])
    return out


def read_counters(netns_path: Path, *, pid: int | None = None,
                  include_loopback: bool = False) -> dict[str, Counters]:
    try:
        ns = os.stat(netns_path)
    except FileNotFoundError:
        raise NotFound(f"network namespace {str(netns_path)!r}") from None
    if not netns.is_mounted(netns_path):
        raise NotFound(f"network namespace {str(netns_path)!r}")
    if pid is not None:
        text = _read_via_pid(pid, ns)
        if text is not None:
            return parse_net_dev(text, include_loopback=include_loopback)

    def read() -> str:
        with open("/proc/thread-self/net/dev") as f:
            return f.read()

    return parse_net_dev(netns.in_netns(netns_path, read), include_loopback=include_loopback)


def read_counters_of_pid(netns_path: Path, pid: int, *, include_loopback: bool = False) -> dict[str, Counters] | None:
    """The fast path alone, for the stats stream (called per sample in the event loop, it must
    not start a thread): `/proc/<pid>/net/dev` while <pid> is in the namespace of `netns_path`;
    None otherwise (the namespace or the pid gone, the pid elsewhere)."""
    try:
        ns = os.stat(netns_path)
    except OSError:
        return None
    text = _read_via_pid(pid, ns)
    return None if text is None else parse_net_dev(text, include_loopback=include_loopback)


def _read_via_pid(pid: int, ns: os.stat_result) -> str | None:
    """/proc/<pid>/net/dev when <pid> is (still) in the namespace `ns` names; None otherwise."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        if (theirs.st_dev, theirs.st_ino) != (ns.st_dev, ns.st_ino):
            return None
        with open(f"/proc/{pid}/net/dev") as f:
            text = f.read()
        # checked again after the read: the pid may have exited and been reused in between
        again = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text if (again.st_dev, again.st_ino) == (ns.st_dev, ns.st_ino) else None
