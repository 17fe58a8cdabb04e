"""NetworkManager: a container's network - netns, CNI ADD/DEL/CHECK, ports, DNS files, reconcile.

Words: an *attachment* is one container's network: its netns file ``<state>/netns/<cni id>``
(``lo`` brought up as it is made: the effect of CNI's loopback plugin, without a process), one
interface per network (``eth0``, ``eth1``, ... in the order asked), the published ports (given
to the first network's portmap plugin), and its generated ``resolv.conf``/``hosts`` in
``<state>/network/<ns>/<id>/``. Its *record*,
``<root>/networks/attachments/<cni id>.json``, holds what DEL needs without the daemon's memory: the
conflist as used at ADD time, the interface names, the runtimeConfig and each ADD result. It lives
under <root>, not <state>, because host-local's allocations (``<root>/networks/ipam``) outlive a
reboot and must be released after one too. The *CNI container id* is ``dockyard-`` + a hash of
(namespace, id): containerd allows one id in several namespaces, CNI needs one unique id. The
netns file is named by it too: ``-`` is allowed in both namespace and id, so ``<ns>-<id>`` would
give ("a-b", "c") and ("a", "b-c") one file, and one container's cleanup would unmount the other's.

Lifecycle (the daemon's task path, wired in a later session):
  - task create: ``att = await manager.attach(ns, id, networks, ports, hostname=..., dns=...)``;
    put ``str(att.netns_path)`` into the OCI spec's network namespace ``path`` and bind-mount
    ``att.resolv_conf``/``att.hosts`` onto /etc/resolv.conf and /etc/hosts. If the shim fails to
    start, call ``detach``.
  - task delete, container delete: ``await manager.detach(ns, id)`` (idempotent).
  - daemon start, after the runtime has found its shims: ``await manager.reconcile(live)`` with
    the (namespace, id) of every container whose task still runs.
Writes are stage-then-rename; the record is written *before* the netns and the first ADD, so a
crash at any point leaves a record (or an IPAM allocation) that reconcile finds.

Errors: InvalidArgument (bad id, port, DNS server, --add-host, duplicate network; a host port
published twice by the container; a host IP of a family the first network has no subnet of, whose
mapping portmap would skip without a word; more than MAX_PORTS ports), NotFound (unknown network),
AlreadyExists (the container is already attached), FailedPrecondition (a host port in use - named
-, a host IP that is no address of the host, a network in use on removal or the default one, a
plugin error as the plugin reported it, a missing plugin), ResourceExhausted (the network has no
free address: host-local's "no IP addresses available"), DeadlineExceeded (a plugin timed out),
Unavailable (netns create/remove). Host IPs are plain addresses, normalised (``addresses``);
``0.0.0.0`` and ``::`` are every address of their family, as portmap reads them, so a port
published on ``0.0.0.0`` clashes with the same port on ``127.0.0.1``.
After a failed ``attach`` nothing is left: DEL ran for every network, the netns and files are
gone, the record removed. A failed ``detach`` keeps the record and the netns (reconcile retries
it) and raises; DEL errors on a network whose ADD never completed are logged, not kept (best
effort, as libcni). Removing (or pruning) a network Dockyard made also removes what its plugins
left on the host for it and nobody else uses: its bridge (with the gateway address and the route
that kept its subnet from being used again), the firewall plugin's isolation rules naming that
bridge, and its host-local directory.

Example::

    manager = NetworkManager(state=Path("/run/dockyard"), root=Path("/var/lib/dockyard"),
                             store=NetworkStore(Path("/etc/dockyard/net.d"),
                                                Path("/var/lib/dockyard/networks/ipam")))
    att = await manager.attach("default", "web", ["dockyard"], [PortMapping(80, 8080)], hostname="web")
    att.interfaces[0].addresses   # ["10.88.0.2/16"];  att.ports[0].host_port == 8080
    await manager.detach("default", "web")
    report = await manager.reconcile({("default", "db")})
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockyard_common.errors import (
    AlreadyExists,
    DockyardError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    error_text,
)
from dockyard_common.ipaddrs import parse_ip
from dockyard_common.netlabels import DEFAULT_NETWORK, MAX_PORTS  # (MAX_PORTS: why, in netlabels)
from supervisor.network import netns, resolv
from supervisor.network.cni import CNIPluginError, CNIRunner
from supervisor.network.networks import Network, NetworkStore, Problem

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp", "sctp")
# what host-local says when a range has no address left
_NO_ADDRESS = "no IP addresses available"
# the firewall plugin's chains for ingressPolicy same-bridge: rules per bridge, never removed by DEL
_ISOLATION_CHAINS = ("CNI-ISOLATION-STAGE-1", "CNI-ISOLATION-STAGE-2")
_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class PortMapping:
    """`-p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]`; host_port 0 means "pick a free one", and
    host_port_end "pick a free one of host_port..host_port_end" (only asked for: a chosen
    mapping has one host port)."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""
    host_port_end: int = 0

    def to_cni(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hostPort": self.host_port, "containerPort": self.container_port,
                               "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    def describe(self) -> str:
        ip = self.host_ip or "0.0.0.0"
        return f"{f'[{ip}]' if ':' in ip else ip}:{self.host_port}/{self.protocol}"


@dataclass
class Interface:
    network: str
    ifname: str
    addresses: list[str]  # CIDR, as the ADD result gave them
    gateway: str | None
    mac: str | None


@dataclass
class Attachment:
    namespace: str
    container_id: str
    netns_path: Path
    interfaces: list[Interface]
    ports: list[PortMapping]
    resolv_conf: Path | None
    hosts: Path | None


@dataclass
class ReconcileReport:
    released: list[str] = field(default_factory=list)       # "<ns>/<id>" whose network was torn down
    removed_netns: list[str] = field(default_factory=list)  # stray netns files removed
    released_addresses: list[str] = field(default_factory=list)  # orphan IPAM allocations released
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def cni_container_id(namespace: str, container_id: str) -> str:
    return "dockyard-" + hashlib.sha256(f"{namespace}\0{container_id}".encode()).hexdigest()[:32]


class NetworkManager:
    def __init__(self, *, state: Path, root: Path, store: NetworkStore, runner: CNIRunner | None = None) -> None:
        self.netns_dir = Path(state) / "netns"
        self.files_dir = Path(state) / "network"
        self.records_dir = Path(root) / "networks" / "attachments"
        self.ipam_root = Path(root) / "networks"
        self.store = store
        self.runner = runner or CNIRunner()
        self._lock = asyncio.Lock()  # ports, records and network create/remove decisions
        self._net_locks: dict[str, asyncio.Lock] = {}
        # a lock stays while a holder or waiter references it, then goes by itself: removing it
        # by hand while held would let a newcomer take a fresh one and race the holder
        self._ctr_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._records: dict[str, dict[str, Any]] = {}
        self._load_records()

    # ----- networks (in-use aware) --------------------------------------------------------------

    async def create_network(self, name: str, **kw: Any) -> Network:
        async with self._lock:
            return await asyncio.to_thread(self.store.create, name, **kw)

    async def list_networks(self) -> tuple[list[Network], list[Problem]]:
        return await asyncio.to_thread(self.store.list)

    async def inspect_network(self, name: str) -> tuple[Network, list[tuple[str, str]]]:
        net = await asyncio.to_thread(self.store.get, name)
        return net, self.users(name)

    def users(self, network: str) -> list[tuple[str, str]]:
        return sorted((r["namespace"], r["id"]) for r in self._records.values()
                      if any(n["name"] == network for n in r["networks"]))

    async def remove_network(self, name: str) -> Network:
        async with self._lock:
            users = self.users(name)
            if users:
                who = ", ".join(f"{ns}/{cid}" for ns, cid in users[:5]) + (" ..." if len(users) > 5 else "")
                raise FailedPrecondition(f"network {name!r} is in use by {len(users)} container(s): {who}")
            return await asyncio.to_thread(self._remove_network, name)

    async def prune_networks(self) -> list[str]:
        """Remove every unused network Dockyard made, except the default one."""
        async with self._lock:
            networks, _ = await asyncio.to_thread(self.store.list)
            removed = []
            for net in networks:
                if net.managed and net.name != DEFAULT_NETWORK and not self.users(net.name):
                    await asyncio.to_thread(self._remove_network, net.name)
                    removed.append(net.name)
            return removed

    def _remove_network(self, name: str) -> Network:
        """The conflist, then (for a network of ours) what its plugins left on the host for it."""
        net = self.store.remove(name)
        if net.managed:
            try:
                others, _ = self.store.list()
                self._release_host_side(net, others)
            except Exception as exc:  # the network is gone; what is left is only logged
                log.warning("network %r removed; cleaning up after it: %s", name, exc)
        return net

    def _release_host_side(self, net: Network, others: list[Network]) -> None:
        """The bridge plugin makes the bridge (with the gateway address and its subnet's route),
        the firewall plugin its isolation rules; no DEL removes either, as other containers may
        share them. Once the network is gone they are nobody's: left, the route kept the subnet
        from being used again ("overlaps the host's route"), and a later network on the same
        bridge name inherited the old address. Only a bridge no other network names, with no
        interface left on it and no address outside this network's subnets, is ours to remove;
        and only when a container of this daemon ever joined the network (host-local made its
        directory under our root then): a network only created and removed touches nothing of the
        host's, whose own bridge may carry the same name."""
        ours = [d for d in net.ipam_dirs if d.is_relative_to(self.ipam_root)]
        joined = any(d.is_dir() for d in ours)
        for d in ours:
            # host-local's lock and last-reserved files; an allocation left (of no record) stays
            if not _allocations(d):
                shutil.rmtree(d, ignore_errors=True)
        bridge = net.bridge
        if not joined or not bridge or any(o.bridge == bridge for o in others):
            return
        link = _run_tool("ip", "-j", "-d", "addr", "show", "dev", bridge)
        if link is None:
            return  # never made (no container ever joined), or gone
        info = (json.loads(link or "[]") or [{}])[0]
        if (info.get("linkinfo") or {}).get("info_kind") != "bridge":
            return
        addresses = [ipaddress.ip_address(a["local"]) for a in info.get("addr_info", []) if a.get("local")]
        if any(not any(a in s for s in net.subnets) for a in addresses if not a.is_link_local):
            return  # an address of something else: not a bridge this network made
        if json.loads(_run_tool("ip", "-j", "link", "show", "master", bridge) or "[]"):
            return  # an interface is still on it: someone's container
        _run_tool("ip", "link", "delete", "dev", bridge, check=True)
        for tool in ("iptables", "ip6tables"):
            for chain in _ISOLATION_CHAINS:
                for rule in _rules_naming(tool, chain, bridge):
                    _run_tool(tool, "-w", "-t", "filter", "-D", chain, *rule)

    # ----- attach / detach -----------------------------------------------------------------------

    def netns_path(self, namespace: str, container_id: str) -> Path:
        return self.netns_dir / cni_container_id(namespace, container_id)

    def file_paths(self, namespace: str, container_id: str) -> tuple[Path, Path]:
        """The attachment's resolv.conf and hosts (made by attach)."""
        files = self._files(namespace, container_id)
        return files / "resolv.conf", files / "hosts"

    async def attach(self, namespace: str, container_id: str, networks: Sequence[str] | None = None,
                     ports: Sequence[PortMapping] = (), *, hostname: str = "", dns: Sequence[str] = (),
                     dns_search: Sequence[str] = (), dns_options: Sequence[str] = (),
                     extra_hosts: Sequence[str] = (), on_netns: Callable[[], None] | None = None) -> Attachment:
        """Attach the container (see the module's words). With `on_netns`, the netns and the
        files (hosts without the container's addresses yet) are made first and `on_netns()` is
        called before the plugins run, so the task can be created meanwhile; the hosts file is
        then rewritten in place once the addresses are known."""
        _check_id("namespace", namespace)
        _check_id("container id", container_id)
        if len(ports) > MAX_PORTS:
            raise InvalidArgument(f"{len(ports)} published ports: a container publishes at most {MAX_PORTS}")
        ports = [_check_port(p) for p in ports]
        # validate before anything is made
        resolv.resolv_conf("", dns=dns, search=dns_search, options=dns_options)
        resolv.hosts_file(hostname, [], extra_hosts)
        names = list(networks or [DEFAULT_NETWORK])
        if len(set(names)) != len(names):
            raise InvalidArgument(f"network listed twice: {', '.join(names)}")
        key = cni_container_id(namespace, container_id)
        async with self._ctr_lock(key):
            async with self._lock:
                if key in self._records:
                    raise AlreadyExists(f"network attachment of container {container_id!r} in namespace "
                                        f"{namespace!r}")
                # under the lock: a network cannot be removed between this and the record naming it
                resolved, chosen = await asyncio.to_thread(self._resolve_and_choose, names, ports)  # one thread hop
                path = self.netns_path(namespace, container_id)
                rc = {"portMappings": [p.to_cni() for p in chosen]} if chosen else {}
                rec: dict[str, Any] = {
                    "namespace": namespace, "id": container_id, "cni_id": key, "netns": str(path),
                    "hostname": hostname, "ports": [asdict(p) for p in chosen],
                    "networks": [{"name": n.name, "ifname": f"eth{i}", "conflist": n.conflist,
                                  "runtimeConfig": rc if i == 0 else {}, "result": None}
                                 for i, n in enumerate(resolved)],
                }
                # durable, before the netns: a crash (or power loss) from here on is found
                await asyncio.to_thread(self._save, rec, durable=True)
            try:
                # a new netns has `lo` down: it is brought up in the thread that makes the netns, which
                # is all CNI's loopback plugin does on ADD (one process start less per container; no
                # DEL needed: lo goes with the namespace)
                await asyncio.to_thread(netns.create, path, lo_up=True)
            except BaseException:
                # the netns is not ours (a leftover file, or the kernel refused): undo only the record
                await asyncio.to_thread(self._drop, key)
                raise
            files = self._files(namespace, container_id)
            try:
                if on_netns is not None:
                    await asyncio.to_thread(
                        resolv.write_files, files, hostname=hostname, addresses=[], dns=dns, dns_search=dns_search,
                        dns_options=dns_options, extra_hosts=extra_hosts)
                    on_netns()
                for net, network in zip(rec["networks"], resolved, strict=True):
                    async with self._net_lock(net["name"]):
                        try:
                            net["result"] = await self.runner.add(net["conflist"], key, str(path), net["ifname"],
                                                                  runtime_config=net["runtimeConfig"])
                        except CNIPluginError as exc:
                            if _NO_ADDRESS not in str(exc):
                                raise
                            subnets = ", ".join(str(s) for s in network.subnets) or "its ranges"
                            raise ResourceExhausted(f"network {net['name']!r} has no free address left in "
                                                    f"{subnets} ({exc.msg or exc.message})") from None
                    # no fsync: a process crash keeps the renamed file; after a power loss the netns,
                    # veths and rules are gone and the durable record (or, lost, the IPAM
                    # allocation) still gets the addresses released
                    await asyncio.to_thread(self._save, rec)
                att = _attachment(rec)
                addrs = [a.split("/")[0] for i in att.interfaces for a in i.addresses]
                if on_netns is not None:
                    att.resolv_conf, att.hosts = self.file_paths(namespace, container_id)
                    await asyncio.to_thread(resolv.rewrite_hosts, att.hosts, hostname=hostname, addresses=addrs,
                                            extra_hosts=extra_hosts)
                else:
                    att.resolv_conf, att.hosts = await asyncio.to_thread(
                        resolv.write_files, files, hostname=hostname, addresses=addrs, dns=dns,
                        dns_search=dns_search, dns_options=dns_options, extra_hosts=extra_hosts)
                return att
            except BaseException:
                try:
                    await self._teardown(rec)
                except Exception as exc:  # the original error matters more; reconcile retries this
                    log.warning("cleaning up the failed network attachment of %s/%s: %s",
                                namespace, container_id, exc)
                raise

    async def detach(self, namespace: str, container_id: str) -> None:
        """Release the container's network (DEL, netns, files, record); nothing to do if it has none."""
        key = cni_container_id(namespace, container_id)
        async with self._ctr_lock(key):
            rec = self._records.get(key)
            if rec is None:
                await asyncio.to_thread(netns.remove, self.netns_path(namespace, container_id))
                await asyncio.to_thread(shutil.rmtree, self._files(namespace, container_id), True)
                return
            await self._teardown(rec)

    def get(self, namespace: str, container_id: str) -> Attachment:
        rec = self._records.get(cni_container_id(namespace, container_id))
        if rec is None:
            raise NotFound(f"network attachment of container {container_id!r} in namespace {namespace!r}")
        att = _attachment(rec)
        att.resolv_conf, att.hosts = self.file_paths(namespace, container_id)
        return att

    async def check(self, namespace: str, container_id: str) -> None:
        """CNI CHECK every network of a live container; raises what the plugin reported."""
        rec = self._records.get(cni_container_id(namespace, container_id))
        if rec is None:
            raise NotFound(f"network attachment of container {container_id!r} in namespace {namespace!r}")
        if not netns.is_mounted(Path(rec["netns"])):
            raise FailedPrecondition(f"the network namespace of container {container_id!r} is gone")
        for net in rec["networks"]:
            await self.runner.check(net["conflist"], rec["cni_id"], rec["netns"], net["ifname"], net["result"],
                                    runtime_config=net["runtimeConfig"])

    # ----- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, live: Iterable[tuple[str, str]], *, check: bool = True) -> ReconcileReport:
        """After a restart: release everything of containers not in `live`, CHECK the live ones
        (unless `check` is false: the daemon CHECKs them later, without holding up its start)."""
        live = set(live)
        live_keys = {cni_container_id(ns, cid) for ns, cid in live}
        report = ReconcileReport()
        self._load_records()
        for key, rec in list(self._records.items()):
            who = f"{rec['namespace']}/{rec['id']}"
            if key in live_keys:
                if not check:
                    continue
                report.checked += 1
                try:
                    await self.check(rec["namespace"], rec["id"])
                except DockyardError as exc:
                    report.problems.append(f"{who}: {exc}")
                continue
            try:
                async with self._ctr_lock(key):
                    await self._teardown(rec)
                report.released.append(who)
            except DockyardError as exc:
                report.problems.append(f"{who}: {exc}")
        await self._release_orphan_addresses(live_keys | set(self._records), report)
        live_netns = {self.netns_path(ns, cid) for ns, cid in live}
        kept_netns = {Path(r["netns"]) for r in self._records.values()}
        for path in await asyncio.to_thread(netns.listing, self.netns_dir):
            if path not in live_netns and path not in kept_netns:
                try:
                    await asyncio.to_thread(netns.remove, path)
                    report.removed_netns.append(str(path))
                except DockyardError as exc:
                    report.problems.append(str(exc))
        await asyncio.to_thread(self._remove_stray_files, live)
        return report

    async def _release_orphan_addresses(self, keep: set[str], report: ReconcileReport) -> None:
        """host-local allocations of no live container and no record (the record was lost), in
        IPAM dirs under our <root>/networks only: DEL with that network's config releases them the
        plugins' way. Without a kept ADD result the
        plugins get what they need rebuilt from what is left: the address (the allocation file's
        name), the interface, the netns (its file is named by the owner) and a port-mapping marker so
        portmap removes the container's chains."""
        # the netns file is named by the CNI container id, the allocation's owner (looked up among
        # the files, not joined as a path: the owner is whatever the allocation file held)
        stray = {p.name: p for p in await asyncio.to_thread(netns.listing, self.netns_dir)}
        networks, _ = await asyncio.to_thread(self.store.list)
        for net in networks:
            for d in net.ipam_dirs:
                if not d.is_relative_to(self.ipam_root):
                    # another daemon's (a net.d shared by daemons with other roots) or another
                    # runtime's: allocations we have no record of there may be live, not lost
                    continue
                for owner, ifname, addr in await asyncio.to_thread(_allocations, d):
                    if owner in keep or not owner.startswith("dockyard-"):
                        continue  # another runtime's allocation in a shared dataDir is not ours
                    ip = ipaddress.ip_address(addr)
                    prefix = next((s.prefixlen for s in net.subnets if ip in s), ip.max_prefixlen)
                    ns_path = stray.get(owner)
                    ns_arg = ""
                    if ns_path is not None and await asyncio.to_thread(netns.is_mounted, ns_path):
                        ns_arg = str(ns_path)
                    prev = {"cniVersion": net.conflist.get("cniVersion", "1.0.0"),
                            "interfaces": [{"name": ifname, "sandbox": ns_arg}],
                            "ips": [{"address": f"{addr}/{prefix}", "interface": 0}]}
                    marker = {"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}]}
                    try:
                        await self.runner.delete(net.conflist, owner, ns_arg, ifname, prev, runtime_config=marker)
                        report.released_addresses.append(f"{net.name}:{addr}")
                    except DockyardError as exc:
                        report.problems.append(f"releasing {addr} in network {net.name!r}: {exc}")

    # ----- internals -----------------------------------------------------------------------------

    def _resolve(self, name: str) -> Network:
        return self.store.ensure_default() if name == DEFAULT_NETWORK else self.store.get(name)

    def _resolve_and_choose(self, names: Sequence[str], ports: Sequence[PortMapping]
                            ) -> tuple[list[Network], list[PortMapping]]:
        resolved = [self._resolve(n) for n in names]
        if ports and resolved:
            _check_families(resolved[0], ports)
        return resolved, self._choose_ports(ports)

    async def _teardown(self, rec: dict[str, Any]) -> None:
        path = Path(rec["netns"])
        # DEL with the netns while it exists (plugins remove the veth inside); without it
        # (a reboot) plugins still release addresses and firewall rules
        ns_arg = str(path) if await asyncio.to_thread(netns.is_mounted, path) else ""
        errors: list[DockyardError] = []
        for net in reversed(rec["networks"]):
            async with self._net_lock(net["name"]):
                try:
                    await self.runner.delete(net["conflist"], rec["cni_id"], ns_arg, net["ifname"], net["result"],
                                             runtime_config=net["runtimeConfig"])
                except DockyardError as exc:
                    if net["result"] is not None:
                        errors.append(exc)
                    else:
                        # its ADD never completed (it failed, or the daemon died in it): this DEL is
                        # best effort, and a plugin that fails it would otherwise pin the record forever
                        log.warning("DEL after an unfinished ADD of %s/%s on network %r: %s",
                                    rec["namespace"], rec["id"], net["name"], exc)
        if errors:
            # keep the netns with the record: the retry's DEL needs it (the bridge plugin finds the
            # addresses whose masquerade rules it removes on the interface inside)
            raise errors[0]
        await asyncio.to_thread(self._remove_all, path, self._files(rec["namespace"], rec["id"]), rec["cni_id"])

    def _remove_all(self, path: Path, files: Path, key: str) -> None:
        """The netns, the generated files, then the record (in that order: a crash keeps the record
        while anything else is left), in one thread hop."""
        netns.remove(path)
        shutil.rmtree(files, True)
        self._drop(key)

    def _choose_ports(self, ports: Sequence[PortMapping]) -> list[PortMapping]:
        """Fix host ports: check the named ones are free, pick free ones for 0 (bind-probe)."""
        # (protocol, port) -> [(host ip, who)]: a lookup per port, not a walk of every record's
        taken: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for r in self._records.values():
            for q in r["ports"]:
                taken.setdefault((q["protocol"], q["host_port"]), []).append(
                    (q["host_ip"], f"container {r['namespace']}/{r['id']}"))
        out: list[PortMapping] = []

        def clash(p: PortMapping) -> str | None:
            for ip, who in taken.get((p.protocol, p.host_port), ()):
                if _same_host_address(ip, p.host_ip):
                    return who
            return None

        # the request's own mistakes first, before anything is probed
        named: dict[tuple[str, int], list[PortMapping]] = {}
        for p in ports:
            if p.host_port and not p.host_port_end:
                for first in named.get((p.protocol, p.host_port), ()):
                    if _same_host_address(first.host_ip, p.host_ip):
                        raise InvalidArgument(f"host port {p.describe()} is published twice by this container (to "
                                              f"its ports {first.container_port} and {p.container_port})")
                named.setdefault((p.protocol, p.host_port), []).append(p)
        for p in ports:
            if p.host_port == 0:
                for _ in range(50):
                    q = PortMapping(p.container_port, _probe(p.protocol, p.host_ip, 0), p.protocol, p.host_ip)
                    if clash(q) is None and (q.protocol, q.host_port) not in named:
                        break
                else:
                    raise FailedPrecondition(f"no free host port for {p.container_port}/{p.protocol}")
                p = q
            elif p.host_port_end:
                p = self._one_of_range(p, clash, named)
            else:
                who = clash(p)
                if who is not None:
                    raise FailedPrecondition(f"host port {p.describe()} is already published by {who}")
                _probe(p.protocol, p.host_ip, p.host_port)
            taken.setdefault((p.protocol, p.host_port), []).append((p.host_ip, "this container"))
            out.append(p)
        return out

    @staticmethod
    def _one_of_range(p: PortMapping, clash: Callable[[PortMapping], str | None],
                      named: Mapping[tuple[str, int], object]) -> PortMapping:
        """The first port of `p`'s host range that no container publishes, this request does not
        name, and the host lets us bind (as Docker's allocator, which also starts at the low end)."""
        for port in range(p.host_port, p.host_port_end + 1):
            q = PortMapping(p.container_port, port, p.protocol, p.host_ip)
            if clash(q) is not None or (q.protocol, port) in named:
                continue
            try:
                _probe(q.protocol, q.host_ip, port)
            except FailedPrecondition:
                continue
            return q
        raise FailedPrecondition(f"no free host port in {p.host_port}-{p.host_port_end} for "
                                 f"{p.container_port}/{p.protocol}")

    def _files(self, namespace: str, container_id: str) -> Path:
        return self.files_dir / namespace / container_id

    def _remove_stray_files(self, live: set[tuple[str, str]]) -> None:
        kept = live | {(r["namespace"], r["id"]) for r in self._records.values()}
        with contextlib.suppress(FileNotFoundError):
            for ns_dir in self.files_dir.iterdir():
                for d in ns_dir.iterdir():
                    if (ns_dir.name, d.name) not in kept:
                        shutil.rmtree(d, ignore_errors=True)
                with contextlib.suppress(OSError):
                    ns_dir.rmdir()

    def _net_lock(self, name: str) -> asyncio.Lock:
        # one ADD/DEL at a time per network: the bridge plugin's set-up of a shared bridge races
        return self._net_locks.setdefault(name, asyncio.Lock())

    def _ctr_lock(self, key: str) -> asyncio.Lock:
        lock = self._ctr_locks.get(key)
        if lock is None:
            lock = self._ctr_locks[key] = asyncio.Lock()
        return lock

    def _load_records(self) -> None:
        self._records = {}
        with contextlib.suppress(FileNotFoundError):
            for f in sorted(self.records_dir.glob("*.json")):
                try:
                    rec = json.loads(f.read_bytes())
                    self._records[rec["cni_id"]] = rec
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable network attachment record %s: %s", f, exc)

    def _save(self, rec: dict[str, Any], *, durable: bool = False) -> None:
        """Stage, then rename (a reader never sees half a record); `durable`: fsync'd first."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        path = self.records_dir / f"{rec['cni_id']}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        self._records[rec["cni_id"]] = rec

    def _drop(self, key: str) -> None:
        (self.records_dir / f"{key}.json").unlink(missing_ok=True)
        self._records.pop(key, None)


def _attachment(rec: dict[str, Any]) -> Attachment:
    interfaces = []
    for net in rec["networks"]:
        result = net.get("result") or {}
        ifaces = result.get("interfaces") or []
        ips = result.get("ips") or []
        # the container-side interface is the one with a sandbox; its index is what ips point at
        idx = next((i for i, itf in enumerate(ifaces) if itf.get("sandbox")), None)
        mine = [ip for ip in ips if ip.get("interface") in (idx, None)]
        interfaces.append(Interface(
            network=net["name"], ifname=net["ifname"], addresses=[str(ip.get("address")) for ip in mine],
            gateway=next((str(ip["gateway"]) for ip in mine if ip.get("gateway")), None),
            mac=ifaces[idx].get("mac") if idx is not None else None))
    return Attachment(namespace=rec["namespace"], container_id=rec["id"], netns_path=Path(rec["netns"]),
                      interfaces=interfaces, ports=[PortMapping(**p) for p in rec["ports"]],
                      resolv_conf=None, hosts=None)


def _allocations(directory: Path) -> list[tuple[str, str, str]]:
    """host-local's files: one per address, named by it, holding `<container id>\\r\\n<ifname>`."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for f in directory.iterdir():
            try:
                ipaddress.ip_address(f.name)
                lines = f.read_text().splitlines()
            except (ValueError, OSError):
                continue
            if lines:
                out.append((lines[0].strip(), lines[1].strip() if len(lines) > 1 else "eth0", f.name))
    return out


def _check_id(what: str, value: str) -> None:
    if not value or "/" in value or value in (".", "..") or "\0" in value or len(value) > 200:
        raise InvalidArgument(f"invalid {what} {value!r}")


def _check_port(p: PortMapping) -> PortMapping:
    """`p` checked, its host IP normalised (a plain address: `::0001` is `::1`)."""
    if p.protocol not in PROTOCOLS:
        raise InvalidArgument(f"invalid port protocol {p.protocol!r}: use tcp, udp or sctp")
    for what, number, low in (("container port", p.container_port, 1), ("host port", p.host_port, 0)):
        if not isinstance(number, int) or isinstance(number, bool) or not low <= number <= 65535:
            raise InvalidArgument(f"invalid {what} {number!r}: use 1-65535"
                                  + (", or 0 for any free port" if low == 0 else ""))
    if p.host_port_end and not 0 < p.host_port < p.host_port_end <= 65535:
        raise InvalidArgument(f"invalid host port range {p.host_port}-{p.host_port_end}")
    host_ip = str(parse_ip(p.host_ip, "invalid host IP for a published port")) if p.host_ip else ""
    return PortMapping(p.container_port, p.host_port, p.protocol, host_ip, p.host_port_end)


def _same_host_address(a: str, b: str) -> bool:
    """Whether two (normalised) host IPs of mappings of one port overlap: "" is every address,
    0.0.0.0 and :: every address of their family (portmap adds no destination for them)."""
    if not a or not b:
        return True
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return ia.version == ib.version and (ia == ib or ia.is_unspecified or ib.is_unspecified)


def _check_families(net: Network, ports: Sequence[PortMapping]) -> None:
    """portmap maps a host IP only to container addresses of its family, and skips the mapping
    without a word otherwise: a published port that never answers. Refused instead."""
    families = {s.version for s in net.subnets}
    if not families:
        return  # a user's conflist whose addresses we cannot tell (dhcp, static): as it comes
    for p in ports:
        if p.host_ip and ipaddress.ip_address(p.host_ip).version not in families:
            have = " and ".join(f"IPv{v}" for v in sorted(families))
            raise InvalidArgument(f"cannot publish {p.describe()}: host IP {p.host_ip} is IPv"
                                  f"{ipaddress.ip_address(p.host_ip).version}, and network {net.name!r} gives the "
                                  f"container only {have} addresses")


def _run_tool(*argv: str, check: bool = False) -> str | None:
    """Run `ip`/`iptables` in the daemon's network namespace; its output, or None when it failed
    (or is not installed); with `check`, a failure raises."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": _TOOL_PATH}, cwd="/")
    except (OSError, subprocess.SubprocessError) as exc:
        if check:
            raise FailedPrecondition(f"{argv[0]}: {error_text(exc)}") from None
        return None
    if r.returncode != 0:
        if check:
            raise FailedPrecondition(f"{shlex.join(argv)}: {r.stderr.strip() or f'exit status {r.returncode}'}")
        return None
    return r.stdout


def _rules_naming(tool: str, chain: str, bridge: str) -> list[list[str]]:
    """The rules of `chain` (the firewall plugin's) that match on the interface `bridge`, as
    `-D` takes them."""
    out = _run_tool(tool, "-w", "-t", "filter", "-S", chain)
    rules = []
    for line in (out or "").splitlines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:2] != ["-A", chain]:
            continue
        rule = words[2:]
        if any(rule[i] in ("-i", "-o") and rule[i + 1] == bridge for i in range(len(rule) - 1)):
            rules.append(rule)
    return rules


def _probe(protocol: str, host_ip: str, port: int) -> int:
    """Bind the port to learn it is free (or, with 0, which free one the kernel gives); the port."""
    if protocol == "sctp":
        if port == 0:
            raise InvalidArgument("an sctp port needs an explicit host port")
        return port
    family = socket.AF_INET6 if host_ip and ipaddress.ip_address(host_ip).version == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            # a port in TIME_WAIT is free to publish; only a live listener or binder is a conflict
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            where = PortMapping(1, port, protocol, host_ip).describe()
            if exc.errno == errno.EADDRNOTAVAIL:
                raise FailedPrecondition(f"cannot publish {where}: {host_ip} is not an address of this host") from None
            raise FailedPrecondition(f"host port {where} is already in use ({exc.strerror})") from None
        return int(s.getsockname()[1])
