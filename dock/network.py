"""Networks in the SDK: `client.networks`, and the labels that ask the daemon for a container's network.

    net = await client.networks.create("web", subnet="10.100.0.0/24", labels={"team": "a"})
    networks, problems = await client.networks.list()
    att = await client.networks.attachment("web1")   # interfaces, addresses, chosen host ports
    await client.networks.remove("web")

A container's network is asked for with labels (`NetworkOptions.labels()`), which travel with the
container through containerd's Containers API; the daemon reads them when the task is created:

    dockyard.network/networks     JSON list of network names (the default network is `dockyard`)
    dockyard.network/ports        JSON list of `-p` texts, a run of ports in one (dockyard_common/portspec.py)
    dockyard.network/dns          JSON list of resolver IPs (and .../dns-search, .../dns-options)
    dockyard.network/extra-hosts  JSON list of "name:ip"
    dockyard.network/container    the id of the container whose network namespace to join (a JSON string)

`--net none` and `--net host` set no label: the spec alone says what the container gets (a
network namespace of its own with only lo, or the host's). Parsing raises InvalidArgument with
the flag and the value in the message.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dockyard_common import netlabels, portspec
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.ipaddrs import flag_address
from dockyard_common.types import MAX_LABEL_SIZE, label_size

if TYPE_CHECKING:
    from dock.client import Client
    from dockyard_api.dockyard.network.v1 import network_pb2 as pb

LABEL_PREFIX = netlabels.PREFIX
NETWORKS_LABEL = netlabels.NETWORKS
PORTS_LABEL = netlabels.PORTS
DNS_LABEL = netlabels.DNS
DNS_SEARCH_LABEL = netlabels.DNS_SEARCH
DNS_OPTIONS_LABEL = netlabels.DNS_OPTIONS
EXTRA_HOSTS_LABEL = netlabels.EXTRA_HOSTS
CONTAINER_LABEL = netlabels.CONTAINER
DEFAULT_NETWORK = netlabels.DEFAULT_NETWORK
BRIDGE = netlabels.BRIDGE
PROTOCOLS = netlabels.PORT_PROTOCOLS
# names `dock network create` refuses: modes of `--net` (as Docker's predefined networks), and the
# default network, which the daemon makes itself
RESERVED_NAMES = (*netlabels.MODES, DEFAULT_NETWORK)
# RFC 1123 host names, as /etc/hosts takes them (labels of letters, digits and '-', dot-separated)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


# -- what the daemon answers -------------------------------------------------------------------


@dataclass
class NetworkInfo:
    name: str
    id: str
    subnets: list[str]
    gateway: str
    bridge: str
    internal: bool
    labels: dict[str, str]
    created_at: datetime | None
    managed: bool  # made by Dockyard; False for a user's own conflist
    path: str
    plugins: list[str]


@dataclass
class NetworkProblem:
    path: str
    message: str


@dataclass(frozen=True)
class NetworkUser:
    namespace: str
    container_id: str


@dataclass
class Interface:
    network: str
    name: str
    addresses: list[str]
    gateway: str
    mac: str


@dataclass(frozen=True)
class PortBinding:
    """A published port: asked for (host_port 0 = a free one) or as the daemon chose it."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""  # "" = every address of the host
    host_port_end: int = 0  # asked for: a free one of host_port..host_port_end

    def to_json(self) -> dict[str, Any]:
        """What `--format json` shows of a port the daemon chose (no range: it has one port)."""
        return {"container_port": self.container_port, "protocol": self.protocol, "host_ip": self.host_ip,
                "host_port": self.host_port}

    def host_address(self) -> str:
        """Where it answers, as Docker prints it: `0.0.0.0:18080`, `[::1]:8080`."""
        ip = self.host_ip or "0.0.0.0"
        return f"[{ip}]:{self.host_port}" if ":" in ip else f"{ip}:{self.host_port}"


@dataclass
class AttachmentInfo:
    container_id: str
    netns_path: str
    interfaces: list[Interface]
    ports: list[PortBinding]


def _network(m: pb.Network) -> NetworkInfo:
    created = m.created_at.ToDatetime(tzinfo=UTC) if m.HasField("created_at") else None
    return NetworkInfo(m.name, m.id, list(m.subnets), m.gateway, m.bridge, m.internal, dict(m.labels), created,
                       m.managed, m.path, list(m.plugins))


def _attachment(m: pb.Attachment) -> AttachmentInfo:
    return AttachmentInfo(
        m.container_id, m.netns_path,
        [Interface(i.network, i.name, list(i.addresses), i.gateway, i.mac) for i in m.interfaces],
        [PortBinding(p.container_port, p.host_port, p.protocol, p.host_ip) for p in m.ports])


class NetworksAPI:
    def __init__(self, client: Client) -> None:
        # the generated modules come with the first NetworksAPI: `dock run` on the default network
        # only parses flags here and never calls the service
        from dockyard_api.dockyard.network.v1 import network_pb2, network_pb2_grpc
        self._client = client
        self._pb = network_pb2
        self._stub = network_pb2_grpc.NetworksStub(client.channel)

    async def create(self, name: str, *, subnet: str = "", gateway: str = "", internal: bool = False,
                     labels: dict[str, str] | None = None) -> NetworkInfo:
        req = self._pb.CreateNetworkRequest(name=name, subnet=subnet, gateway=gateway, internal=internal,
                                            labels=labels or {})
        return _network((await self._client.call(self._stub.Create, req)).network)

    async def list(self) -> tuple[builtins.list[NetworkInfo], builtins.list[NetworkProblem]]:
        """Every network, and the files in the daemon's net.d that are not usable ones."""
        resp = await self._client.call(self._stub.List, self._pb.ListNetworksRequest())
        return [_network(n) for n in resp.networks], [NetworkProblem(p.path, p.message) for p in resp.problems]

    async def inspect(self, name: str) -> tuple[NetworkInfo, builtins.list[NetworkUser]]:
        """A network and the containers (of every namespace) attached to it."""
        resp = await self._client.call(self._stub.Inspect, self._pb.InspectNetworkRequest(name=name))
        return _network(resp.network), [NetworkUser(u.namespace, u.container_id) for u in resp.containers]

    async def remove(self, name: str) -> None:
        """FailedPrecondition while a container uses it."""
        await self._client.call(self._stub.Remove, self._pb.RemoveNetworkRequest(name=name))

    async def prune(self) -> builtins.list[str]:
        """Remove the unused networks Dockyard made (not the default one); their names."""
        return list((await self._client.call(self._stub.Prune, self._pb.PruneNetworksRequest())).removed)

    async def attachment(self, container_id: str) -> AttachmentInfo:
        """The network a container of this namespace got; NotFound when it has none (yet)."""
        resp = await self._client.call(self._stub.Attachment, self._pb.AttachmentRequest(container_id=container_id))
        return _attachment(resp.attachment)

    async def published_ports(self, container_id: str) -> builtins.list[PortBinding]:
        """The host ports a container's task got (sorted by container port); none when it has no
        network attachment (no task yet, --net none or host, or no such container)."""
        try:
            att = await self.attachment(container_id)
        except NotFound:
            return []
        return sorted(att.ports, key=lambda p: (p.container_port, p.protocol, p.host_ip, p.host_port))


def ports_text(ports: builtins.list[PortBinding]) -> str:
    """`docker ps`'s PORTS cell: `0.0.0.0:18080->80/tcp, 0.0.0.0:5353->53/udp`, a run of ports
    as one range (`0.0.0.0:8000-8099->8000-8099/tcp`); "-" for none."""
    cells = []
    for first, last in portspec.runs(ports):
        host = first.host_address()
        if last != first:
            host += f"-{last.host_port}"
        cells.append(f"{host}->{portspec.span(first.container_port, last.container_port)}/{first.protocol}")
    return ", ".join(cells) or "-"


# -- asking for a container's network -------------------------------------------------------------


@dataclass
class NetworkOptions:
    """What `dock run --net/-p/--dns/--add-host` asks for. `mode` is "bridge" (the networks in
    `networks`, the default one when empty), "none", "host" or "container" (join `container`'s)."""

    mode: str = BRIDGE
    networks: list[str] = field(default_factory=list)
    container: str = ""
    ports: list[PortBinding] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    publish_all: bool = False  # -P: each port the image exposes on a free host port, once the image is known

    def publish_exposed(self, exposed: Sequence[str]) -> None:
        """-P: the image's EXPOSE ports (`80`, `80/tcp`, `53/udp`, `8000-8001/tcp`) not published already,
        each on a free host port of every address."""
        if not self.publish_all:
            return
        taken = {(p.container_port, p.protocol) for p in self.ports}
        for spec in exposed:
            try:
                bindings = parse_publish(spec)
            except InvalidArgument as exc:
                raise InvalidArgument(f"the image's ExposedPorts: {exc}") from None
            self.ports += [b for b in bindings if (b.container_port, b.protocol) not in taken]

    @property
    def spec_net(self) -> str:
        """What the spec gets: the host's network, or a namespace of its own ("none"), which the
        daemon replaces by the one it attached when labels ask for a network."""
        return "host" if self.mode == "host" else "none"

    def labels(self) -> dict[str, str]:
        if self.mode in ("none", "host"):
            return {}
        if self.mode == "container":
            return {CONTAINER_LABEL: _json(self.container)}
        out = {NETWORKS_LABEL: _json(self.networks or [BRIDGE])}
        if len(self.ports) > netlabels.MAX_PORTS:  # before the label-size rule says it less clearly
            raise InvalidArgument(f"-p/-P: {len(self.ports)} published ports: a container publishes at most "
                                  f"{netlabels.MAX_PORTS}")
        if self.ports:
            out[PORTS_LABEL] = _json(portspec.compact(self.ports))
            size = label_size(PORTS_LABEL, out[PORTS_LABEL])
            if size > MAX_LABEL_SIZE:
                raise InvalidArgument(f"-p/-P: {len(self.ports)} published ports take {size} bytes in the container's "
                                      f"{PORTS_LABEL} label, over its {MAX_LABEL_SIZE}: publish consecutive ports as "
                                      "a range (-p 8000-8099:8000-8099)")
        for key, values in ((DNS_LABEL, self.dns), (DNS_SEARCH_LABEL, self.dns_search),
                            (DNS_OPTIONS_LABEL, self.dns_options), (EXTRA_HOSTS_LABEL, self.extra_hosts)):
            if values:
                out[key] = _json(values)
        return out


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def network_options(nets: Sequence[str] = (), publish: Sequence[str] = (), dns: Sequence[str] = (),
                    dns_search: Sequence[str] = (), dns_options: Sequence[str] = (),
                    add_hosts: Sequence[str] = (), hostname: str = "", publish_all: bool = False) -> NetworkOptions:
    """Docker's `--network`/`-p`/`--dns`/`--dns-search`/`--dns-option`/`--add-host` values (each
    flag repeatable) as NetworkOptions; no `--network` means the default bridge network."""
    opts = parse_network_modes(nets)
    seen: dict[tuple[str, int, str], str] = {}
    for spec in publish:
        for b in parse_publish(spec):
            key = (b.protocol, b.host_port, b.host_ip)
            if b.host_port and not b.host_port_end and key in seen:
                raise InvalidArgument(f"invalid -p {spec!r}: host port {b.host_address()}/{b.protocol} is "
                                      f"already published by -p {seen[key]!r}")
            seen[key] = spec
            opts.ports.append(b)
    opts.dns = [parse_dns(d) for d in dns]
    opts.dns_search = [_word("--dns-search", s) for s in dns_search]
    opts.dns_options = [_word("--dns-option", s) for s in dns_options]
    opts.extra_hosts = [parse_add_host(h) for h in add_hosts]
    opts.publish_all = publish_all
    what = {"none": "--net none", "host": "--net host", "container": f"--net container:{opts.container}"}.get(opts.mode)
    if what is not None:
        # the daemon attaches nothing there to give them to (Docker refuses them with container:ID
        # and drops -p with host; a refusal says so instead of ignoring the flag)
        if opts.ports or publish_all:
            raise InvalidArgument(f"-p/--publish (or -P) does not go with {what}: publishing needs a network the "
                                  "container's own namespace joins (bridge or a named network)")
        for flag, given in (("--dns", dns), ("--dns-search", dns_search), ("--dns-option", dns_options),
                            ("--add-host", add_hosts)):
            if given:
                raise InvalidArgument(f"{flag} does not go with {what}: it needs a network the daemon attaches "
                                      "(bridge or a named network)")
    if opts.mode == "container" and hostname:
        raise InvalidArgument(f"--hostname does not go with {what}: the container shares that one's network "
                              "and names")
    return opts


def parse_network_modes(values: Sequence[str]) -> NetworkOptions:
    """Repeated `--network` values: several networks, or one of none, host, container:ID alone."""
    if not values:
        return NetworkOptions()
    modes: list[NetworkOptions] = []
    for v in values:
        if v in ("none", "host"):
            modes.append(NetworkOptions(mode=v))
        elif v.startswith("container:"):
            cid = v.removeprefix("container:")
            if not cid:
                raise InvalidArgument("invalid --net 'container:': give the id of the container whose network "
                                      "to join, e.g. container:web")
            modes.append(NetworkOptions(mode="container", container=cid))
        elif not v:
            raise InvalidArgument("invalid --net '': want bridge, none, host, container:ID or a network name")
        elif v == BRIDGE:
            modes.append(NetworkOptions(networks=[BRIDGE]))  # the daemon's default network
        else:
            modes.append(NetworkOptions(networks=[v]))
    if len(modes) > 1 and any(m.mode != BRIDGE for m in modes):
        raise InvalidArgument(f"--net {' --net '.join(values)}: none, host and container:ID go alone; only "
                              "networks may be combined")
    networks = [n for m in modes for n in m.networks]
    dup = next((n for i, n in enumerate(networks) if n in networks[:i]), None)
    if dup is not None:
        raise InvalidArgument(f"--net {dup!r} is given twice")
    return NetworkOptions(networks=networks) if modes[0].mode == BRIDGE else modes[0]


def parse_publish(spec: str) -> list[PortBinding]:
    """Docker's `-p`: `[IP:][HOST:]CONTAINER[/PROTO]`, ports or equal-length ranges (`8000-8001:80-81`);
    IPv6 addresses in brackets (`[::1]:8080:80`); no host port (or an empty one) means a free one."""
    return [PortBinding(*p) for p in portspec.parse(spec)]


def parse_dns(value: str) -> str:
    return flag_address(value, "--dns", value)


def parse_add_host(value: str) -> str:
    """Docker's `--add-host NAME:IP` (or `NAME=IP`); normalised to `name:ip`."""
    sep = "=" if "=" in value else ":"
    name, found, ip = value.partition(sep)
    if not found or not name or not ip:
        raise InvalidArgument(f"invalid --add-host {value!r}: want NAME:IP, e.g. db:10.0.0.5")
    if not _HOSTNAME.fullmatch(name):
        raise InvalidArgument(f"invalid --add-host {value!r}: {name!r} is not a host name")
    addr = flag_address(ip.removeprefix("[").removesuffix("]"), "--add-host", value)
    return f"{name}:{addr}"


def _word(flag: str, value: str) -> str:
    if not value or any(c.isspace() for c in value) or not value.isprintable():
        raise InvalidArgument(f"invalid {flag} {value!r}: want one word without spaces")
    return value


def check_network_name(name: str) -> None:
    """Refuse the names that mean a mode to `--net` (as Docker keeps its predefined ones)."""
    if name == DEFAULT_NETWORK:
        raise InvalidArgument(f"network name {name!r} is reserved: it is the default network, made on first use")
    if name in RESERVED_NAMES or name.startswith("container:"):
        raise InvalidArgument(f"network name {name!r} is reserved: `--net {name}` means a network mode")
