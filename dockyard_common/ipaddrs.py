"""IP addresses and subnets as callers give them, read strictly: one parser for every address that
ends up in a file a container reads, a conflist, or a firewall rule.

Words: a *plain* address is an IPv4 or IPv6 address without an IPv6 scope (``fe80::1%eth0``).
Python's ``ipaddress`` takes anything after ``%`` as the scope, newlines and spaces included, so
``fe80::1%\\nnameserver 6.6.6.6`` passed as an address and wrote a line of the caller's into a
container's resolv.conf (and, as an --add-host IP, into its /etc/hosts). Docker parses these with
Go's ``net.ParseIP``, which has no scope at all; so do we. Addresses come back *normalised*
(``::0001`` is ``::1``), so two spellings of one address compare equal.

Errors: InvalidArgument naming `what` and (clipped) the text.

Example::

    parse_ip("10.0.0.5", "--dns server")          # IPv4Address('10.0.0.5')
    parse_ip("fe80::1%eth0", "--add-host IP")     # InvalidArgument: ... a scope is not allowed
    parse_subnet_text("fd00::/64", "subnet")       # IPv6Network('fd00::/64')
"""

from __future__ import annotations

import ipaddress

from dockyard_common.errors import InvalidArgument

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
SHOWN = 80  # characters of a refused value kept in a message


def shown(text: str) -> str:
    """`text` for a message: repr'd, and cut when long (a 10 000-character name says little more)."""
    return repr(text) if len(text) <= SHOWN else repr(text[:SHOWN]) + f"... ({len(text)} characters)"


def parse_ip(text: str, what: str) -> IP:
    """A plain IP address (no IPv6 scope), or InvalidArgument naming `what`."""
    if not isinstance(text, str) or "%" in text:
        raise InvalidArgument(f"{what} {shown(str(text))} is not an IP address"
                              + (" (a scope such as %eth0 is not allowed)" if isinstance(text, str) else ""))
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"{what} {shown(text)} is not an IP address") from None


def parse_subnet_text(text: str, what: str, *, strict: bool = True) -> Net:
    """A subnet in CIDR notation without an IPv6 scope; InvalidArgument naming `what`."""
    if not isinstance(text, str) or "%" in text:
        raise InvalidArgument(f"{what} {shown(str(text))} is not a subnet (a scope such as %eth0 is not allowed)")
    try:
        return ipaddress.ip_network(text, strict=strict)
    except ValueError as exc:
        raise InvalidArgument(f"{what} {shown(text)} is not a subnet: "
                              f"{str(exc).replace(text, '...') if len(text) > SHOWN else exc}") from None


def flag_address(text: str, flag: str, value: str) -> str:
    """The address `text` in `flag`'s `value` (`-p`, `--dns`, `--add-host`), normalised, or
    InvalidArgument naming the flag and its value (an IPv6 scope is refused, as `parse_ip` does)."""
    try:
        return str(parse_ip(text, "address"))
    except InvalidArgument:
        scope = " (a scope such as %eth0 is not allowed)" if "%" in text else ""
        what = "not an IP address" if text == value else f"{shown(text)} is not an IP address"
        raise InvalidArgument(f"invalid {flag} {shown(value)}: {what}{scope}") from None
