"""Pure logic of supervisor/network: conflists, subnets, resolv.conf/hosts, /proc/net/dev, plugin stdin,
the runner's error reporting (with stand-in plugin scripts that touch no network)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from dockyard_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from dockyard_common.netlabels import DEFAULT_NETWORK
from supervisor.network.cni import CNIPluginError, CNIRunner, PluginNotFound, plugin_config
from supervisor.network.counters import parse_net_dev
from supervisor.network.networks import NetworkStore, Route
from supervisor.network.resolv import hosts_file, resolv_conf


def store(tmp_path: Path, routes: list[str] = ()) -> NetworkStore:  # type: ignore[assignment]
    return NetworkStore(tmp_path / "net.d", tmp_path / "ipam",
                        routes=lambda: [Route(ipaddress.ip_network(r), "eth9") for r in routes])


# ----- networks -----------------------------------------------------------------------------------


def test_default_network_is_made_once_on_a_free_slash16(tmp_path: Path) -> None:
    s = store(tmp_path, ["10.88.0.0/24", "10.89.0.0/16", "192.168.1.0/24"])
    net = s.ensure_default()
    assert net.name == DEFAULT_NETWORK and [str(x) for x in net.subnets] == ["10.90.0.0/16"]
    assert net.gateway == "10.90.0.1" and net.bridge == "dockyard0" and net.managed
    assert s.ensure_default().id == net.id
    doc = json.loads((tmp_path / "net.d" / "dockyard.conflist").read_text())
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "firewall"]
    assert doc["plugins"][0]["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert not list((tmp_path / "net.d").glob(".*"))  # no staging file left


def test_create_picks_subnets_and_bridges_apart(tmp_path: Path) -> None:
    s = store(tmp_path)
    a = s.create("a", labels={"k": "v"})
    b = s.create("b", internal=True)
    assert a.subnets != b.subnets and {a.bridge, b.bridge} == {"dockyard1", "dockyard2"}
    assert a.labels == {"k": "v"} and b.internal
    bridge = b.conflist["plugins"][0]
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False and bridge["ipam"]["routes"] == []
    with pytest.raises(AlreadyExists):
        s.create("a")
    assert [n.name for n in s.list()[0]] == ["a", "b"]
    s.remove("b")
    with pytest.raises(NotFound, match="network 'b'"):
        s.get("b")


@pytest.mark.parametrize("subnet,gateway,message", [
    ("10.1.0.1/16", None, "has host bits set"),
    ("nonsense", None, "invalid subnet 'nonsense'"),
    ("10.1.0.0", None, "prefix length"),
    ("10.1.0.0/24", "10.2.0.1", "not a host address"),
    ("10.1.0.0/24", "10.1.0.0", "not a host address"),
    ("10.1.0.0/24", "10.1.0.255", "not a host address"),
    (None, "10.1.0.1", "--gateway needs --subnet"),
])
def test_invalid_subnets_and_gateways(tmp_path: Path, subnet: str | None, gateway: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store(tmp_path).create("n", subnet=subnet, gateway=gateway)
    assert not (tmp_path / "net.d").exists() or not list((tmp_path / "net.d").iterdir())


def test_overlaps_with_networks_and_host_routes_are_refused(tmp_path: Path) -> None:
    s = store(tmp_path, ["192.168.0.0/16"])
    s.create("a", subnet="10.5.0.0/16")
    with pytest.raises(FailedPrecondition, match=r"overlaps subnet 10\.5\.0\.0/16 of network 'a'"):
        s.create("b", subnet="10.5.1.0/24")
    with pytest.raises(FailedPrecondition, match=r"host's route to 192.168.0.0/16 \(dev eth9\)"):
        s.create("b", subnet="192.168.3.0/24")


def test_no_free_subnet_left(tmp_path: Path) -> None:
    with pytest.raises(ResourceExhausted, match="--subnet"):
        store(tmp_path, ["10.0.0.0/8", "172.16.0.0/12"]).create("n")


def test_malformed_files_are_problems_that_name_the_file(tmp_path: Path) -> None:
    d = tmp_path / "net.d"
    d.mkdir()
    (d / "a.conflist").write_text("{not json")
    (d / "b.conflist").write_text(json.dumps({"name": "b", "plugins": []}))
    (d / "c.conflist").write_text(json.dumps({"name": "c", "plugins": [{"type": "bridge",
                                                                          "ipam": {"subnet": "x"}}]}))
    (d / "d.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "d", "type": "bridge",
                                          "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}))
    (d / "e.conflist").write_text(json.dumps({"name": "d", "plugins": [{"type": "loopback"}]}))
    (d / "notes.txt").write_text("ignored")
    nets, problems = store(tmp_path).list()
    assert [n.name for n in nets] == ["d"] and [str(s) for s in nets[0].subnets] == ["10.9.0.0/24"]
    assert nets[0].bridge == "cni0" and not nets[0].managed
    msgs = {p.path.name: p.message for p in problems}
    assert set(msgs) == {"a.conflist", "b.conflist", "c.conflist", "e.conflist"}
    assert msgs["a.conflist"].startswith(str(d / "a.conflist")) and "not valid JSON" in msgs["a.conflist"]
    assert "non-empty list" in msgs["b.conflist"] and "invalid ipam subnet" in msgs["c.conflist"]
    assert "already defined by" in msgs["e.conflist"]
    with pytest.raises(InvalidArgument, match=r"a\.conflist"):
        store(tmp_path).get("a")
    # a user's overlapping subnet is still respected by automatic allocation
    assert not any(s.overlaps(ipaddress.ip_network("10.9.0.0/24")) for s in store(tmp_path).create("z").subnets)


# ----- resolv.conf and hosts ----------------------------------------------------------------------


def test_resolv_conf_drops_loopback_resolvers() -> None:
    host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch example.com\noptions edns0\n"
    assert resolv_conf(host).splitlines()[1:] == ["nameserver 192.0.2.1", "search example.com", "options edns0"]
    only_local = "nameserver 127.0.0.53\nnameserver ::1\n"
    assert resolv_conf(only_local).splitlines()[1:] == ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    upstream = "nameserver 198.51.100.7\n"
    assert "nameserver 198.51.100.7" in resolv_conf(only_local, upstream_text=upstream)
    assert resolv_conf(host, dns=["1.1.1.1"], search=["a.b"]).splitlines()[1:] == [
        "nameserver 1.1.1.1", "search a.b", "options edns0"]
    with pytest.raises(InvalidArgument, match=r"'dns\.example'"):
        resolv_conf(host, dns=["dns.example"])


def test_hosts_file() -> None:
    text = hosts_file("web", ["10.88.0.2"], ["db:10.0.0.9", "v6:[fd00::1]"])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost" and "10.0.0.9\tdb" in lines and "fd00::1\tv6" in lines
    assert lines[-1] == "10.88.0.2\tweb"
    for bad in ("nocolon", "db:not-ip", ":10.0.0.1"):
        with pytest.raises(InvalidArgument, match="--add-host"):
            hosts_file("web", [], [bad])


def test_parse_net_dev() -> None:
    text = "\n".join([
        "Inter-|   Receive                                                |  Transmit",
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed",
        "    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0 0 0",
        "  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0 0 0",
    ])
    c = parse_net_dev(text)
    assert list(c) == ["eth0"]
    assert (c["eth0"].rx_bytes, c["eth0"].rx_packets, c["eth0"].rx_errors, c["eth0"].rx_dropped) == (5000, 40, 1, 2)
    assert (c["eth0"].tx_bytes, c["eth0"].tx_packets, c["eth0"].tx_errors, c["eth0"].tx_dropped) == (3000, 30, 3, 4)
    assert "lo" in parse_net_dev(text, include_loopback=True)


# ----- the runner ---------------------------------------------------------------------------------


def test_plugin_config_injects_name_version_capabilities_and_prev_result() -> None:
    conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": []}
    rc = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}], "bandwidth": {}}
    conf = plugin_config(conflist, {"type": "portmap", "capabilities": {"portMappings": True}}, rc, {"ips": []})
    assert conf == {"type": "portmap", "capabilities": {"portMappings": True}, "name": "n", "cniVersion": "1.0.0",
                    "runtimeConfig": {"portMappings": rc["portMappings"]}, "prevResult": {"ips": []}}
    assert "runtimeConfig" not in plugin_config(conflist, {"type": "bridge"}, rc, None)
    assert "prevResult" not in plugin_config(conflist, {"type": "bridge"}, None, None)


def _plugin(d: Path, name: str, body: str) -> None:
    p = d / name
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(0o755)


def test_runner_chains_results_in_order_and_deletes_in_reverse(tmp_path: Path) -> None:
    log = tmp_path / "log"
    # each stand-in appends what it saw and passes its prevResult on with its own mark added
    for name in ("one", "two"):
        _plugin(tmp_path, name, f"""\
            in=$(cat)
            echo "{name} $CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $CNI_ARGS $in" >> {log}
            [ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion": "1.0.0", "by": "{name}"}}'
            exit 0
        """)
    runner = CNIRunner([tmp_path])
    conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "one"}, {"type": "two"}]}
    result = asyncio.run(runner.add(conflist, "cid", "/ns", "eth0", args={"A": "1"}))
    assert result == {"cniVersion": "1.0.0", "by": "two"}
    asyncio.run(runner.check({**conflist, "cniVersion": "0.3.1"}, "cid", "/ns", "eth0", result))  # not in 0.3
    asyncio.run(runner.delete(conflist, "cid", "/ns", "eth0", result))
    lines = log.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [["one", "ADD"], ["two", "ADD"], ["two", "DEL"], ["one", "DEL"]]
    assert lines[0].split()[2:6] == ["cid", "eth0", "/ns", "A=1"]
    second_add = json.loads(lines[1].split(" ", 6)[6])
    assert second_add["prevResult"] == {"cniVersion": "1.0.0", "by": "one"} and second_add["name"] == "n"
    assert json.loads(lines[3].split(" ", 6)[6])["prevResult"] == result


def test_runner_reports_plugin_errors_as_sent(tmp_path: Path) -> None:
    _plugin(tmp_path, "cnierr", """\
        cat >/dev/null
        echo '{"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "try later"}'
        exit 1
    """)
    _plugin(tmp_path, "raw", "cat >/dev/null\necho 'plain failure' >&2\nexit 42\n")
    _plugin(tmp_path, "garbage", "cat >/dev/null\necho 'not json'\n")
    _plugin(tmp_path, "slow", "cat >/dev/null\nexec sleep 30\n")
    runner = CNIRunner([tmp_path], timeout=1)

    def add(ptype: str) -> None:
        asyncio.run(runner.add({"name": "n", "plugins": [{"type": ptype}]}, "c", "/ns", "eth0"))

    with pytest.raises(CNIPluginError) as e:
        add("cnierr")
    assert str(e.value) == ("network 'n': plugin 'cnierr' ADD failed: busy: try later (CNI error code 11): "
                            "failed precondition")
    assert (e.value.code, e.value.msg, e.value.details, e.value.exit_status) == (11, "busy", "try later", 1)
    with pytest.raises(CNIPluginError, match="ADD failed with exit status 42: plain failure"):
        add("raw")
    with pytest.raises(CNIPluginError, match="not JSON: not json"):
        add("garbage")
    with pytest.raises(DeadlineExceeded, match="did not finish within 1s"):
        add("slow")
    with pytest.raises(PluginNotFound, match=f"'absent' not found in {tmp_path}"):
        add("absent")
    with pytest.raises(InvalidArgument, match="invalid CNI plugin type"):
        add("../bin/sh")
    # DEL runs every plugin, then raises the first failure; a missing binary is skipped
    with pytest.raises(CNIPluginError, match="raw"):
        asyncio.run(runner.delete({"name": "n", "plugins": [{"type": "raw"}, {"type": "absent"}]},
                                  "c", "", "eth0", None))


def test_the_words_of_net_are_not_network_names(tmp_path: Path) -> None:
    # any API client, not only dock, is refused: `--net bridge|host|none` must keep one meaning
    store = NetworkStore(tmp_path / "net.d", tmp_path / "ipam")
    for name in ("bridge", "host", "none"):
        with pytest.raises(InvalidArgument, match=f"network name '{name}' is reserved"):
            store.create(name, subnet="10.200.0.0/24")
