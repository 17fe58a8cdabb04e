"""A container's network byte and packet counters, read from inside its network namespace.

Words: ``/proc/thread-self/net/dev`` lists the interfaces of the *calling thread's* network
namespace (``/proc/net`` follows the main thread, and /sys/class/net the namespace sysfs was
mounted in, so neither would do). ``read_counters(netns_path)`` enters the namespace in a fresh
thread (netns.in_netns) and parses that file; loopback is left out, as Docker's stats do.

Lifecycle: callable any time the netns file exists; the stats stream (a later session) calls it
per sample from a worker thread (it blocks for a thread start and one small read).

Errors: NotFound when the netns file is gone (the container was removed meanwhile).

Example::

    counters = read_counters(Path("/run/dockyard/netns/default-web"))
    counters["eth0"].rx_bytes, counters["eth0"].tx_bytes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import NotFound
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


def read_counters(netns_path: Path, *, include_loopback: bool = False) -> dict[str, Counters]:
    if not netns.is_mounted(netns_path):
        raise NotFound(f"network namespace {str(netns_path)!r}")

    def read() -> str:
        with open("/proc/thread-self/net/dev") as f:
            return f.read()

    return parse_net_dev(netns.in_netns(netns_path, read), include_loopback=include_loopback)
