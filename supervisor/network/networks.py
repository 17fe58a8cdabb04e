"""Networks: CNI conflists in the config directory, the default bridge, subnet allocation.

Words: a *network* is one conflist file in ``conf_dir`` (``<config dir>/net.d``, e.g.
/etc/dockyard/net.d), named by its ``name`` field. Networks Dockyard made carry a top-level
``"dockyard"`` object (id, labels, internal, created) that CNI ignores; any other ``*.conflist``
(or single-plugin ``*.conf``) a user drops in is a network too. The *default network*
(``DEFAULT_NETWORK``) is made on first use: a bridge with host-local IPAM on a free /16.
*Free* means overlapping neither another network's subnet nor any route of the host (the daemon's
network namespace), as Docker and Podman check; IPAM state lives in ``ipam_dir`` (under <root>).

Lifecycle: ``ensure_default()`` / ``create(...)`` write a conflist (staged, then renamed);
``get``/``list`` read the directory on every call, so a file a user adds or edits is seen without
a restart; ``remove`` deletes the file (in-use checks belong to the NetworkManager, which knows
the attachments).

Errors: InvalidArgument for a bad name, subnet, gateway or label, and for a malformed conflist
(the message names the file); NotFound for an unknown network; AlreadyExists for a taken name;
FailedPrecondition for a subnet that overlaps another network or a host route, and for removing
the default network; ResourceExhausted when no automatic subnet (or bridge name) is free.
A name is matched whole (``web\n`` is no name: a trailing newline once passed ``$``); a subnet or
gateway is a plain address (no IPv6 scope, see ``addresses``), and a subnet may not take in the
addresses no container can have (unspecified, loopback, multicast, reserved). Labels follow
containerd's rule (key and value within 4096 bytes). A malformed file never
hides the others: ``list`` returns it as a ``Problem`` next to the good networks.

Example::

    store = NetworkStore(Path("/etc/dockyard/net.d"), Path("/var/lib/dockyard/networks/ipam"))
    default = store.ensure_default()                 # Network(name="dockyard", subnet="10.88.0.0/16", ...)
    web = store.create("web", subnet="10.100.0.0/24", labels={"team": "a"})
    networks, problems = store.list()
    store.remove("web")
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from dockyard_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    error_text,
)
from dockyard_common.ipaddrs import parse_ip, parse_subnet_text, shown
from dockyard_common.jsonutil import json_object
from dockyard_common.netlabels import DEFAULT_NETWORK, MODES
from supervisor import labels as labelrules

DEFAULT_BRIDGE = "dockyard0"
CNI_VERSION = "1.0.0"
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")  # fullmatch: `$` also matched before a final "\n"
MAX_BRIDGES = 10_000  # dockyard1 .. dockyard9999: IFNAMSIZ (15) holds them
# addresses no container (or bridge) can have: a subnet taking any of them in is refused
_UNUSABLE = [(ipaddress.ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "'this network'"), ("127.0.0.0/8", "loopback"), ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"), ("::/127", "unspecified and loopback"), ("::ffff:0:0/96", "IPv4-mapped"),
    ("ff00::/8", "multicast"))]
# the times a Timestamp holds (0001-01-01 to 9999-12-31): a file's number outside is no time
_CREATED_RANGE = (-62135596800.0, 253402300799.0)
_SUFFIXES = (".conflist", ".conf", ".json")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _pool() -> Iterable[ipaddress.IPv4Network]:
    """Automatic subnets, in order: Podman's 10.88/16 first, then the rest of 10/8, then 172.17-31."""
    for b in range(88, 256):
        yield ipaddress.IPv4Network(f"10.{b}.0.0/16")
    for b in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{b}.0.0/16")


@dataclass
class Network:
    name: str
    path: Path
    conflist: dict[str, Any]
    subnets: list[IPNet]
    gateway: str | None
    bridge: str | None
    internal: bool
    labels: dict[str, str]
    id: str
    created: float | None
    managed: bool  # made by Dockyard (so `prune` may remove it)

    @property
    def ipam_dirs(self) -> list[Path]:
        """Where host-local keeps this network's allocations (one file per address)."""
        dirs = []
        for plugin in self.conflist.get("plugins", []):
            ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
            if isinstance(ipam, dict) and ipam.get("type") == "host-local":
                dirs.append(Path(str(ipam.get("dataDir") or "/var/lib/cni/networks")) / self.name)
        return dirs


@dataclass
class Problem:
    path: Path
    message: str


@dataclass
class Route:
    dst: IPNet
    dev: str


def host_routes() -> list[Route]:
    """The routes of the calling thread's network namespace (all tables), defaults left out."""
    routes: list[Route] = []
    for family in ("-4", "-6"):
        try:
            out = subprocess.run(["ip", "-j", family, "route", "show", "table", "all"], capture_output=True,
                                 check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise FailedPrecondition(f"cannot read the host's routes with `ip route`: {error_text(exc)}") from None
        for r in json.loads(out or b"[]"):
            dst = r.get("dst")
            if not dst or dst == "default" or r.get("type") in ("multicast", "unreachable", "prohibit", "blackhole"):
                continue
            try:
                net = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            if net.prefixlen == 0 or net.is_multicast or net.is_link_local:
                continue
            routes.append(Route(net, str(r.get("dev", ""))))
    return routes


class NetworkStore:
    def __init__(self, conf_dir: Path, ipam_dir: Path, *,
                 routes: Callable[[], builtins.list[Route]] = host_routes) -> None:
        self.conf_dir = Path(conf_dir)
        self.ipam_dir = Path(ipam_dir)
        self._routes = routes

    # ----- reading -----------------------------------------------------------------------------

    def list(self) -> tuple[builtins.list[Network], builtins.list[Problem]]:
        networks: dict[str, Network] = {}
        problems: list[Problem] = []
        for path in self._files():
            try:
                net = load(path)
            except InvalidArgument as exc:
                problems.append(Problem(path, exc.message))
                continue
            if net.name in networks:
                problems.append(Problem(path, f"{path}: network name {net.name!r} is already defined by "
                                              f"{networks[net.name].path}; this file is ignored"))
                continue
            networks[net.name] = net
        return sorted(networks.values(), key=lambda n: n.name), problems

    def get(self, name: str) -> Network:
        networks, problems = self.list()
        for net in networks:
            if net.name == name:
                return net
        for p in problems:
            if p.path.stem == name:
                raise InvalidArgument(f"network {name!r} cannot be used: {p.message}")
        raise NotFound(f"network {shown(name)}")

    # ----- writing -----------------------------------------------------------------------------

    def ensure_default(self) -> Network:
        try:
            return self.get(DEFAULT_NETWORK)
        except NotFound:
            pass
        try:
            return self._create(DEFAULT_NETWORK, bridge=DEFAULT_BRIDGE)
        except AlreadyExists:  # made meanwhile by another caller
            return self.get(DEFAULT_NETWORK)

    def create(self, name: str, *, subnet: str | None = None, gateway: str | None = None, internal: bool = False,
               labels: Mapping[str, str] | None = None, bridge: str | None = None) -> Network:
        validate_name(name)
        if name in MODES:
            raise InvalidArgument(f"network name {name!r} is reserved: `--net {name}` means a network mode")
        if name == DEFAULT_NETWORK:
            # made on first use, on its own bridge (ensure_default); one made here would take
            # another bridge (and the default network's name would then mean that)
            raise InvalidArgument(f"network name {name!r} is reserved: it is the default network, made on first use")
        return self._create(name, subnet=subnet, gateway=gateway, internal=internal, labels=labels, bridge=bridge)

    def _create(self, name: str, *, subnet: str | None = None, gateway: str | None = None, internal: bool = False,
                labels: Mapping[str, str] | None = None, bridge: str | None = None) -> Network:
        labels = dict(labels or {})
        for k, v in labels.items():
            if not k or not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgument(f"invalid label {shown(str(k))}: keys must be non-empty strings")
        labelrules.validate(labels, "network labels")
        networks, problems = self.list()
        if any(n.name == name for n in networks) or any(p.path.stem == name for p in problems):
            raise AlreadyExists(f"network {name!r}")
        taken = [(s, f"network {n.name!r}") for n in networks for s in n.subnets]
        routes = self._routes()
        if subnet is None:
            if gateway is not None:
                raise InvalidArgument("--gateway needs --subnet")
            net: IPNet = self._free_subnet(taken, routes)
        else:
            net = parse_subnet(subnet)
            check_overlap(net, taken, routes)
        gw = parse_gateway(net, gateway)
        used_bridges = {n.bridge for n in networks}
        if bridge is None:
            bridge = next((f"dockyard{i}" for i in range(1, MAX_BRIDGES) if f"dockyard{i}" not in used_bridges), None)
            if bridge is None:
                raise ResourceExhausted(f"no bridge name left: dockyard1-dockyard{MAX_BRIDGES - 1} are all taken "
                                        "by networks; remove some")
        doc = build_conflist(name, net, gw, bridge, internal=internal, labels=labels, ipam_dir=self.ipam_dir)
        path = self.conf_dir / f"{name}.conflist"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.conf_dir / f".{name}.conflist.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # link, not rename: a concurrent create of the name must fail, not replace
        except FileExistsError:
            raise AlreadyExists(f"network {name!r}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return load(path)

    def remove(self, name: str) -> Network:
        net = self.get(name)
        if name == DEFAULT_NETWORK:
            raise FailedPrecondition(f"network {name!r} is the default network and cannot be removed")
        hidden = net.path.with_name(f".{net.path.name}.removing")
        os.replace(net.path, hidden)  # gone from listings at once; the unlink may then fail harmlessly
        hidden.unlink(missing_ok=True)
        return net

    # ----- helpers -----------------------------------------------------------------------------

    def _files(self) -> builtins.list[Path]:
        try:
            return sorted(p for p in self.conf_dir.iterdir()
                          if p.suffix in _SUFFIXES and not p.name.startswith(".") and p.is_file())
        except FileNotFoundError:
            return []

    def _free_subnet(self, taken: builtins.list[tuple[IPNet, str]], routes: builtins.list[Route]) -> IPNet:
        for candidate in _pool():
            if not any(candidate.overlaps(s) for s, _ in taken if s.version == 4) and \
                    not any(candidate.overlaps(r.dst) for r in routes if r.dst.version == 4):
                return candidate
        raise ResourceExhausted("no free subnet left in 10.88.0.0-10.255.255.255 or 172.17.0.0-172.31.255.255; "
                                "give one with --subnet")


def valid_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def validate_name(name: str) -> None:
    if not valid_name(name):
        raise InvalidArgument(f"invalid network name {shown(str(name))}: use letters, digits, '_', '.', '-' "
                              "(at most 64, starting with a letter or digit)")


def parse_subnet(subnet: str) -> IPNet:
    net = parse_subnet_text(subnet, "invalid subnet")
    if "/" not in subnet:
        raise InvalidArgument(f"invalid subnet {shown(subnet)}: give a prefix length, e.g. 10.100.0.0/24")
    if net.num_addresses < 4:
        raise InvalidArgument(f"invalid subnet {subnet!r}: too small for a gateway and a container")
    for bad, why in _UNUSABLE:
        if bad.version == net.version and net.overlaps(bad):
            raise InvalidArgument(f"invalid subnet {subnet!r}: it takes in {bad} ({why} addresses), which no "
                                  "container can have")
    return net


def parse_gateway(net: IPNet, gateway: str | None) -> str:
    if gateway is None:
        return str(net.network_address + 1)
    gw = parse_ip(gateway, "invalid gateway")
    if gw not in net or gw == net.network_address or (net.version == 4 and gw == net.broadcast_address):
        raise InvalidArgument(f"invalid gateway {gateway!r}: not a host address of subnet {net}")
    return str(gw)


def check_overlap(net: IPNet, taken: list[tuple[IPNet, str]], routes: list[Route]) -> None:
    for s, owner in taken:
        if s.version == net.version and net.overlaps(s):
            raise FailedPrecondition(f"subnet {net} overlaps subnet {s} of {owner}")
    for r in routes:
        if r.dst.version == net.version and net.overlaps(r.dst):
            raise FailedPrecondition(f"subnet {net} overlaps the host's route to {r.dst}"
                                     + (f" (dev {r.dev})" if r.dev else "") + "; choose another --subnet")


def build_conflist(name: str, subnet: IPNet, gateway: str, bridge: str, *, internal: bool,
                   labels: Mapping[str, str], ipam_dir: Path) -> dict[str, Any]:
    """The conflist of a Dockyard bridge network (Debian's plugins: bridge+host-local, portmap, firewall)."""
    default_route = "0.0.0.0/0" if subnet.version == 4 else "::/0"
    return {
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                # internal: no address on the bridge, no masquerade, no default route - nothing out
                "isGateway": not internal,
                "ipMasq": not internal,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet), "gateway": gateway}]],
                    "routes": [] if internal else [{"dst": default_route}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            # its own chains only (CNI-FORWARD, CNI-ISOLATION-*); same-bridge keeps networks apart
            {"type": "firewall", "backend": "iptables", "ingressPolicy": "same-bridge"},
        ],
        "dockyard": {"id": uuid.uuid4().hex, "labels": dict(labels), "internal": internal, "created": time.time()},
    }


def load(path: Path) -> Network:
    """Parse one conflist (or single-plugin .conf); InvalidArgument naming the file when malformed."""
    try:
        doc = json_object(path.read_bytes(), str(path), InvalidArgument)
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read: {exc.strerror}") from None
    if "plugins" not in doc and isinstance(doc.get("type"), str):  # a single-plugin .conf
        doc = {"cniVersion": doc.get("cniVersion", CNI_VERSION), "name": doc.get("name"), "plugins": [doc]}
    name = doc.get("name")
    if not valid_name(name):
        raise InvalidArgument(f"{path}: \"name\" must be a network name, not {shown(str(name))}")
    if not isinstance(doc.get("cniVersion", CNI_VERSION), str):
        raise InvalidArgument(f"{path}: \"cniVersion\" must be a string")
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidArgument(f"{path}: \"plugins\" must be a non-empty list")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise InvalidArgument(f"{path}: plugins[{i}] must be an object with a \"type\"")
    meta = doc.get("dockyard") if isinstance(doc.get("dockyard"), dict) else None
    subnets: list[IPNet] = []
    gateway: str | None = None
    bridge: str | None = None
    for p in plugins:
        if p["type"] == "bridge" and isinstance(p.get("bridge"), str):
            bridge = bridge or p["bridge"]
        ipam = p.get("ipam")
        if not isinstance(ipam, dict):
            continue
        ranges = ipam.get("ranges")
        entries: list[Any] = []
        if isinstance(ranges, list):
            entries = [r for rs in ranges if isinstance(rs, list) for r in rs]
        elif "subnet" in ipam:
            entries = [ipam]
        for r in entries:
            try:
                subnets.append(ipaddress.ip_network(str(r.get("subnet")), strict=False))
            except (ValueError, AttributeError):
                raise InvalidArgument(f"{path}: invalid ipam subnet {r!r}") from None
            gateway = gateway or (str(r["gateway"]) if isinstance(r, dict) and r.get("gateway") else None)
    if bridge is None and any(p["type"] == "bridge" for p in plugins):
        bridge = "cni0"  # the bridge plugin's default name
    labels = meta.get("labels", {}) if meta else {}
    return Network(
        name=name, path=path, conflist=doc, subnets=subnets, gateway=gateway, bridge=bridge,
        internal=bool(meta.get("internal")) if meta else False,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        id=str(meta.get("id")) if meta and meta.get("id") else name,
        created=_created(meta.get("created") if meta else None),
        managed=meta is not None,
    )


def _created(value: Any) -> float | None:
    """A conflist's creation time, if it is one (a number a Timestamp can hold: a file's 1e300 or
    NaN once failed every List)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        created = float(value)
    except OverflowError:  # an integer past a float's range
        return None
    return created if _CREATED_RANGE[0] <= created <= _CREATED_RANGE[1] else None
