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

# Published ports per container, checked by the daemon and, with a word first, by dock. portmap's
# rules grow with them, and so does its time (on this host ~1 s for 60, ~20 s for 500, past its
# 60 s timeout for 2000) while the network's ADD lock is held: one container's
# `-p 1-65535:1-65535` must not stall every other container's network.
MAX_PORTS = 256
BRIDGE = "bridge"  # Docker's word for the daemon's default network (`dockyardd --default-network`)
DEFAULT_NETWORK = "dockyard"  # that default unless configured: a bridge made on first use
PORT_PROTOCOLS = ("tcp", "udp")
MODES = (BRIDGE, "host", "none")  # `--net` words, never names of networks
