"""Docker's `-p` text for published ports, read and written: `dock run -p` reads it, and the
container's `dockyard.network/ports` label holds it, so that the label stays small.

    [IP:][HOST:]CONTAINER[/PROTO]     8080:80, 127.0.0.1:8080:80/udp, [::1]:8080:80, 80 (a free host port)
    ranges of equal length            8000-8099:8000-8099, 7000-7009 (free host ports)
    a host range for one port         8000-8010:80 (a free one of the range, as Docker)

The label once held a JSON object per port (~70 bytes). containerd keeps a label within 4096
bytes, so a container could publish ~55 ports, not the 256 the daemon allows (`MAX_PORTS`).
As `-p` text (tcp, `-p`'s default, unsaid) a run of ports is one short string: 256 ports fit as
ranges, or spread out (`20000:10000`, ~14 bytes each) unless most are udp or name an address.
The daemon still reads the objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol, TypeVar

from dockyard_common.errors import InvalidArgument
from dockyard_common.ipaddrs import flag_address, shown
from dockyard_common.netlabels import PORT_PROTOCOLS


class Published(NamedTuple):
    """One published port: host_port 0 is a free one, host_ip "" every address of the host;
    with host_port_end, a free one of host_port..host_port_end (Docker's `-p 8000-8010:80`)."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""
    host_port_end: int = 0


def parse(spec: str, flag: str = "-p") -> list[Published]:
    """The ports `spec` publishes; InvalidArgument naming `flag` and `spec` when it is malformed.
    IPv6 addresses go in brackets; an empty host port (`127.0.0.1::80`) is a free one."""
    bad = f"invalid {flag} {shown(spec)}"
    body, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PORT_PROTOCOLS:
        raise InvalidArgument(f"{bad}: protocol {shown(proto)} is not tcp or udp")
    if body.startswith("["):  # [IPv6]:HOST:CONTAINER
        end = body.find("]")
        if end < 0 or body[end + 1:end + 2] != ":":
            raise InvalidArgument(f"{bad}: want [IPv6]:HOST:CONTAINER")
        host_ip, rest = body[1:end], body[end + 2:]
        if ":" not in rest:
            raise InvalidArgument(f"{bad}: want [IPv6]:HOST:CONTAINER (HOST may be empty)")
        host, container = rest.split(":", 1)
    else:
        parts = body.split(":")
        if len(parts) > 3:
            raise InvalidArgument(f"{bad}: want [IP:]HOST:CONTAINER[/tcp|/udp] (an IPv6 address goes in brackets)")
        host_ip, host, container = [""] * (3 - len(parts)) + parts
    if host_ip:
        host_ip = flag_address(host_ip, flag, spec)
    if not container:
        raise InvalidArgument(f"{bad}: no container port")
    cports = _port_range(container, "container port", bad)
    hports = _port_range(host, "host port", bad) if host else [0] * len(cports)
    if len(cports) == 1 and len(hports) > 1:  # one container port on a free port of the host range
        return [Published(cports[0], hports[0], proto, host_ip, hports[-1])]
    if len(hports) != len(cports):
        raise InvalidArgument(f"{bad}: host range {shown(host)} and container range {shown(container)} differ in "
                              "length")
    return [Published(c, h, proto, host_ip) for h, c in zip(hports, cports, strict=True)]


def _port_range(text: str, what: str, bad: str) -> list[int]:
    low, sep, high = text.partition("-")
    ports = []
    for part in (low, high) if sep else (low,):
        if not part.isascii() or not part.isdigit() or len(part) > 5:
            raise InvalidArgument(f"{bad}: {what} {shown(text)} is not a port number")
        n = int(part)
        if not 1 <= n <= 65535:
            raise InvalidArgument(f"{bad}: {what} {n} is out of range (1-65535)")
        ports.append(n)
    if sep and ports[1] < ports[0]:
        raise InvalidArgument(f"{bad}: {what} range {shown(text)} ends before it starts")
    return list(range(ports[0], ports[-1] + 1))


class Port(Protocol):
    """What `runs` and `compact` read of a port: Published, or dock's PortBinding."""

    @property
    def container_port(self) -> int: ...
    @property
    def host_port(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def host_ip(self) -> str: ...
    @property
    def host_port_end(self) -> int: ...


P = TypeVar("P", bound=Port)


def runs(ports: Iterable[P]) -> list[tuple[P, P]]:
    """`ports` as runs of consecutive ports, in their order: the first and last of each. A run
    keeps its address and protocol, and each port is one more than the last on both sides (or
    on the container's, all host ports free)."""
    out: list[list[P]] = []
    for p in ports:
        last = out[-1][-1] if out else None
        if (last is not None and not p.host_port_end and not last.host_port_end
                and (p.host_ip, p.protocol) == (last.host_ip, last.protocol)
                and p.container_port == last.container_port + 1
                and (p.host_port == last.host_port + 1 if last.host_port else p.host_port == 0)):
            out[-1].append(p)
        else:
            out.append([p])
    return [(run[0], run[-1]) for run in out]


def compact(ports: Iterable[Port]) -> list[str]:
    """`ports` as `-p` texts, a run of consecutive ports in one; `parse` of each, concatenated,
    gives `ports` back."""
    return [_text(first, last) for first, last in runs(ports)]


def span(first: int, last: int) -> str:
    """`8080`, or the range `8080-8089`."""
    return str(first) if first == last else f"{first}-{last}"


def _text(first: Port, last: Port) -> str:
    container = span(first.container_port, last.container_port)
    host = span(first.host_port, first.host_port_end or last.host_port) if first.host_port else ""
    ip = f"[{first.host_ip}]" if ":" in first.host_ip else first.host_ip
    if ip:
        body = f"{ip}:{host}:{container}"
    else:
        body = f"{host}:{container}" if host else container
    return body if first.protocol == "tcp" else f"{body}/{first.protocol}"  # tcp: `-p`'s default
