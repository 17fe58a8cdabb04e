"""Hostile networking inputs against a real dockyardd: what a user of the gRPC API (or of `dock`)
may send that the parsers upstream never see. Each must get a clear status of the right code,
leave nothing behind (firewall rules, host-local reservations, veths, netns files, records,
generated files), and never touch another container's network.

The daemon runs inside a network namespace this module pins (tests/daemon.py `pinned_netns`,
entered with `nsenter --net`), so bridges, veths and rules stay there; traffic goes only to
loopback inside it. Containers come from the real `ctr run --label` with the labels `dock run`
sets (or ones crafted past dock's parser); a module fixture checks the host's firewall is the
same before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.dockyard.network.v1 import network_pb2 as pb
from dockyard_api.dockyard.network.v1 import network_pb2_grpc as pb_grpc
from tests.compat.runtimes import IMAGE, remove_everything
from tests.ctr import ctr, exec_output, ok
from tests.daemon import DaemonProcess, in_netns, pinned_netns, remove_base, start_daemon, stopping_new_zygotes
from tests.dockcli import DockCLI
from tests.images import build_image, oci_archive, tar_tree
from tests.integration.netcni_driver import network_state
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = pytest.mark.root

NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("iptables-save") \
        or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, iptables and busybox-static (scripts/install)",
                allow_module_level=True)

from tests.integration.test_network_cni import _host_firewall  # noqa: E402  (after the skip: it skips alike)

BB = "/bin/busybox"
PORTS = "dockyard.network/ports"
NETWORKS = "dockyard.network/networks"
DNS = "dockyard.network/dns"
DNS_SEARCH = "dockyard.network/dns-search"
EXTRA_HOSTS = "dockyard.network/extra-hosts"
HTTPD = "mkdir /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www"
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"


@dataclass
class Rig:
    ns: Path
    d: DaemonProcess
    tmp: Path

    def sh(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return in_netns(self.ns, *argv, check=check)

    def state(self) -> dict[str, Any]:
        return network_state(self.ns, self.d.base)

    def run(self, cid: str, *argv: str, labels: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        """`ctr run -d` with network labels (JSON-encoded unless given as text)."""
        args: list[str] = []
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        return ctr(self.d, "run", "-d", *args, IMAGE, cid, *(argv or (BB, "sleep", "600")))

    def refused(self, cid: str, labels: dict[str, Any], words: str) -> str:
        """The task of a container with `labels` is refused with `words`, a clear one-line error;
        the container (made before the task) is removed again."""
        r = self.run(cid, labels=labels)
        if r.returncode == 0:
            self.rm(cid)
            raise AssertionError(f"{labels}: started")
        ctr(self.d, "containers", "rm", cid)
        assert words in r.stderr, (labels, r.stderr)
        assert "internal" not in r.stderr and "Traceback" not in r.stderr and "Error(" not in r.stderr, r.stderr
        return r.stderr

    def rm(self, cid: str) -> None:
        ctr(self.d, "tasks", "kill", "-s", "SIGKILL", cid)

        def deleted() -> bool:
            res = ctr(self.d, "tasks", "rm", cid)
            return res.returncode == 0 or "not found" in res.stderr

        wait_until(deleted, 20, what=f"task {cid} deleted", interval=0.1)
        ctr(self.d, "containers", "rm", cid)

    def fetch(self, url: str) -> str | None:
        r = self.sh("python3", "-c", FETCH, url)
        return r.stdout if r.returncode == 0 else None

    def serves(self, url: str) -> str:
        return wait_until(lambda: self.fetch(url), 20, what=f"{url} to answer", interval=0.1)

    def cat(self, cid: str, path: str) -> str:
        return ok(exec_output(lambda *a: ctr(self.d, *a), cid, BB, "cat", path))

    def networks(self) -> pb_grpc.NetworksStub:
        return pb_grpc.NetworksStub(self.channel)

    @property
    def channel(self) -> grpc.Channel:
        if not hasattr(self, "_channel"):
            self._channel = grpc.insecure_channel(f"unix:{self.d.address}")
        return self._channel

    def log_tracebacks(self) -> int:
        return self.d.log().count("Traceback")


def status(fn: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        fn(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    before = _host_firewall()
    with stopping_new_zygotes(), pinned_netns() as ns, tempfile.TemporaryDirectory(prefix="dy-nethostile-") as tmp:
        d = start_daemon(netns=ns)
        r = Rig(ns, d, Path(tmp))
        try:
            root = make_busybox_rootfs(Path(tmp) / "rootfs")
            archive = Path(tmp) / "image.tar"
            archive.write_bytes(oci_archive([build_image(IMAGE, [tar_tree(root)])]))
            ok(ctr(d, "images", "import", str(archive)))
            # the default network and portmap's shared chains exist from here on (as after any first run)
            ok(r.run("warmup", labels={PORTS: [{"container_port": 80}]}))
            r.rm("warmup")
            yield r
            assert r.log_tracebacks() == 0, "the daemon logged a traceback"
        finally:
            with contextlib.suppress(Exception):
                r.channel.close()
                if d.proc.poll() is None:
                    remove_everything(d)
            remove_base(d)
    assert _host_firewall() == before, "the host's firewall changed"


@pytest.fixture
def base(rig: Rig) -> Iterator[dict[str, Any]]:
    """The namespace's state before the test; it must be the same after."""
    before = rig.state()
    yield before
    remove_everything(rig.d)
    assert rig.state() == before


# -- networks ------------------------------------------------------------------------------


def test_hostile_network_create_requests_get_clear_codes(rig: Rig, base: dict[str, Any]) -> None:
    nets = rig.networks()
    inv, fp = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"name": "a/b"}, inv, "invalid network name"),
        ({"name": ".."}, inv, "invalid network name"),
        ({"name": "a\0b"}, inv, "invalid network name"),
        ({"name": "n" * 10_000}, inv, "(10000 characters)"),
        # `$` matched before a final newline: a network "web\n" (and "web\n.conflist") was made
        ({"name": "web\n"}, inv, "invalid network name"),
        # the default network is made on first use, on its own bridge
        ({"name": "dockyard"}, inv, "default network"),
        ({"name": "h1", "subnet": "10.50.0.0/32"}, inv, "too small"),
        ({"name": "h1", "subnet": "0.0.0.0/0"}, inv, "no container can have"),
        ({"name": "h1", "subnet": "::/0"}, inv, "no container can have"),
        ({"name": "h1", "subnet": "224.0.0.0/24"}, inv, "multicast"),
        ({"name": "h1", "subnet": "0.0.0.0/8"}, inv, "no container can have"),
        ({"name": "h1", "subnet": "fd00::%eth0/64"}, inv, "scope"),
        ({"name": "h1", "subnet": "fd01::/64", "gateway": "fd01::1%\nx"}, inv, "scope"),
        ({"name": "h1", "subnet": "10.51.0.0/24", "gateway": "10.52.0.1"}, inv, "not a host address"),
        ({"name": "h1", "subnet": "10.51.0.0/24", "gateway": "10.51.0.255"}, inv, "not a host address"),
        ({"name": "h1", "subnet": "garbage" * 2000}, inv, "is not a subnet"),
        ({"name": "h1", "labels": {"k": "v" * 100_000}}, inv, "4096 bytes"),
        ({"name": "h1", "subnet": "10.88.1.0/24"}, fp, "overlaps subnet 10.88.0.0/16 of network 'dockyard'"),
        ({"name": "h1", "subnet": "127.0.0.0/24"}, inv, "loopback"),
    ]
    wrong = []
    for i, (fields, code, words) in enumerate(cases):
        if fields.get("name") == "h1":
            fields = {**fields, "name": f"h{i}"}  # each case on its own (one accepted must not hide the next)
        got, details = status(nets.Create, pb.CreateNetworkRequest(**fields))
        if got != code or words not in details or len(details) > 1000:
            wrong.append((fields.get("name", "")[:20], fields.get("subnet", "")[:20], got, details[:200]))
    assert wrong == []
    # a subnet over a route of the "host" (a veth of the test's namespace)
    rig.sh("ip", "link", "add", "dy-h0", "type", "veth", "peer", "name", "dy-h1", check=True)
    try:
        rig.sh("ip", "addr", "add", "192.0.2.10/24", "dev", "dy-h0", check=True)
        rig.sh("ip", "link", "set", "dy-h0", "up", check=True)
        got, details = status(nets.Create, pb.CreateNetworkRequest(name="h1", subnet="192.0.2.0/25"))
        assert got == fp and "route to 192.0.2.0/24 (dev dy-h0)" in details, details
    finally:
        rig.sh("ip", "link", "del", "dy-h0")
    # the default network cannot be removed (it could before, and came back on another subnet)
    got, details = status(rig.networks().Remove, pb.RemoveNetworkRequest(name="dockyard"))
    assert got == fp and "default network" in details, details
    got, details = status(rig.networks().Inspect, pb.InspectNetworkRequest(name="x" * 10_000))
    assert got == grpc.StatusCode.NOT_FOUND and len(details) < 200, details
    listed = rig.networks().List(pb.ListNetworksRequest(), timeout=30)
    assert [n.name for n in listed.networks] == ["dockyard"] and not listed.problems
    assert sorted(p.name for p in (rig.d.base / "net.d").iterdir()) == ["dockyard.conflist"]
    # a conflist whose creation time no Timestamp holds failed every List ("internal")
    odd = rig.d.base / "net.d" / "odd.conflist"
    odd.write_text(json.dumps({"cniVersion": "1.0.0", "name": "odd", "plugins": [{"type": "bridge"}],
                               "dockyard": {"id": "x", "created": 1e300}}))
    try:
        got, details = status(rig.networks().List, pb.ListNetworksRequest())
        assert got == grpc.StatusCode.OK, details
    finally:
        odd.unlink()


def test_a_removed_network_leaves_no_bridge_rules_or_route(rig: Rig, base: dict[str, Any]) -> None:
    nets = rig.networks()
    for _ in range(2):  # the same subnet again: the first one's route made it "overlap the host's route"
        got, details = status(nets.Create, pb.CreateNetworkRequest(name="gone", subnet="10.61.0.0/24"))
        assert got == grpc.StatusCode.OK, details
        ok(rig.run("on-gone", labels={NETWORKS: ["gone"]}))
        bridge = nets.Inspect(pb.InspectNetworkRequest(name="gone"), timeout=30).network.bridge
        assert rig.sh("ip", "link", "show", bridge).returncode == 0
        got, details = status(nets.Remove, pb.RemoveNetworkRequest(name="gone"))
        assert got == grpc.StatusCode.FAILED_PRECONDITION and "default/on-gone" in details, details
        rig.rm("on-gone")
        ok_code, details = status(nets.Remove, pb.RemoveNetworkRequest(name="gone"))
        assert ok_code == grpc.StatusCode.OK, details
        state = rig.state()
        assert bridge not in state["links"], state["links"]
        assert not [r for t in state["rules"].values() for r in t if bridge in r]
        assert "10.61.0." not in rig.sh("ip", "route", "show", check=True).stdout
        assert not (rig.d.root / "networks" / "ipam" / "gone").exists()


# -- labels crafted past dock's parser ------------------------------------------------------


def test_hostile_labels_are_refused_and_leave_nothing(rig: Rig, base: dict[str, Any]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        # Python's parser raised RecursionError: an "internal" status and a traceback in the log
        ({PORTS: "[" * 3000}, "nested too deeply"),
        ({PORTS: '[{"container_port": NaN}]'}, "not valid JSON"),
        # an IPv6 scope took any text, a newline and lines of the caller's into resolv.conf and hosts
        ({DNS: ["fe80::1%\nnameserver 6.6.6.6"]}, "scope"),
        ({EXTRA_HOSTS: ["x:fe80::1%\n6.6.6.6 evil.example"]}, "scope"),
        ({PORTS: [{"container_port": 80, "host_ip": "::1%\nx"}]}, "scope"),
        # a NUL or an escape in a name went into /etc/hosts as it was
        ({EXTRA_HOSTS: ["a\u0000b:10.1.2.3"]}, "not a single word"),
        ({EXTRA_HOSTS: ["a\u001bb:10.1.2.3"]}, "not a single word"),
        ({DNS_SEARCH: ["a\nnameserver 6.6.6.6"]}, "not a single word"),
        ({PORTS: [{"container_port": 80, "host_port": 65536}]}, "host_port"),
        ({PORTS: [{"container_port": 0}]}, "container_port"),
        ({PORTS: [{"container_port": -1}]}, "container_port"),
        ({PORTS: [{"container_port": 80, "protocol": "icmp"}]}, "protocol"),
        ({PORTS: [{"container_port": 80, "host_ip": "not-an-ip"}]}, "not an IP address"),
        ({PORTS: [{"container_port": 80}] * 3 + [{"container_port": "80"}]}, "container_port"),
        # portmap skips a mapping whose host IP is of a family the container has no address of:
        # the port was "published" and never answered
        ({PORTS: [{"container_port": 80, "host_port": 18400, "host_ip": "::1"}]}, "gives the container only IPv4"),
        # not an address of the host: it said "already in use"
        ({PORTS: [{"container_port": 80, "host_port": 18401, "host_ip": "192.0.2.99"}]},
         "192.0.2.99 is not an address of this host"),
        # one container, one host port twice: it said "already published by container this container"
        ({PORTS: [{"container_port": 80, "host_port": 18402}, {"container_port": 81, "host_port": 18402}]},
         "published twice by this container"),
        ({PORTS: [{"container_port": 80, "host_port": 18403, "host_ip": "0.0.0.0"},
                  {"container_port": 81, "host_port": 18403, "host_ip": "127.0.0.1"}]},
         "published twice by this container"),
        ({NETWORKS: ["no-such\u0000net"]}, "not found"),
    ]
    wrong = []
    for labels, words in cases:
        try:
            rig.refused("bad", labels, words)
        except AssertionError as exc:
            wrong.append(str(exc)[:300])
        assert rig.state() == base, labels
    assert wrong == []


def test_hosts_and_resolv_hold_only_what_was_asked(rig: Rig, base: dict[str, Any]) -> None:
    # (a control: what may be asked reaches the files, and nothing more)
    ok(rig.run("files", labels={DNS: ["192.0.2.53", "2001:db8::1"], DNS_SEARCH: ["example.org"],
                                EXTRA_HOSTS: ["db:10.1.2.3", "v6:[2001:db8::7]"]}))
    resolv = rig.cat("files", "/etc/resolv.conf")
    assert [line for line in resolv.splitlines() if line.startswith("nameserver")] == [
        "nameserver 192.0.2.53", "nameserver 2001:db8::1"], resolv
    hosts = rig.cat("files", "/etc/hosts").splitlines()
    assert "10.1.2.3\tdb" in hosts and "2001:db8::7\tv6" in hosts, hosts
    assert all(line.split("\t")[0].replace(".", "").replace(":", "").isalnum() for line in hosts), hosts
    rig.rm("files")


# -- published ports -----------------------------------------------------------------------


def test_a_host_port_taken_by_another_container_fails_and_the_first_keeps_serving(
        rig: Rig, base: dict[str, Any]) -> None:
    ok(rig.run("first", BB, "sh", "-c", HTTPD,
               labels={PORTS: [{"container_port": 80, "host_port": 18410, "host_ip": "0.0.0.0"}]}))
    assert rig.serves("http://127.0.0.1:18410/") == "served\n"
    during = rig.state()
    # 0.0.0.0 is every IPv4 address: 127.0.0.1 is one of them (it was accepted, and the two
    # containers' rules then fought over the port); "" and the same address, as before
    for host_ip in ("127.0.0.1", "", "0.0.0.0"):
        err = rig.refused("second", {PORTS: [{"container_port": 80, "host_port": 18410, "host_ip": host_ip}]},
                          "already published by container default/first")
        assert "18410" in err
        assert rig.state() == during
    assert rig.fetch("http://127.0.0.1:18410/") == "served\n"
    # two at once: one gets it
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: rig.run(c, labels={PORTS: [{"container_port": 80, "host_port": 18411}]}),
                                ["race1", "race2"]))
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.stderr for r in results]
    lost = next(r for r in results if r.returncode != 0)
    assert "18411" in lost.stderr and "already published" in lost.stderr, lost.stderr
    assert rig.fetch("http://127.0.0.1:18410/") == "served\n"


# -- IPAM -------------------------------------------------------------------------------------


def test_an_exhausted_network_is_resource_exhausted_and_reserves_nothing(rig: Rig, base: dict[str, Any]) -> None:
    got, details = status(rig.networks().Create, pb.CreateNetworkRequest(name="tiny", subnet="10.62.0.0/30"))
    assert got == grpc.StatusCode.OK, details
    try:
        ok(rig.run("only", labels={NETWORKS: ["tiny"]}))
        with_one = rig.state()
        for i in range(3):
            err = rig.refused(f"more{i}", {NETWORKS: ["tiny"], PORTS: [{"container_port": 80, "host_port": 18420}]},
                              "network 'tiny' has no free address left in 10.62.0.0/30")
            assert "resource exhausted" in err, err  # it was a failed precondition
            assert rig.state() == with_one
        rig.rm("only")
        ok(rig.run("next", labels={NETWORKS: ["tiny"]}))  # the address is free again
        rig.rm("next")
    finally:
        remove_everything(rig.d)
        status(rig.networks().Remove, pb.RemoveNetworkRequest(name="tiny"))


# -- through dock ----------------------------------------------------------------------------


def test_dock_run_with_hostile_network_flags_says_what_is_wrong(rig: Rig, base: dict[str, Any]) -> None:
    cli = DockCLI(rig.d.address, rig.tmp)
    # dock reads these as addresses (Python's, scope included); the daemon refuses them
    cli.fails("run", "--rm", "--dns", "fe80::1%\nnameserver 6.6.6.6", IMAGE, "true", words="scope")
    cli.fails("run", "--rm", "--add-host", "x:fe80::1%\n6.6.6.6 evil", IMAGE, "true", words="scope")
    cli.fails("run", "--rm", "-p", "[::1]:18430:80", IMAGE, "true", words="only IPv4")
    cli.fails("network", "create", "web\n", words="invalid network name")
    cli.fails("network", "create", "--subnet", "224.1.0.0/16", "mc", words="multicast")
    assert cli.ok("containers", "ls", "-q").split() == []


def test_one_container_attached_twice_at_once_gets_one_network(rig: Rig, base: dict[str, Any]) -> None:
    ok(ctr(rig.d, "containers", "create", "--label", f"{PORTS}={json.dumps([{'container_port': 80}])}", IMAGE,
           "twice", BB, "sleep", "600"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ctr(rig.d, "tasks", "start", "-d", "twice"), range(2)))
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.stderr for r in results]
    assert "already exists" in next(r for r in results if r.returncode != 0).stderr
    state = rig.state()
    assert len(state["records"]) == len(state["netns"]) == 1 and len([f for f in state["ipam"]
                                                                      if f.startswith("dockyard/")]) == 1
    rig.rm("twice")


def test_a_container_removed_while_its_task_is_created_leaves_nothing(rig: Rig, base: dict[str, Any]) -> None:
    for i in range(3):
        cid = f"gone{i}"
        with ThreadPoolExecutor(2) as pool:
            started = pool.submit(rig.run, cid, labels={PORTS: [{"container_port": 80, "host_port": 18440}]})

            def made(cid: str = cid) -> bool:
                return cid in ctr(rig.d, "containers", "ls", "-q").stdout.split()

            wait_until(made, 20, what=f"container {cid}", interval=0.01)
            ctr(rig.d, "containers", "rm", cid)
            started.result()
        remove_everything(rig.d)
        assert rig.state() == base

