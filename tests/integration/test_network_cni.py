"""Container networking with Debian's real CNI plugins, each test inside its own "host" netns.

The code under test runs in a driver process entered into a network namespace the test pins in a
temp dir (tests/integration/netcni_driver.py), so the machine's links and firewall are never
touched; a module fixture checks the host's `iptables-save` is the same before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.network import netns
from supervisor.network.attachments import cni_container_id
from tests.integration.netcni_driver import HostNamespace, server_in

pytestmark = pytest.mark.root

NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("iptables-save") \
        or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, iptables and busybox-static (scripts/install)",
                allow_module_level=True)


def _host_firewall() -> str:
    out = []
    for tool in ("iptables-save", "ip6tables-save"):
        r = subprocess.run([tool], capture_output=True, text=True, check=True)
        out += [line for line in r.stdout.splitlines() if not line.startswith("#")]
    # counters move with the host's own traffic; the rules are what must not change
    return "\n".join(line.split(" [")[0] for line in out)


@pytest.fixture(scope="module", autouse=True)
def host_firewall_untouched() -> Iterator[None]:
    before = _host_firewall()
    yield
    assert _host_firewall() == before, "the host's firewall changed"


@pytest.fixture
def host() -> Iterator[HostNamespace]:
    h = HostNamespace()
    try:
        yield h
    finally:
        h.close()


def ip_of(att: dict) -> str:
    return str(att["interfaces"][0]["addresses"][0].split("/")[0])


def empty(snap: dict) -> bool:
    return not (snap["ipam"] or snap["netns"] or snap["records"] or snap["files"]) and \
        not any(x.startswith("veth") for x in snap["links"])


TCP_ECHO = textwrap.dedent("""
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080))
    s.listen(); print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(b"echo:" + c.recv(100)); c.close()
""")
UDP_ECHO = textwrap.dedent("""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353)); print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(100); s.sendto(b"echo:" + data, peer)
""")


def client(host: HostNamespace, proto: str, port: int, addr: str = "127.0.0.1") -> str:
    code = textwrap.dedent(f"""
        import socket, sys
        kind = socket.SOCK_STREAM if {proto!r} == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind); s.settimeout(5)
        try:
            if kind == socket.SOCK_STREAM:
                s.connect(({addr!r}, {port})); s.sendall(b"hi"); print(s.recv(100).decode())
            else:
                for _ in range(5):  # a datagram may race the DNAT rule's first use; retry a few
                    s.sendto(b"hi", ({addr!r}, {port}))
                    try:
                        print(s.recv(100).decode()); break
                    except socket.timeout:
                        continue
        except OSError as e:
            print("error", e)
    """)
    return host.sh("python3", "-c", code, check=False).stdout.strip()


def test_default_network_two_containers_ping(host: HostNamespace) -> None:
    assert host.ok("ls")["networks"] == []
    a = host.ok("attach", ns="t", id="a", hostname="alpha", dns=["192.0.2.53"], extra_hosts=["db:10.1.2.3"])
    b = host.ok("attach", ns="t", id="b", hostname="beta")
    net = host.ok("inspect", name="dockyard")
    assert net["subnets"] == ["10.88.0.0/16"]  # made on first use
    assert sorted(map(tuple, net["users"])) == [("t", "a"), ("t", "b")]
    assert a["interfaces"][0]["ifname"] == "eth0" and a["interfaces"][0]["gateway"] == "10.88.0.1"
    assert host.ping(a["netns"], ip_of(b)) and host.ping(b["netns"], ip_of(a))
    assert host.ping(a["netns"], "10.88.0.1") and host.ping(a["netns"], "127.0.0.1")  # lo is up
    assert Path(a["resolv_conf"]).read_text().splitlines()[1:] == ["nameserver 192.0.2.53"]
    hosts = Path(a["hosts"]).read_text()
    assert f"{ip_of(a)}\talpha" in hosts and "10.1.2.3\tdb" in hosts and "127.0.0.1\tlocalhost" in hosts
    # the counters come from inside the container's namespace: the pings above went through eth0
    counters = host.ok("counters", netns=a["netns"])
    assert set(counters) == {"eth0"} and counters["eth0"]["rx_bytes"] > 0 and counters["eth0"]["tx_bytes"] > 0
    host.ok("detach", ns="t", id="a")
    host.ok("detach", ns="t", id="b")
    host.ok("detach", ns="t", id="b")  # idempotent
    assert empty(host.snapshot())


def test_default_subnet_avoids_the_hosts_routes(host: HostNamespace) -> None:
    host.sh("ip", "link", "add", "dy-test0", "type", "veth", "peer", "name", "dy-test1")
    host.sh("ip", "addr", "add", "10.88.7.1/16", "dev", "dy-test0")
    host.sh("ip", "link", "set", "dy-test0", "up")
    host.sh("ip", "link", "set", "dy-test1", "up")
    a = host.ok("attach", ns="t", id="a")
    assert host.ok("inspect", name="dockyard")["subnets"] == ["10.89.0.0/16"]
    assert ip_of(a).startswith("10.89.")
    r = host.call("create", name="clash", subnet="10.88.128.0/24")
    assert r["error"] == "failed precondition" and "10.88.0.0/16" in r["message"] and "dy-test0" in r["message"]
    host.ok("detach", ns="t", id="a")


def test_two_networks_cannot_reach_each_other(host: HostNamespace) -> None:
    n1 = host.ok("create", name="front", labels={"tier": "web"})
    n2 = host.ok("create", name="back")
    assert n1["subnets"] != n2["subnets"] and n1["labels"] == {"tier": "web"} and n1["bridge"] != n2["bridge"]
    a = host.ok("attach", ns="t", id="a", networks=["front"])
    a2 = host.ok("attach", ns="t", id="a2", networks=["front"])
    b = host.ok("attach", ns="t", id="b", networks=["back"])
    assert host.ping(a["netns"], ip_of(a2))
    assert not host.ping(a["netns"], ip_of(b)) and not host.ping(b["netns"], ip_of(a))
    # a container on both networks gets one interface on each, in the order asked
    both = host.ok("attach", ns="t", id="both", networks=["back", "front"])
    assert [i["ifname"] for i in both["interfaces"]] == ["eth0", "eth1"]
    assert host.ping(both["netns"], ip_of(a)) and host.ping(both["netns"], ip_of(b))
    for cid in ("a", "a2", "b", "both"):
        host.ok("detach", ns="t", id=cid)
    assert empty(host.snapshot())


def test_internal_network_has_no_route_out(host: HostNamespace) -> None:
    host.ok("create", name="vault", internal=True, subnet="10.123.0.0/24")
    a = host.ok("attach", ns="t", id="a", networks=["vault"])
    b = host.ok("attach", ns="t", id="b", networks=["vault"])
    routes = host.in_container(a["netns"], "ip", "-j", "route").stdout
    assert all(r["dst"] != "default" for r in json.loads(routes)), routes
    assert host.ping(a["netns"], ip_of(b))
    out = host.in_container(a["netns"], "/bin/busybox", "ping", "-c", "1", "-W", "1", "192.0.2.1")
    assert out.returncode != 0 and "unreachable" in (out.stdout + out.stderr).lower()
    # nor from the host side: the bridge has no address, so the host cannot reach in either
    assert "10.123.0.1" not in host.sh("ip", "-br", "addr").stdout
    host.ok("detach", ns="t", id="a")
    host.ok("detach", ns="t", id="b")


def test_published_ports_tcp_and_udp_then_freed(host: HostNamespace) -> None:
    att = host.ok("attach", ns="t", id="web", ports=[
        {"container_port": 8080, "host_port": 0, "protocol": "tcp", "host_ip": "127.0.0.1"},
        {"container_port": 5353, "host_port": 0, "protocol": "udp"}])
    tcp_port, udp_port = att["ports"][0]["host_port"], att["ports"][1]["host_port"]
    assert tcp_port > 0 and udp_port > 0
    with server_in(att["netns"], TCP_ECHO), server_in(att["netns"], UDP_ECHO):
        assert client(host, "tcp", tcp_port) == "echo:hi"
        assert client(host, "udp", udp_port) == "echo:hi"
    host.ok("detach", ns="t", id="web")
    nat = host.sh("iptables-save", "-t", "nat").stdout
    # The rule's form, not the bare digits: a chain's hex name may hold them.
    assert f"--dport {tcp_port}" not in nat and f"--dport {udp_port}" not in nat
    # free again: the same explicit host port is accepted by the next container
    again = host.ok("attach", ns="t", id="web2", ports=[
        {"container_port": 8080, "host_port": tcp_port, "host_ip": "127.0.0.1"}])
    assert again["ports"][0]["host_port"] == tcp_port
    host.ok("detach", ns="t", id="web2")


def test_twenty_cycles_leave_nothing_behind(host: HostNamespace) -> None:
    ports = [{"container_port": 80, "host_port": 0}, {"container_port": 53, "host_port": 0, "protocol": "udp"}]
    host.ok("attach", ns="t", id="warm", ports=ports)  # the plugins' shared chains and the bridge stay
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    assert empty(baseline)
    for i in range(20):
        host.ok("attach", ns="t", id=f"c{i}", ports=ports)
        host.ok("detach", ns="t", id=f"c{i}")
    after = host.snapshot()
    assert after == baseline
    assert {t: len(r) for t, r in after["rules"].items()} == {t: len(r) for t, r in baseline["rules"].items()}


def test_crash_after_attach_is_cleaned_by_reconcile(host: HostNamespace) -> None:
    host.ok("create", name="other")
    host.ok("attach", ns="t", id="warm", networks=["dockyard", "other"], ports=[{"container_port": 80}])
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    live = host.ok("attach", ns="t", id="live")
    assert host.call("attach_then_crash", ns="t", id="gone", networks=["dockyard", "other"],
                     ports=[{"container_port": 80}]) == {"exited": True}
    left = host.snapshot()
    assert len(left["records"]) == 2 and len(left["netns"]) == 2 and len(left["ipam"]) == 3
    report = host.ok("reconcile", live=[["t", "live"]])
    assert report["released"] == ["t/gone"] and report["checked"] == 1 and report["problems"] == []
    assert host.ping(live["netns"], "10.88.0.1")  # the live one is untouched
    host.ok("detach", ns="t", id="live")
    assert host.snapshot() == baseline


def test_crash_during_add_is_cleaned_by_reconcile(host: HostNamespace) -> None:
    host.ok("create", name="other")
    host.ok("attach", ns="t", id="warm", networks=["dockyard", "other"])
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    assert host.call("crash_during_add", ns="t", id="half", networks=["dockyard", "other"]) == {"exited": True}
    left = host.snapshot()
    assert left["records"] and left["netns"] and left["ipam"]
    # a stray netns file of no record (a crash between create and record) and stray files go too
    report = host.ok("reconcile", live=[])
    assert report["released"] == ["t/half"] and report["problems"] == []
    assert host.snapshot() == baseline


def test_orphan_allocation_without_record_is_released(host: HostNamespace) -> None:
    host.ok("attach", ns="t", id="warm", ports=[{"container_port": 80}])
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    host.ok("attach", ns="t", id="x-1", ports=[{"container_port": 80}])
    for rec in host.snapshot()["records"]:  # as if the record were lost: only the plugins' state is left
        (host.base / "root" / "networks" / "attachments" / rec).unlink()
    report = host.ok("reconcile", live=[])
    assert len(report["released_addresses"]) == 1 and len(report["removed_netns"]) == 1
    assert host.snapshot() == baseline


def test_taken_host_port_is_refused_and_nothing_is_left(host: HostNamespace) -> None:
    host.ok("attach", ns="t", id="warm", ports=[{"container_port": 80}])
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    with subprocess.Popen(["nsenter", f"--net={host.file}", "python3", "-c", textwrap.dedent("""
        import socket, sys
        s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(); print(s.getsockname()[1], flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as listener:
        try:
            assert listener.stdout is not None
            port = int(listener.stdout.readline())
            r = host.call("attach", ns="t", id="a", ports=[{"container_port": 80, "host_port": port}])
            assert r["error"] == "failed precondition" and f"0.0.0.0:{port}/tcp is already in use" in r["message"]
            assert host.snapshot() == baseline
        finally:
            listener.kill()
    # published by another container: refused too, naming it
    host.ok("attach", ns="t", id="a", ports=[{"container_port": 80, "host_port": port}])
    r = host.call("attach", ns="t", id="b", ports=[{"container_port": 81, "host_port": port}])
    assert r["error"] == "failed precondition" and "published by container t/a" in r["message"]
    host.ok("detach", ns="t", id="a")
    assert host.snapshot() == baseline


def test_bad_networks_give_clear_errors(host: HostNamespace) -> None:
    for subnet, words in [("10.0.0.1/16", "has host bits set"), ("300.1.1.0/24", "does not appear"),
                          ("10.50.0.0", "prefix length"), ("10.50.0.0/31", "too small")]:
        r = host.call("create", name="bad", subnet=subnet)
        assert r["error"] == "invalid argument" and subnet in r["message"] and words in r["message"], r
    r = host.call("create", name="bad", subnet="10.50.0.0/24", gateway="10.51.0.1")
    assert r["error"] == "invalid argument" and "not a host address of subnet 10.50.0.0/24" in r["message"]
    r = host.call("create", name="bad name!")
    assert r["error"] == "invalid argument" and "invalid network name" in r["message"]
    host.ok("create", name="one", subnet="10.50.0.0/16")
    r = host.call("create", name="two", subnet="10.50.3.0/24")
    assert r["error"] == "failed precondition" and "overlaps subnet 10.50.0.0/16 of network 'one'" in r["message"]
    assert host.call("create", name="one")["error"] == "already exists"
    r = host.call("attach", ns="t", id="a", networks=["nope"])
    assert r["error"] == "not found" and "nope" in r["message"]
    r = host.call("attach", ns="t", id="a", ports=[{"container_port": 70000}])
    assert r["error"] == "invalid argument" and "70000" in r["message"]
    r = host.call("attach", ns="t", id="a", dns=["not-an-ip"])
    assert r["error"] == "invalid argument" and "not-an-ip" in r["message"]
    assert host.ok("ls")["networks"] == ["one"]
    assert empty(host.snapshot())


def test_rm_refused_in_use_and_prune(host: HostNamespace) -> None:
    host.ok("create", name="used")
    host.ok("create", name="idle")
    host.ok("attach", ns="t", id="a", networks=["used"])
    r = host.call("rm", name="used")
    assert r["error"] == "failed precondition" and "in use by 1 container(s): t/a" in r["message"]
    assert host.ok("prune")["removed"] == ["idle"]
    host.ok("detach", ns="t", id="a")
    host.ok("rm", name="used")
    assert host.ok("ls")["networks"] == []
    assert host.call("rm", name="used")["error"] == "not found"


def test_malformed_user_conflist_names_the_file(host: HostNamespace) -> None:
    netd = host.base / "net.d"
    netd.mkdir()
    (netd / "broken.conflist").write_text('{"cniVersion": "1.0.0", "name": "broken", "plugins": [')
    (netd / "mine.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "mine", "plugins": [
            {"type": "bridge", "bridge": "mine0", "isGateway": True,
             "ipam": {"type": "host-local", "subnet": "10.77.0.0/24",
                      "dataDir": str(host.base / "root" / "networks" / "ipam")}},
            {"type": "loopback"}]}))
    ls = host.ok("ls")
    assert ls["networks"] == ["mine"] and len(ls["problems"]) == 1
    assert str(netd / "broken.conflist") in ls["problems"][0] and "not valid JSON" in ls["problems"][0]
    r = host.call("attach", ns="t", id="a", networks=["broken"])
    assert r["error"] == "invalid argument" and str(netd / "broken.conflist") in r["message"]
    a = host.ok("attach", ns="t", id="b", networks=["mine"])
    assert ip_of(a).startswith("10.77.0.")
    host.ok("detach", ns="t", id="b")
    # a user network is not ours to prune
    assert host.ok("prune")["removed"] == []
    assert empty(host.snapshot())


def _user_net(host: HostNamespace, name: str, extra: dict) -> None:
    netd = host.base / "net.d"
    netd.mkdir(exist_ok=True)
    (netd / f"{name}.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": f"{name}0", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.66.0.0/24"}]],
                      "dataDir": str(host.base / "root" / "networks" / "ipam")}},
            extra]}))


def test_missing_plugin_is_a_clear_error_and_nothing_is_left(host: HostNamespace) -> None:
    _user_net(host, "lacking", {"type": "no-such-plugin"})
    r = host.call("attach", ns="t", id="a", networks=["lacking"])
    assert r["error"] == "failed precondition"
    assert "'no-such-plugin' not found in /usr/lib/cni" in r["message"]
    assert "containernetworking-plugins" in r["message"]
    snap = host.snapshot()
    assert empty(snap), snap  # the bridge's ADD was undone by its DEL: address released, veth gone


def test_failing_plugin_shows_its_error_and_nothing_is_left(host: HostNamespace) -> None:
    plugins = host.base / "plugins"
    plugins.mkdir()
    (plugins / "failer").write_text(textwrap.dedent("""\
        #!/bin/sh
        cat >/dev/null
        if [ "$CNI_COMMAND" = ADD ]; then
          echo '{"cniVersion": "1.0.0", "code": 7, "msg": "cannot frobnicate", "details": "quota 3 reached"}'
          exit 1
        fi
        exit 0
    """))
    (plugins / "crasher").write_text("#!/bin/sh\ncat >/dev/null\necho 'segfault in frob' >&2\nexit 3\n")
    (plugins / "sleeper").write_text("#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && exec sleep 60\n"
                                     "exit 0\n")
    for p in plugins.iterdir():
        p.chmod(0o755)
    host.ok("config", plugin_dirs=[str(plugins), "/usr/lib/cni"], timeout=3)
    _user_net(host, "failing", {"type": "failer"})
    r = host.call("attach", ns="t", id="a", networks=["failing"])
    assert r["error"] == "failed precondition"
    assert r["message"].startswith("network 'failing': plugin 'failer' ADD failed: cannot frobnicate: "
                                   "quota 3 reached (CNI error code 7)"), r
    assert empty(host.snapshot())
    _user_net(host, "crashing", {"type": "crasher"})
    r = host.call("attach", ns="t", id="a", networks=["crashing"])
    assert r["error"] == "failed precondition"
    assert "plugin 'crasher' ADD failed with exit status 3: segfault in frob" in r["message"], r
    _user_net(host, "slow", {"type": "sleeper"})
    r = host.call("attach", ns="t", id="a", networks=["slow"])
    assert r["error"] == "context deadline exceeded" and "did not finish within 3s" in r["message"], r
    assert empty(host.snapshot())


def test_check_reports_a_broken_attachment(host: HostNamespace) -> None:
    a = host.ok("attach", ns="t", id="a")
    host.ok("check", ns="t", id="a")
    host.in_container(a["netns"], "ip", "link", "del", "eth0", check=True)
    r = host.call("check", ns="t", id="a")
    assert r["error"] == "failed precondition" and "CHECK" in r["message"], r
    report = host.ok("reconcile", live=[["t", "a"]])
    assert report["checked"] == 1 and len(report["problems"]) == 1 and "t/a" in report["problems"][0]
    host.ok("detach", ns="t", id="a")
    assert empty(host.snapshot())


def test_concurrent_attach_and_detach(host: HostNamespace) -> None:
    host.ok("create", name="second")
    ids = [f"p{i}" for i in range(8)]
    args = {"networks": ["dockyard", "second"], "ports": [{"container_port": 80}]}
    atts = host.ok("attach_many", ns="t", ids=ids, args=args)["attachments"]
    addrs = [ip_of(a) for a in atts]
    ports = [a["ports"][0]["host_port"] for a in atts]
    assert len(set(addrs)) == 8 and len(set(ports)) == 8
    assert host.ping(atts[0]["netns"], addrs[-1]) and host.ping(atts[-1]["netns"], addrs[0])
    host.ok("detach_many", ns="t", ids=ids)
    snap = host.snapshot()
    # only the plugins' shared chains stay: no per-container DNAT chain, no rule naming a container
    assert empty(snap) and not [r for r in snap["rules"]["nat"] if "CNI-DN-" in r or "dockyard-" in r], snap


def test_failed_detach_keeps_the_record_and_reconcile_retries(host: HostNamespace) -> None:
    plugins = host.base / "plugins"
    plugins.mkdir()
    flag = host.base / "fail-del"
    (plugins / "flaky").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        cat >/dev/null
        if [ "$CNI_COMMAND" = DEL ] && [ -e {flag} ]; then
          echo '{{"cniVersion": "1.0.0", "code": 11, "msg": "resource busy"}}'
          exit 1
        fi
        [ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion": "1.0.0"}}'
        exit 0
    """))
    (plugins / "flaky").chmod(0o755)
    host.ok("config", plugin_dirs=[str(plugins), "/usr/lib/cni"])
    _user_net(host, "shaky", {"type": "flaky"})
    a = host.ok("attach", ns="t", id="a", networks=["shaky"])
    flag.touch()
    r = host.call("detach", ns="t", id="a")
    assert r["error"] == "failed precondition" and "resource busy (CNI error code 11)" in r["message"], r
    snap = host.snapshot()
    # the other plugins' DEL ran (partial cleanup is still cleanup); record and netns stay for the retry
    assert snap["records"] and snap["netns"] == [Path(a["netns"]).name] and not snap["ipam"]
    flag.unlink()
    report = host.ok("reconcile", live=[])
    assert report["released"] == ["t/a"] and report["problems"] == []
    assert empty(host.snapshot())


def test_ids_with_dashes_get_their_own_netns(host: HostNamespace) -> None:
    # ("a-b", "c") and ("a", "b-c") once shared the netns file "a-b-c": the second attach's
    # failure tore down the first's netns, and a detach of either removed the other's
    one = host.ok("attach", ns="a-b", id="c")
    two = host.ok("attach", ns="a", id="b-c")
    assert one["netns"] != two["netns"] and ip_of(one) != ip_of(two)
    assert host.ping(one["netns"], ip_of(two)) and host.ping(two["netns"], ip_of(one))
    host.ok("detach", ns="a-b", id="c")
    assert host.ping(two["netns"], "10.88.0.1")  # untouched by the other's detach
    host.ok("detach", ns="a-b", id="c")  # no record now: must not remove the other's netns either
    assert host.ping(two["netns"], "10.88.0.1")
    host.ok("check", ns="a", id="b-c")
    again = host.ok("attach", ns="a-b", id="c")
    assert again["netns"] == one["netns"] and host.ping(again["netns"], ip_of(two))
    host.ok("detach", ns="a", id="b-c")
    assert host.ping(again["netns"], "10.88.0.1")
    host.ok("detach", ns="a-b", id="c")
    assert empty(host.snapshot())


def test_attach_never_tears_down_a_netns_it_did_not_make(host: HostNamespace) -> None:
    host.ok("attach", ns="t", id="warm")
    host.ok("detach", ns="t", id="warm")
    baseline = host.snapshot()
    # a netns file already at the container's path with no record (a record lost in a crash)
    stray = netns.create(host.base / "state" / "netns" / cni_container_id("t", "x"))
    try:
        r = host.call("attach", ns="t", id="x")
        assert r["error"] == "already exists" and str(stray) in r["message"], r
        assert netns.is_mounted(stray)  # left as it was: no DEL ran in it, nothing unmounted it
        snap = host.snapshot()
        assert snap["records"] == [] and snap["ipam"] == [] and snap["netns"] == [stray.name]
    finally:
        netns.remove(stray)
    assert host.snapshot() == baseline


def test_attach_detach_attach_on_one_container_serialise(host: HostNamespace) -> None:
    seen = host.ok("lock_race", ns="t", id="racy")
    # B (detach) ends before C (attach) begins its work, D (detach) waits for C: one at a time
    assert seen["order"] == ["B", "C", "D"] and not seen["overlap"] and seen["errors"] == [], seen
    # C's ADDs once each, none repeated or interleaved (lo is brought up with the netns, no plugin)
    assert seen["adds"] == ["eth0"]
    assert not seen["attached"] and seen["locks_left"] == 0  # consistent, and no lock kept
    assert empty(host.snapshot())


def test_counters_through_a_pid_match_the_netns(host: HostNamespace) -> None:
    a = host.ok("attach", ns="t", id="a")
    with server_in(a["netns"], TCP_ECHO) as proc:
        assert host.ping(a["netns"], "10.88.0.1")
        by_netns = host.ok("counters", netns=a["netns"])
        by_pid = host.ok("counters", netns=a["netns"], pid=proc.pid)
        assert set(by_pid) == set(by_netns) == {"eth0"}
        # the same interface: counters only grow between the two reads
        assert 0 < by_netns["eth0"]["rx_bytes"] <= by_pid["eth0"]["rx_bytes"]
        assert 0 < by_netns["eth0"]["tx_packets"] <= by_pid["eth0"]["tx_packets"]
        # a pid outside the container (the driver's own) is not trusted: the netns is read instead
        driver = host.proc.pid if host.proc is not None else 0
        assert set(host.ok("counters", netns=a["netns"], pid=driver)) == {"eth0"}
    host.ok("detach", ns="t", id="a")
