"""Hostile networking inputs against supervisor/network's pure logic: labels crafted past dock's
parser, resolv.conf/hosts injection, network names, subnets, gateways and labels, host ports.
Nothing here touches a network: no plugin runs, no port is bound (the bind probe is replaced by
one that fails the test), routes are given."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from supervisor.network import attachments, netns, networks, resolv
from supervisor.network import labels as L
from supervisor.network.attachments import NetworkManager, PortMapping
from supervisor.network.cni import CNIRunner
from supervisor.network.networks import NetworkStore, Route


def parse(**values: Any) -> L.NetworkRequest | None:
    return L.parse({f"{L.PREFIX}{k.replace('_', '-')}": v if isinstance(v, str) else json.dumps(v)
                    for k, v in values.items()})


def store(tmp_path: Path, routes: tuple[str, ...] = ()) -> NetworkStore:
    return NetworkStore(tmp_path / "net.d", tmp_path / "ipam",
                        routes=lambda: [Route(ipaddress.ip_network(r), "eth9") for r in routes])


# ----- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, words", [
    # Python's parser raised RecursionError (an "internal" status, a traceback in the log)
    ({"ports": "[" * 3000}, "nested too deeply"),
    ({"dns": "[" * 100_000}, "nested too deeply"),
    ({"ports": '[{"container_port": NaN}]'}, "not valid JSON"),
    ({"ports": '[{"container_port": 1e999}]'}, "not valid JSON"),
    # an IPv6 scope ("%...") took any text, newlines included
    ({"dns": ["fe80::1%\nnameserver 6.6.6.6"]}, "scope"),
    ({"extra_hosts": ["x:fe80::1%\n6.6.6.6 evil.example"]}, "scope"),
    ({"ports": [{"container_port": 80, "host_ip": "::1%\nx"}]}, "scope"),
    # a NUL or an escape in a host name went into /etc/hosts
    ({"extra_hosts": ["a\u0000b:10.1.2.3"]}, "not a single word"),
    ({"extra_hosts": ["a\u001b[2Jb:10.1.2.3"]}, "not a single word"),
    ({"extra_hosts": ["a b:10.1.2.3"]}, "not a single word"),
    ({"extra_hosts": ["db:10.1.2.3\n6.6.6.6 evil"]}, "not an IP address"),
    ({"dns_search": ["a\nnameserver 6.6.6.6"]}, "not a single word"),
    ({"dns_options": ["ndots:1\x00"]}, "not a single word"),
])
def test_hostile_labels_are_invalid_arguments(values: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(**values)
    assert words in str(info.value) and len(str(info.value)) < 600, str(info.value)


def test_label_addresses_are_normalised() -> None:
    req = parse(dns=["2001:db8::0001"], ports=[{"container_port": 80, "host_ip": "::0001"}],
                extra_hosts=["v6:[2001:db8::7]"])
    assert req is not None
    assert req.dns == ("2001:db8::1",) and req.ports[0].host_ip == "::1"
    assert "2001:db8::7\tv6" in resolv.hosts_file("", [], req.extra_hosts).splitlines()
    assert attachments._check_port(PortMapping(80, 8080, "tcp", "::0001")).host_ip == "::1"


# ----- resolv.conf and hosts ----------------------------------------------------------------------


def test_generated_files_take_no_line_of_the_callers() -> None:
    with pytest.raises(InvalidArgument, match="scope"):
        resolv.resolv_conf("", dns=["fe80::1%\nnameserver 6.6.6.6"])
    with pytest.raises(InvalidArgument, match="scope"):
        resolv.hosts_file("h", [], ["x:fe80::1%\n6.6.6.6 google.com"])
    with pytest.raises(InvalidArgument, match="not a single word"):
        resolv.hosts_file("h", [], ["a\0b:1.2.3.4"])
    with pytest.raises(InvalidArgument, match="not a single word"):
        resolv.hosts_file("web\n6.6.6.6 evil", ["10.88.0.2"])
    text = resolv.hosts_file("web", ["10.88.0.2"], ["db:10.1.2.3", "db6:[2001:db8::0007]"])
    assert text.splitlines()[-3:] == ["10.1.2.3\tdb", "2001:db8::7\tdb6", "10.88.0.2\tweb"]


# ----- networks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web\n", "a/b", "..", "a\0b", "n" * 10_000, "-x", ""])
def test_bad_network_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        store(tmp_path).create(name)
    assert "invalid network name" in str(info.value) and len(str(info.value)) < 400
    assert not (tmp_path / "net.d").exists() or not list((tmp_path / "net.d").iterdir())


def test_a_conflist_named_with_a_newline_is_a_problem_not_a_network(tmp_path: Path) -> None:
    s = store(tmp_path)
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "nl.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "nl\n", "plugins": [{"type": "bridge"}]}))
    nets, problems = s.list()
    assert nets == [] and len(problems) == 1 and "must be a network name" in problems[0].message


@pytest.mark.parametrize("subnet, gateway, words", [
    ("0.0.0.0/0", None, "'this network'"),
    ("::/0", None, "unspecified and loopback"),
    ("0.0.0.0/8", None, "'this network'"),
    ("127.0.0.0/16", None, "loopback"),
    ("224.0.0.0/24", None, "multicast"),
    ("240.0.0.0/24", None, "reserved"),
    ("ff02::/64", None, "multicast"),
    ("::ffff:10.0.0.0/120", None, "IPv4-mapped"),
    ("fd00::%eth0/64", None, "scope"),
    ("fd01::/64", "fd01::1%\nx", "scope"),
    ("10.51.0.0/24", "10.51.0.1%x", "not an IP address"),
    ("garbage" * 2000, None, "(14000 characters)"),
])
def test_unusable_subnets_and_gateways(tmp_path: Path, subnet: str, gateway: str | None, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        store(tmp_path).create("h", subnet=subnet, gateway=gateway)
    assert words in str(info.value) and len(str(info.value)) < 400, str(info.value)


def test_the_default_network_is_neither_made_nor_removed_by_hand(tmp_path: Path) -> None:
    s = store(tmp_path)
    with pytest.raises(InvalidArgument, match="default network"):
        s.create("dockyard")
    default = s.ensure_default()
    assert default.bridge == "dockyard0"
    with pytest.raises(FailedPrecondition, match="default network"):
        s.remove("dockyard")
    assert s.get("dockyard").id == default.id


def test_network_labels_follow_containerds_size_rule(tmp_path: Path) -> None:
    s = store(tmp_path)
    with pytest.raises(InvalidArgument, match="4096 bytes"):
        s.create("big", labels={"k": "v" * 5000})
    assert s.create("ok", labels={"k": "v" * 1000}).labels == {"k": "v" * 1000}


def test_no_bridge_name_left_is_resource_exhausted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(networks, "MAX_BRIDGES", 3)
    s = store(tmp_path)
    s.create("a")
    s.create("b")
    with pytest.raises(ResourceExhausted, match="no bridge name left"):  # was StopIteration, "internal"
        s.create("c")


@pytest.mark.parametrize("created", [1e300, 1e20, -1e12])
def test_a_creation_time_no_timestamp_holds_is_none(tmp_path: Path, created: Any) -> None:
    # a Timestamp refuses it: every List of networks failed with "internal"
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "odd.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "odd", "plugins": [{"type": "bridge"}],
         "dockyard": {"id": "x", "created": created}}))
    assert networks.load(tmp_path / "net.d" / "odd.conflist").created is None


# ----- host ports ----------------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NetworkManager:
    def no_probe(protocol: str, host_ip: str, port: int) -> int:
        raise AssertionError(f"bound {host_ip}:{port}/{protocol}: the request should have been refused before")

    def nothing_made(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a netns or a plugin run: the request should have been refused before")

    monkeypatch.setattr(attachments, "_probe", no_probe)
    monkeypatch.setattr(netns, "create", nothing_made)
    runner = CNIRunner([tmp_path / "no-plugins"])
    monkeypatch.setattr(runner, "add", nothing_made)
    monkeypatch.setattr(runner, "delete", nothing_made)
    return NetworkManager(state=tmp_path / "state", root=tmp_path / "root", store=store(tmp_path), runner=runner)


def published(mgr: NetworkManager, cid: str, *ports: PortMapping) -> None:
    """A record of container `cid` publishing `ports` (as an attach leaves it)."""
    mgr._records[cid] = {"namespace": "default", "id": cid, "cni_id": cid, "netns": "", "networks": [],
                         "ports": [{"container_port": p.container_port, "host_port": p.host_port,
                                    "protocol": p.protocol, "host_ip": p.host_ip} for p in ports]}


@pytest.mark.parametrize("first, second", [
    ("0.0.0.0", "127.0.0.1"),  # 0.0.0.0 is every IPv4 address (portmap adds no destination)
    ("127.0.0.1", "0.0.0.0"),
    ("", "::1"),
    ("::", "::1"),
    ("::1", "::0001"),  # one address, two spellings
])
def test_a_host_port_another_container_publishes_is_refused(manager: NetworkManager, first: str,
                                                            second: str) -> None:
    published(manager, "web", PortMapping(80, 18080, "tcp", first))
    port = attachments._check_port(PortMapping(80, 18080, "tcp", second))
    with pytest.raises(FailedPrecondition, match="already published by container default/web"):
        manager._choose_ports([port])


def test_a_host_port_twice_in_one_request_is_invalid(manager: NetworkManager) -> None:
    for ips in (("", ""), ("0.0.0.0", "127.0.0.1")):
        ports = [PortMapping(80, 18080, "tcp", ips[0]), PortMapping(81, 18080, "tcp", ips[1])]
        with pytest.raises(InvalidArgument, match=r"published twice by this container \(to its ports 80 and 81\)"):
            manager._choose_ports(ports)


async def test_more_ports_than_allowed_are_refused_before_anything(manager: NetworkManager, tmp_path: Path) -> None:
    ports = [PortMapping(1 + i, 20000 + i) for i in range(257)]
    with pytest.raises(InvalidArgument, match="257 published ports: a container publishes at most 256"):
        await manager.attach("default", "many", None, ports)
    assert not (tmp_path / "state").exists() and not (tmp_path / "root" / "networks" / "attachments").exists()


async def test_a_host_ip_of_a_family_the_network_lacks_is_refused(manager: NetworkManager, tmp_path: Path) -> None:
    # portmap skips the mapping without a word: a port "published" that never answers
    with pytest.raises(InvalidArgument, match=r"host IP ::1 is IPv6, and network 'dockyard' gives the container "
                                              r"only IPv4 addresses"):
        await manager.attach("default", "v6", None, [PortMapping(80, 18080, "tcp", "::1")])
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("port, words", [
    (PortMapping(80, 18080, "tcp", "fe80::1%eth0"), "scope"),
    (PortMapping(80, 18080, "icmp"), "protocol"),
    (PortMapping(0, 18080), "container port"),
    (PortMapping(80, 65536), "host port"),
    (PortMapping(80, -1), "host port"),
])
async def test_bad_ports_are_refused_before_anything(manager: NetworkManager, tmp_path: Path, port: PortMapping,
                                                     words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        await manager.attach("default", "bad", None, [port])
    assert not (tmp_path / "state").exists()


async def test_bad_dns_words_are_refused_before_anything(manager: NetworkManager, tmp_path: Path) -> None:
    # they were checked only once the netns was made and the plugins had run
    with pytest.raises(InvalidArgument, match="not a single word"):
        await manager.attach("default", "dns", None, dns_search=["a\nnameserver 6.6.6.6"])
    with pytest.raises(InvalidArgument, match="not a single word"):
        await manager.attach("default", "dns", None, dns_options=["a b"])
    assert not (tmp_path / "state").exists() and not (tmp_path / "net.d").exists()


def test_a_non_local_host_ip_is_named_as_such() -> None:
    # the bind probe said "already in use (Cannot assign requested address)"
    with pytest.raises(FailedPrecondition, match=r"192\.0\.2\.99 is not an address of this host"):
        attachments._probe("tcp", "192.0.2.99", 18080)
    assert PortMapping(80, 8080, "tcp", "::1").describe() == "[::1]:8080/tcp"


async def test_a_network_never_joined_is_removed_without_touching_the_host(manager: NetworkManager,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # removal deletes the bridge a network's containers made; one no container of this daemon
    # ever joined made none, and a bridge of that name on the host is someone else's
    def no_tool(*argv: str, check: bool = False) -> str | None:
        raise AssertionError(f"ran {argv}: a network never joined has nothing on the host")

    monkeypatch.setattr(attachments, "_run_tool", no_tool)
    await manager.create_network("quiet", subnet="10.71.0.0/24")
    await manager.remove_network("quiet")
    assert [n.name for n in (await manager.list_networks())[0]] == []


@pytest.mark.parametrize(("parse", "value"), [
    ("parse_dns", "fe80::1%\nnameserver 6.6.6.6"),
    ("parse_add_host", "x:fe80::1%\n6.6.6.6 evil"),
    ("parse_add_host", "db\n:1.2.3.4"),
    ("parse_publish", "[fe80::1%\nx]:8080:80"),
])
def test_dock_reads_addresses_and_names_as_the_daemon_does(parse: str, value: str) -> None:
    """dock's flags are read with the daemon's one address parser (dockyard_common/ipaddrs.py):
    no scope, no name with a newline, so no line of the caller's reaches a container's files."""
    import dock.network

    with pytest.raises(InvalidArgument):
        getattr(dock.network, parse)(value)


def test_dock_refuses_more_ports_than_a_container_publishes_in_words() -> None:
    """`-p 1-65535:1-65535` met the 4096-byte label rule first ("label key and value greater than
    maximum size"); dock now says the daemon's own limit."""
    from dock.network import network_options
    from dockyard_common.netlabels import MAX_PORTS

    with pytest.raises(InvalidArgument, match=f"65535 published ports: a container publishes at most {MAX_PORTS}"):
        network_options(publish=["1-65535:1-65535"]).labels()
