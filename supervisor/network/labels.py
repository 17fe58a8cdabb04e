"""The container labels that ask for a network, and their strict parsing.

`dock run` records its network choices on the container as labels (JSON values), so they travel
through containerd's own Containers API and stay with the container; the daemon reads them when
the container's task is created. A container with none of these labels gets what its OCI spec
says, exactly as under containerd (a new namespace with only `lo`, or the host's).

    dockyard.network/networks     ["bridge", "web"]   networks to join, in order ("bridge" is the
                                                      default network); absent: the default one
    dockyard.network/ports        ["8080:80", "127.0.0.1:9000-9009:9000-9009/udp", "53/udp"]
                                  Docker's `-p` texts (dockyard_common/portspec.py: no host port =
                                  any free one), or objects {"host_ip": "", "host_port": 8080,
                                  "container_port": 80, "protocol": "tcp"} (host_ip "" = all,
                                  host_port 0 = any free), as the label once held
    dockyard.network/dns          ["192.0.2.53"]      nameservers for the generated resolv.conf
    dockyard.network/dns-search   ["example.org"]
    dockyard.network/dns-options  ["ndots:2"]
    dockyard.network/extra-hosts  ["db:10.1.2.3"]     more /etc/hosts lines ("name:ip")
    dockyard.network/container    "other-id"          join that container's network namespace
                                                      (and its resolv.conf and hosts) instead; a
                                                      JSON string, or the bare id

Errors: InvalidArgument naming the label for anything malformed: not JSON (nested too deeply
included: it once escaped as Python's RecursionError), a wrong type, an unknown key, a port out
of range, an address that is not a plain IP (an IPv6 scope such as `%eth0` took any text, newlines
included, into resolv.conf and hosts), a host name, search domain or option that is not one
printable word, an unknown label under the `dockyard.network/` prefix, or `container` combined
with any of the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard_common import portspec
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.ipaddrs import parse_ip, shown
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.netlabels import (
    BRIDGE,
    CONTAINER,
    DEFAULT_NETWORK,
    DNS,
    DNS_OPTIONS,
    DNS_SEARCH,
    EXTRA_HOSTS,
    KNOWN,
    MAX_PORTS,
    NETWORKS,
    PORT_PROTOCOLS,
    PORTS,
    PREFIX,
)
from supervisor import identifiers
from supervisor.network.attachments import PortMapping
from supervisor.network.resolv import check_dns_words, check_host_name

DEFAULT_ALIAS = BRIDGE  # Docker's name for the default network
NO_DEFAULT = "none"  # a daemon run with --default-network none
PORT_KEYS = {"host_ip", "host_port", "container_port", "protocol"}


@dataclass(frozen=True)
class NetworkRequest:
    """What a container's labels ask for: networks (and ports, DNS, hosts), or another
    container's namespace to join (`join`, then nothing else)."""

    networks: tuple[str, ...] = (DEFAULT_NETWORK,)
    ports: tuple[PortMapping, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    join: str = ""


def parse(labels: Mapping[str, str], default: str = DEFAULT_NETWORK) -> NetworkRequest | None:
    """The request in `labels`; None when the container has none of our labels, or asks only
    for the default network ("bridge") of a daemon that has none (`default` "none")."""
    ours = {k: v for k, v in labels.items() if k.startswith(PREFIX)}
    if not ours:
        return None
    unknown = sorted(set(ours) - set(KNOWN))
    if unknown:
        raise InvalidArgument(f"unknown network label {unknown[0]!r}: known are {', '.join(KNOWN)}")
    join_text = ours.pop(CONTAINER, None)
    values = {k: _json(k, v) for k, v in ours.items()}
    if join_text is not None:
        # an id cannot begin with a quote, so both spellings read one way
        join = _json(CONTAINER, join_text) if join_text.startswith('"') else join_text
        if not isinstance(join, str):
            raise InvalidArgument(f"label {CONTAINER}: must be a container id")
        identifiers.validate(join, what=f"label {CONTAINER}: container id")
        if values:
            raise InvalidArgument(f"label {CONTAINER}: a container joining another's network namespace cannot "
                                  f"also have {', '.join(sorted(values))}")
        return NetworkRequest(networks=(), join=join)
    networks = _strings(values, NETWORKS)
    if NETWORKS in values and not networks:
        raise InvalidArgument(f"label {NETWORKS}: name at least one network (leave the label out for the "
                              "default network)")
    names = tuple(default if n == DEFAULT_ALIAS else n for n in networks) or (default,)
    if default == NO_DEFAULT:
        names = tuple(n for n in names if n != NO_DEFAULT)
        asked = sorted(k for k in values if k != NETWORKS)
        if not names and asked:
            raise FailedPrecondition(f"label {asked[0]}: this daemon has no default network (--default-network "
                                     "none): name a network to publish ports or set DNS and hosts on")
        if not names:
            return None  # the spec's own namespace rules: only lo, as under containerd
    for n in names:
        if n in ("none", "host"):
            raise InvalidArgument(f"label {NETWORKS}: {n!r} is not a network to join: a container with the "
                                  "host's network or none (only lo) has no network labels")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"label {NETWORKS}: a network is listed twice: {', '.join(networks)}")
    dns = tuple(str(parse_ip(server, f"label {DNS}:")) for server in _strings(values, DNS))
    extra_hosts = _strings(values, EXTRA_HOSTS)
    for entry in extra_hosts:
        name, sep, ip = entry.partition(":")
        if not (sep and name and ip):
            raise InvalidArgument(f"label {EXTRA_HOSTS}: {shown(entry)} is not name:ip")
        check_host_name(f"label {EXTRA_HOSTS}: host name", name)
        parse_ip(ip.removeprefix("[").removesuffix("]"), f"label {EXTRA_HOSTS}: {shown(entry)}: IP")
    dns_search, dns_options = _strings(values, DNS_SEARCH), _strings(values, DNS_OPTIONS)
    check_dns_words(f"label {DNS_SEARCH}", dns_search)
    check_dns_words(f"label {DNS_OPTIONS}", dns_options)
    return NetworkRequest(networks=names, ports=_ports(values.get(PORTS, [])), dns=dns, dns_search=dns_search,
                          dns_options=dns_options, extra_hosts=extra_hosts)


def _json(key: str, text: str) -> Any:
    # the policy for untrusted JSON (depth, NaN, huge numbers, lone surrogates), in this module's words
    try:
        return json_value(text, "value", JsonError)
    except JsonError as exc:
        raise InvalidArgument(f"label {key}: not valid JSON ({str(exc).removeprefix('value is not valid JSON: ')})"
                              ) from None


def _strings(values: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = values.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgument(f"label {key}: must be a JSON list of non-empty strings")
    return tuple(value)


def _ports(value: Any) -> tuple[PortMapping, ...]:
    if not isinstance(value, list):
        raise InvalidArgument(f"label {PORTS}: must be a JSON list of port mappings")
    out: list[PortMapping] = []
    for i, p in enumerate(value):
        where = f"label {PORTS}[{i}]"
        if isinstance(p, str):  # `-p` text, a run of ports in one
            out += (PortMapping(m.container_port, m.host_port, m.protocol, m.host_ip, m.host_port_end)
                    for m in portspec.parse(p, flag=where))
            if len(out) > MAX_PORTS:  # before a `1-65535` is spelt out any further
                raise InvalidArgument(f"label {PORTS}: more than {MAX_PORTS} published ports: a container "
                                      f"publishes at most {MAX_PORTS}")
            continue
        if not isinstance(p, dict):
            raise InvalidArgument(f"{where}: must be `-p` text or an object with {', '.join(sorted(PORT_KEYS))}")
        unknown = sorted(set(p) - PORT_KEYS)
        if unknown:
            raise InvalidArgument(f"{where}: unknown key {unknown[0]!r}")
        if "container_port" not in p:
            raise InvalidArgument(f"{where}: container_port is missing")
        host_ip, host_port = p.get("host_ip", ""), p.get("host_port", 0)
        container_port, protocol = p["container_port"], p.get("protocol", "tcp")
        for name, number, low in (("container_port", container_port, 1), ("host_port", host_port, 0)):
            if not isinstance(number, int) or isinstance(number, bool) or not low <= number <= 65535:
                raise InvalidArgument(f"{where}: {name} must be an integer {low}-65535, not {number!r}")
        if protocol not in PORT_PROTOCOLS:
            raise InvalidArgument(f"{where}: protocol must be tcp or udp, not {protocol!r}")
        if not isinstance(host_ip, str):
            raise InvalidArgument(f"{where}: host_ip must be a string")
        if host_ip:
            host_ip = str(parse_ip(host_ip, f"{where}: host_ip"))
        out.append(PortMapping(container_port=container_port, host_port=host_port, protocol=protocol,
                               host_ip=host_ip))
    return tuple(out)
