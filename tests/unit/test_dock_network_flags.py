"""dock run's network flags (--net, -p, --dns, --add-host, --hostname) → the container labels the
daemon reads (the contract in dock/network.py), the errors for bad values, and the Networks
service's conversions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dock.commands.network import parse_port_arg
from dock.commands.run import request_from_args
from dock.network import (
    CONTAINER_LABEL,
    DNS_LABEL,
    DNS_OPTIONS_LABEL,
    DNS_SEARCH_LABEL,
    EXTRA_HOSTS_LABEL,
    NETWORKS_LABEL,
    PORTS_LABEL,
    NetworkOptions,
    PortBinding,
    check_network_name,
    network_options,
    parse_add_host,
    parse_publish,
    ports_text,
)
from dock.parser import build_parser
from dockyard_common.errors import InvalidArgument
from supervisor.network.attachments import Attachment, Interface, PortMapping
from supervisor.network.networks import build_conflist, load
from supervisor.services.network import attachment_to_pb, network_to_pb

REPO = Path(__file__).resolve().parents[2]


def labels_of(*argv: str) -> dict[str, str]:
    args = build_parser(["run", *argv, "--name", "c1", "busybox"]).parse_args(["run", *argv, "--name", "c1", "busybox"])
    req = request_from_args(args)
    assert req.network is not None
    return req.network.labels()


# -- -p ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("80", [PortBinding(80, 0, "tcp", "")]),
    ("8080:80", [PortBinding(80, 8080, "tcp", "")]),
    ("18080:80/tcp", [PortBinding(80, 18080, "tcp", "")]),
    ("53:53/udp", [PortBinding(53, 53, "udp", "")]),
    ("53/UDP", [PortBinding(53, 0, "udp", "")]),
    (":80", [PortBinding(80, 0, "tcp", "")]),
    ("127.0.0.1:8080:80", [PortBinding(80, 8080, "tcp", "127.0.0.1")]),
    ("127.0.0.1::80", [PortBinding(80, 0, "tcp", "127.0.0.1")]),
    ("[::1]:8080:80", [PortBinding(80, 8080, "tcp", "::1")]),
    ("[::1]::80/udp", [PortBinding(80, 0, "udp", "::1")]),
    ("8000-8001:80-81", [PortBinding(80, 8000, "tcp", ""), PortBinding(81, 8001, "tcp", "")]),
    ("80-81", [PortBinding(80, 0, "tcp", ""), PortBinding(81, 0, "tcp", "")]),
])
def test_publish_forms(spec: str, want: list[PortBinding]) -> None:
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec, words", [
    ("0", "out of range"),
    ("65536", "out of range"),
    ("8080:70000", "out of range"),
    ("70000:80", "out of range"),
    ("http", "not a port number"),
    ("-1", "not a port number"),
    ("80/sctp", "not tcp or udp"),
    ("80/", "not tcp or udp"),
    ("80/tcp/udp", "not tcp or udp"),
    ("1.2.3.999:80:80", "not an IP address"),
    ("localhost:8080:80", "not an IP address"),
    ("1:2:3:4", "IPv6 address goes in brackets"),
    ("8080:", "no container port"),
    ("", "no container port"),
    ("8000-8002:80-81", "differ in length"),
    ("81-80", "ends before it starts"),
    ("[::1]80", "[IPv6]:HOST:CONTAINER"),
    ("[::1:80:80", "[IPv6]:HOST:CONTAINER"),
    ("\uff18\uff10", "not a port number"),  # fullwidth digits: isdigit() but not a port
])
def test_bad_publish_is_named(spec: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_publish(spec)
    assert words in err.value.message and f"-p {spec!r}" in err.value.message


def test_port_label_is_the_contract() -> None:
    labels = labels_of("-p", "127.0.0.1:18080:80", "-p", "53/udp")
    assert json.loads(labels[PORTS_LABEL]) == ["127.0.0.1:18080:80", "53/udp"]
    assert json.loads(labels[NETWORKS_LABEL]) == ["bridge"]


def test_a_host_port_published_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="already published by -p '8080:80'"):
        network_options(publish=["8080:80", "8080:81"])
    # the same host port on two protocols, or two free ones, are fine
    assert len(network_options(publish=["8080:80", "8080:80/udp", "80", "81"]).ports) == 4


# -- --net ---------------------------------------------------------------------------------------

def test_bridge_is_the_default() -> None:
    # "bridge": the daemon's default network (`--default-network`), so a daemon run with none
    # attaches nothing
    assert labels_of() == {NETWORKS_LABEL: '["bridge"]'}
    assert labels_of("--net", "bridge") == {NETWORKS_LABEL: '["bridge"]'}
    assert request_from_args(build_parser().parse_args(["run", "--name", "c1", "busybox"])).spec.net == "none"


def test_named_networks_in_order() -> None:
    assert json.loads(labels_of("--net", "web", "--network", "bridge", "--net", "db")[NETWORKS_LABEL]) == \
        ["web", "bridge", "db"]


@pytest.mark.parametrize("mode, spec_net", [("none", "none"), ("host", "host")])
def test_none_and_host_set_no_label(mode: str, spec_net: str) -> None:
    args = build_parser().parse_args(["run", "--net", mode, "--name", "c1", "busybox"])
    req = request_from_args(args)
    assert req.network is not None and req.network.labels() == {}
    assert req.spec.net == spec_net


def test_container_mode_names_the_container() -> None:
    opts = network_options(["container:web"])
    assert opts.labels() == {CONTAINER_LABEL: '"web"'}
    assert opts.spec_net == "none"  # a namespace entry in the spec: the daemon gives it web's path


@pytest.mark.parametrize("nets, words", [
    (["none", "web"], "go alone"),
    (["host", "host"], "go alone"),
    (["container:a", "bridge"], "go alone"),
    (["web", "web"], "given twice"),
    (["bridge", "bridge"], "given twice"),
    (["container:"], "give the id"),
    ([""], "want bridge, none, host"),
])
def test_bad_net(nets: list[str], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        network_options(nets)


@pytest.mark.parametrize("mode", ["none", "host", "container:web"])
def test_publish_dns_add_host_need_an_attached_network(mode: str) -> None:
    for extra in ({"publish": ["80"]}, {"dns": ["1.1.1.1"]}, {"add_hosts": ["db:10.0.0.5"]},
                  {"dns_search": ["example.com"]}, {"dns_options": ["ndots:2"]}):
        with pytest.raises(InvalidArgument, match=f"does not go with --net {mode}"):
            network_options([mode], **extra)  # type: ignore[arg-type]


def test_hostname_does_not_go_with_another_containers_network() -> None:
    with pytest.raises(InvalidArgument, match="--hostname does not go with --net container:web"):
        network_options(["container:web"], hostname="x")
    assert network_options(["host"], hostname="x").mode == "host"


# -- --dns, --add-host ---------------------------------------------------------------------------

def test_dns_labels() -> None:
    labels = labels_of("--dns", "1.1.1.1", "--dns", "2001:4860:4860::8888", "--dns-search", "example.com",
                       "--dns-option", "ndots:2", "--add-host", "db:10.0.0.5", "--add-host", "v6=::1")
    assert json.loads(labels[DNS_LABEL]) == ["1.1.1.1", "2001:4860:4860::8888"]
    assert json.loads(labels[DNS_SEARCH_LABEL]) == ["example.com"]
    assert json.loads(labels[DNS_OPTIONS_LABEL]) == ["ndots:2"]
    assert json.loads(labels[EXTRA_HOSTS_LABEL]) == ["db:10.0.0.5", "v6:::1"]


def test_no_optional_labels_when_not_asked() -> None:
    assert set(NetworkOptions().labels()) == {NETWORKS_LABEL}


@pytest.mark.parametrize("value, words", [
    ("db", "want NAME:IP"), (":10.0.0.5", "want NAME:IP"), ("db:", "want NAME:IP"),
    ("db:10.0.0.256", "not an IP address"), ("db:host-gateway", "not an IP address"),
    ("bad_name:10.0.0.5", "not a host name"), ("-x:10.0.0.5", "not a host name"),
])
def test_bad_add_host(value: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse_add_host(value)


def test_bad_dns() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("invalid --dns 'dns.google': not an IP address")):
        network_options(dns=["dns.google"])
    with pytest.raises(InvalidArgument, match="one word"):
        network_options(dns_search=["a b"])


def test_reserved_network_names() -> None:
    for name in ("bridge", "host", "none", "dockyard"):
        with pytest.raises(InvalidArgument, match="reserved"):
            check_network_name(name)
    check_network_name("web")


# -- dock port's shape ---------------------------------------------------------------------------

def test_docker_shapes() -> None:
    ports = [PortBinding(80, 18080), PortBinding(53, 5353, "udp", "127.0.0.1"), PortBinding(80, 8080, "tcp", "::1")]
    assert ports_text(ports) == "0.0.0.0:18080->80/tcp, 127.0.0.1:5353->53/udp, [::1]:8080->80/tcp"
    assert ports_text([]) == "-"
    # a run is one range, as docker ps shows it
    ranged = [*parse_publish("127.0.0.1:8000-8099:9000-9099"), PortBinding(9100, 8100, "udp", "127.0.0.1"),
              PortBinding(9101, 8200, "tcp", "127.0.0.1")]
    assert ports_text(ranged) == ("127.0.0.1:8000-8099->9000-9099/tcp, 127.0.0.1:8100->9100/udp, "
                                  "127.0.0.1:8200->9101/tcp")
    assert parse_port_arg("80") == (80, "tcp") and parse_port_arg("53/udp") == (53, "udp")
    for bad in ("0", "x", "80/xyz", "99999"):
        with pytest.raises(InvalidArgument):
            parse_port_arg(bad)


# -- the CLI says it in one line -----------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["-p", "99999:80"], "host port 99999 is out of range"),
    (["-p", "80/sctp"], "protocol 'sctp' is not tcp or udp"),
    (["-p", "1.2.3:80:80"], "'1.2.3' is not an IP address"),
    (["--net", "host", "-p", "80"], "does not go with --net host"),
    (["--add-host", "nope"], "want NAME:IP"),
])
def test_cli_errors_are_one_clear_line(argv: list[str], words: str) -> None:
    # no daemon: the flags are refused before anything is asked of one
    res = subprocess.run([sys.executable, "-m", "dock.cli", "--address", "/nonexistent.sock", "run", *argv,
                          "--name", "c1", "busybox", "true"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dock: ") and words in lines[0], res.stderr
    assert "Traceback" not in res.stderr and "InvalidArgument" not in res.stderr and "Error" not in res.stderr


# -- the service's conversions -------------------------------------------------------------------

def test_service_converts_networks_and_attachments(tmp_path: Path) -> None:
    import ipaddress
    doc = build_conflist("web", ipaddress.ip_network("10.100.0.0/24"), "10.100.0.1", "dockyard1", internal=True,
                         labels={"team": "a"}, ipam_dir=tmp_path / "ipam")
    path = tmp_path / "web.conflist"
    path.write_text(json.dumps(doc))
    msg = network_to_pb(load(path))
    assert (msg.name, list(msg.subnets), msg.gateway, msg.bridge, msg.internal, dict(msg.labels), msg.managed) == \
        ("web", ["10.100.0.0/24"], "10.100.0.1", "dockyard1", True, {"team": "a"}, True)
    assert list(msg.plugins) == ["bridge", "portmap", "firewall"] and msg.HasField("created_at")
    att = Attachment("default", "c1", Path("/run/x/netns/n"),
                     [Interface("web", "eth0", ["10.100.0.2/24"], "10.100.0.1", "aa:bb:cc:dd:ee:ff")],
                     [PortMapping(80, 18080, "tcp", "")], None, None)
    a = attachment_to_pb(att)
    assert (a.container_id, a.netns_path) == ("c1", "/run/x/netns/n")
    assert (a.interfaces[0].name, list(a.interfaces[0].addresses), a.interfaces[0].mac) == \
        ("eth0", ["10.100.0.2/24"], "aa:bb:cc:dd:ee:ff")
    assert (a.ports[0].host_port, a.ports[0].container_port, a.ports[0].protocol) == (18080, 80, "tcp")


def test_publish_all_adds_the_exposed_ports_not_published() -> None:
    opts = network_options(publish=["8080:80"], publish_all=True)
    opts.publish_exposed(["80/tcp", "53/udp", "7000-7001", "80/udp"])
    assert [(p.container_port, p.protocol, p.host_port) for p in opts.ports] == [
        (80, "tcp", 8080), (53, "udp", 0), (7000, "tcp", 0), (7001, "tcp", 0), (80, "udp", 0)]
    quiet = network_options(publish=["8080:80"])
    quiet.publish_exposed(["53/udp"])  # no -P: the image's EXPOSE publishes nothing
    assert len(quiet.ports) == 1
    with pytest.raises(InvalidArgument, match="ExposedPorts"):
        network_options(publish_all=True).publish_exposed(["http"])
    with pytest.raises(InvalidArgument, match="does not go with --net host"):
        network_options(["host"], publish_all=True)
