"""The network labels `dock run` sets and the daemon reads at task create; the spec edit that
puts a task into its network namespace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from supervisor.network import labels as L
from supervisor.network.attachments import PortMapping
from supervisor.network.wiring import FILE_MOUNT_OPTIONS, _use_netns


def parse(**values: Any) -> L.NetworkRequest | None:
    return L.parse({f"{L.PREFIX}{k.replace('_', '-')}": v if isinstance(v, str) else json.dumps(v)
                    for k, v in values.items()})


def test_no_labels_is_containerds_path() -> None:
    assert L.parse({}) is None
    assert L.parse({"app": "web", "dockyard.networkish": "x"}) is None


def test_defaults_and_bridge_alias() -> None:
    assert parse(ports=[]) == L.NetworkRequest(networks=("dockyard",))
    req = parse(networks=["bridge", "back"], dns=["192.0.2.53"], dns_search=["example.org"],
                dns_options=["ndots:2"], extra_hosts=["db:10.1.2.3"],
                ports=[{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80, "protocol": "tcp"},
                       {"container_port": 53, "protocol": "udp"}])
    assert req == L.NetworkRequest(
        networks=("dockyard", "back"), dns=("192.0.2.53",), dns_search=("example.org",), dns_options=("ndots:2",),
        extra_hosts=("db:10.1.2.3",),
        ports=(PortMapping(80, 8080, "tcp", "127.0.0.1"), PortMapping(53, 0, "udp", "")))


def test_joining_another_container() -> None:
    assert parse(container="web") == L.NetworkRequest(networks=(), join="web")
    assert parse(container='"web"') == L.NetworkRequest(networks=(), join="web")  # JSON or bare
    with pytest.raises(InvalidArgument, match=r"cannot also have dockyard\.network/ports"):
        parse(container="web", ports=[{"container_port": 80}])
    with pytest.raises(InvalidArgument, match="container id"):
        parse(container="bad id!")


@pytest.mark.parametrize(("values", "words"), [
    ({"ports": "{not json"}, "dockyard.network/ports: not valid JSON"),
    ({"ports": {"container_port": 80}}, "JSON list of port mappings"),
    ({"ports": [{"container_port": 0}]}, "container_port must be an integer 1-65535, not 0"),
    ({"ports": [{"container_port": True}]}, "container_port must be an integer"),
    ({"ports": [{"container_port": 80, "host_port": 70000}]}, "host_port must be an integer 0-65535"),
    ({"ports": [{"host_port": 80}]}, "container_port is missing"),
    ({"ports": [{"container_port": 80, "proto": "tcp"}]}, "unknown key 'proto'"),
    ({"ports": [{"container_port": 80, "protocol": "icmp"}]}, "protocol must be tcp or udp"),
    ({"ports": [{"container_port": 80, "host_ip": "localhost"}]}, "host_ip 'localhost' is not an IP address"),
    ({"ports": ["8080:80/sctp"]}, "ports[0] '8080:80/sctp': protocol 'sctp' is not tcp or udp"),
    ({"ports": ["80", "9" * 5000]}, "ports[1] '999 ... (5000 characters): container port '999"),
    ({"ports": ["[fe80::1%eth0]:8080:80"]}, "a scope such as %eth0 is not allowed"),
    ({"ports": ["8000-8001:80-82"]}, "differ in length"),
    ({"ports": [80]}, "ports[0]: must be `-p` text or an object"),
    ({"ports": ["1-65535"]}, "more than 256 published ports"),
    ({"networks": []}, "name at least one network"),
    ({"networks": '"bridge"'}, "JSON list of non-empty strings"),
    ({"networks": ["host"]}, "'host' is not a network to join"),
    ({"networks": ["a", "a"]}, "listed twice"),
    ({"networks": ["bridge", "dockyard"]}, "listed twice"),
    ({"dns": ["not-an-ip"]}, "'not-an-ip' is not an IP address"),
    ({"extra_hosts": ["nocolon"]}, "'nocolon' is not name:ip"),
    ({"bogus": "[]"}, "unknown network label 'dockyard.network/bogus'"),
])
def test_bad_labels_are_named(values: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(**values)
    first, _, last = words.partition(" ... ")
    assert first in str(info.value) and last in str(info.value)


def test_ports_as_p_texts() -> None:
    """What dock and the CRI write now: Docker's `-p` texts, a run of ports in one; old objects
    still read, in the same list."""
    req = parse(ports=["127.0.0.1:8080-8081:80-81/tcp", "53/udp", "[::1]::9000/tcp",
                       {"container_port": 22, "host_port": 2222}, "7000-7010:70"])
    assert req is not None and req.ports == (
        PortMapping(80, 8080, "tcp", "127.0.0.1"), PortMapping(81, 8081, "tcp", "127.0.0.1"),
        PortMapping(53, 0, "udp", ""), PortMapping(9000, 0, "tcp", "::1"), PortMapping(22, 2222, "tcp", ""),
        PortMapping(70, 7000, "tcp", "", 7010))


def test_the_spec_names_the_netns_and_binds_the_files() -> None:
    spec: dict[str, Any] = {"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
                            "mounts": [{"destination": "/etc//hosts/", "type": "bind", "source": "/mine"}]}
    _use_netns(spec, Path("/run/dockyard/netns/x"), Path("/s/resolv.conf"), Path("/s/hosts"))
    assert spec["linux"]["namespaces"] == [{"type": "pid"}, {"type": "network", "path": "/run/dockyard/netns/x"}]
    # the spec's own /etc/hosts mount wins; resolv.conf is added read-only
    assert spec["mounts"] == [{"destination": "/etc//hosts/", "type": "bind", "source": "/mine"},
                              {"destination": "/etc/resolv.conf", "type": "bind", "source": "/s/resolv.conf",
                               "options": FILE_MOUNT_OPTIONS}]
    host_net: dict[str, Any] = {"linux": {"namespaces": [{"type": "pid"}]}}  # no network namespace of its own
    _use_netns(host_net, Path("/n"), None, None)
    assert host_net == {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/n"}]}, "mounts": []}


def test_a_daemon_without_a_default_network_attaches_nothing_for_bridge() -> None:
    # dockyardd --default-network none (dockerd's -b none): "bridge" means no network at all,
    # named networks still attach, and what only a network can carry is refused, not dropped
    bridge = {L.NETWORKS: '["bridge"]'}
    assert L.parse(bridge, "none") is None
    assert L.parse({L.NETWORKS: '["web", "bridge"]'}, "none") == L.NetworkRequest(networks=("web",))
    assert L.parse(bridge, "corp") == L.NetworkRequest(networks=("corp",))
    for key, value in ((L.PORTS, '[{"host_ip": "", "host_port": 0, "container_port": 80, "protocol": "tcp"}]'),
                       (L.DNS, '["192.0.2.53"]'), (L.EXTRA_HOSTS, '["db:10.1.2.3"]')):
        with pytest.raises(FailedPrecondition, match=f"label {key}: this daemon has no default network"):
            L.parse({**bridge, key: value}, "none")
