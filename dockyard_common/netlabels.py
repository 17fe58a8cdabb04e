"""The container labels by which a client asks the daemon for a network: the contract between
`dock run` (which writes them) and supervisor/network/labels.py (which parses them strictly).
Values are JSON; see supervisor/network/labels.py for their shapes."""

from __future__ import annotations

PREFIX = "dockyard.network/"
NETWORKS = PREFIX + "networks"
PORTS = PREFIX + "ports"
DNS = PREFIX + "dns"
DNS_SEARCH = PREFIX + "dns-search"
DNS_OPTIONS = PREFIX + "dns-options"
EXTRA_HOSTS = PREFIX + "extra-hosts"
CONTAINER = PREFIX + "container"
KNOWN = (NETWORKS, PORTS, DNS, DNS_SEARCH, DNS_OPTIONS, EXTRA_HOSTS, CONTAINER)

BRIDGE = "bridge"  # Docker's word for the daemon's default network (`dockyardd --default-network`)
DEFAULT_NETWORK = "dockyard"  # that default unless configured: a bridge made on first use
PORT_PROTOCOLS = ("tcp", "udp")
MODES = (BRIDGE, "host", "none")  # `--net` words, never names of networks
