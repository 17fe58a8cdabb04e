"""Container networking wired into the daemon: labelled containers get a CNI network at task
create and lose it at exit, delete, failure, or the next start after a crash.

Every test runs its own dockyardd inside a network namespace the test pins (`nsenter --net`), so
the machine's links and firewall are never touched; a module fixture checks the host's
`iptables-save` is the same before and after. Containers come from the real `ctr run --label`
(the labels `dock run` sets) on a busybox image built from local material; traffic goes only
between addresses inside the test's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dock.stats import StatsSample
from dockyard_api.dockyard.network.v1 import events_pb2 as net_events
from tests.compat.runtimes import IMAGE, remove_everything
from tests.ctr import ctr, exec_output, ok
from tests.daemon import (
    DaemonProcess,
    alive,
    in_netns,
    pinned_netns,
    processes_in,
    remove_base,
    start_daemon,
    stopping_new_zygotes,
    subscribed,
)
from tests.images import build_image, oci_archive, tar_tree
from tests.integration.netcni_driver import network_state
from tests.integration.test_network_cni import _host_firewall
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until, wait_until_async

pytestmark = pytest.mark.root

BB = "/bin/busybox"
PORTS = "dockyard.network/ports"
NETWORKS = "dockyard.network/networks"
HTTPD = "mkdir /www && cp /etc/hosts /www/hosts && ip -o addr > /www/ip && exec httpd -f -p 80 -h /www"
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"


UDP_ECHO = Path(__file__).with_name("udpecho.c")


@pytest.fixture(scope="module")
def image_archive() -> Iterator[Path]:
    """busybox plus /bin/udpecho (busybox has no UDP server), compiled statically here."""
    with tempfile.TemporaryDirectory(prefix="dy-netimg-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        extra = Path(tmp) / "extra" / "bin"
        extra.mkdir(parents=True)
        subprocess.run(["gcc", "-static", "-O2", "-o", str(extra / "udpecho"), str(UDP_ECHO)], check=True,
                       capture_output=True)
        archive = Path(tmp) / "image.tar"
        archive.write_bytes(oci_archive([build_image(IMAGE, [tar_tree(root), tar_tree(extra.parent)])]))
        yield archive


@pytest.fixture(scope="module", autouse=True)
def host_firewall_untouched() -> Iterator[None]:
    before = _host_firewall()
    with stopping_new_zygotes():
        yield
    assert _host_firewall() == before, "the host's firewall changed"


@dataclass
class Net:
    """A daemon inside a pinned namespace standing in for the host, with the busybox image."""

    ns: Path
    d: DaemonProcess

    def sh(self, *argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return in_netns(self.ns, *argv, check=check, timeout=timeout)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.d.stop(sig)
        self.d = start_daemon(base=self.d.base, netns=self.ns)

    def state(self) -> dict[str, Any]:
        return network_state(self.ns, self.d.base)

    def run(self, cid: str, *argv: str, ports: list[dict[str, Any]] | None = None,
            networks: list[str] | None = None, labels: dict[str, Any] | None = None,
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """`ctr run -d` with the network labels `dock run` would set (none: containerd's own path)."""
        args: list[str] = []
        all_labels = dict(labels or {})
        if ports is not None:
            all_labels[PORTS] = ports
        if networks is not None:
            all_labels[NETWORKS] = networks
        for key, value in all_labels.items():
            args += ["--label", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        return ctr(self.d, "run", "-d", *args, *extra, IMAGE, cid, *argv)

    def httpd(self, cid: str, **kw: Any) -> None:
        """A container serving on port 80 its /etc/hosts (/hosts) and its own addresses (/ip)."""
        ok(self.run(cid, BB, "sh", "-c", HTTPD, **kw))

    def exec(self, cid: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return exec_output(functools.partial(ctr, self.d, timeout=timeout), cid, *argv)

    def ip_of(self, cid: str) -> str:
        out = ok(self.exec(cid, BB, "ip", "-4", "-o", "addr", "show", "eth0"))
        return out.split()[3].split("/")[0]

    def fetch(self, url: str) -> str | None:
        """The body at `url` fetched from the test's "host" namespace; None if it does not answer
        within 3 s (python: busybox's `wget -T` crashes)."""
        r = self.sh("python3", "-c", FETCH, url)
        return r.stdout if r.returncode == 0 else None

    def get(self, url: str, timeout: float = 20) -> str:
        """The body at `url`, once it answers."""
        return wait_until(lambda: self.fetch(url), timeout, what=f"{url} to answer", interval=0.1)

    def answers(self, url: str) -> bool:
        return self.fetch(url) is not None

    def rm(self, cid: str) -> None:
        """Kill, delete the task, remove the container (as `dock rm -f`)."""
        ctr(self.d, "tasks", "kill", "-s", "SIGKILL", cid)

        def deleted() -> bool:
            r = ctr(self.d, "tasks", "rm", cid)
            return r.returncode == 0 or "not found" in r.stderr

        wait_until(deleted, 20, what=f"task {cid} deleted", interval=0.1)
        ok(ctr(self.d, "containers", "rm", cid))

    def task_pid(self, cid: str) -> int:
        rows = [r.split() for r in ok(ctr(self.d, "tasks", "ls")).splitlines()[1:]]
        return next(int(r[1]) for r in rows if r[0] == cid)


@pytest.fixture
def net(image_archive: Path) -> Iterator[Net]:
    with pinned_netns() as ns:
        d = start_daemon(netns=ns)
        n = Net(ns, d)
        try:
            ok(ctr(d, "images", "import", str(image_archive)))
            yield n
        finally:
            with contextlib.suppress(Exception):
                if n.d.proc.poll() is None:
                    remove_everything(n.d)
            remove_base(n.d)


def bound(net: Net, port: int, proto: str = "tcp") -> bool:
    """Whether the port can be bound in the test's namespace now (nothing holds it)."""
    kind = "SOCK_STREAM" if proto == "tcp" else "SOCK_DGRAM"
    code = f"import socket; s = socket.socket(socket.AF_INET, socket.{kind}); s.bind(('0.0.0.0', {port}))"
    return net.sh("python3", "-c", code).returncode == 0


def rules_naming(net: Net, port: int) -> list[str]:
    return [line for line in net.sh("iptables-save", check=True).stdout.splitlines() if f"--dport {port}" in line
            or f"dport {port} " in line]


def baseline(net: Net) -> dict[str, Any]:
    """The namespace's state once the default network exists (its bridge stays, as Docker's)."""
    net.httpd("warmup", ports=[{"host_port": 0, "container_port": 80}])
    net.rm("warmup")
    return net.state()


# -- the default network ---------------------------------------------------------------------


def test_two_containers_reach_each_other(net: Net) -> None:
    net.httpd("web", networks=["bridge"])
    ok(net.run("client", BB, "sleep", "600", networks=["bridge"]))
    web, client = net.ip_of("web"), net.ip_of("client")
    assert web != client and web.startswith("10.88.") and client.startswith("10.88.")
    assert ok(net.exec("client", BB, "ping", "-c", "1", "-W", "5", web))
    assert ok(net.exec("web", BB, "ping", "-c", "1", "-W", "5", client))
    # the httpd in "web" serves its generated /etc/hosts (":80" and no -T: without a port the
    # static busybox's wget looks "http" up through NSS, which the image lacks; -T crashes it)
    body = ok(net.exec("client", BB, "wget", "-q", "-O", "-", f"http://{web}:80/hosts"))
    assert body == ok(net.exec("web", BB, "cat", "/etc/hosts")) and "127.0.0.1\tlocalhost" in body
    resolv = ok(net.exec("client", BB, "cat", "/etc/resolv.conf"))
    assert "nameserver" in resolv and "127.0.0." not in resolv
    # read-only binds: the image's files are never touched
    assert net.exec("client", BB, "sh", "-c", "echo x >> /etc/hosts").returncode != 0
    net.rm("web")
    net.rm("client")


def test_unlabelled_containers_keep_containerds_behaviour(net: Net) -> None:
    ok(net.run("plain", BB, "sleep", "600"))
    links = ok(net.exec("plain", BB, "ip", "-o", "link"))
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    state = net.state()
    assert not (state["records"] or state["netns"] or state["ipam"] or state["files"])
    assert "dockyard0" not in state["links"]  # no network was even made
    net.rm("plain")


def test_joining_another_containers_network(net: Net) -> None:
    net.httpd("owner", networks=["bridge"])
    ok(net.run("sidecar", BB, "sleep", "600", labels={"dockyard.network/container": "owner"}))
    ip = net.ip_of("owner")
    assert net.ip_of("sidecar") == ip  # one namespace
    assert "127.0.0.1" in ok(net.exec("sidecar", BB, "wget", "-q", "-O", "-", "http://127.0.0.1:80/hosts"))
    assert ok(net.exec("sidecar", BB, "cat", "/etc/hosts")) == ok(net.exec("owner", BB, "cat", "/etc/hosts"))
    net.rm("sidecar")
    assert net.state()["records"]  # the owner's network stays
    net.rm("owner")
    assert not net.state()["records"]


# -- published ports -------------------------------------------------------------------------


UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"over-udp", (sys.argv[1], int(sys.argv[2])))
    print(s.recv(100).decode())
""")


def test_published_ports_answer_and_are_freed(net: Net) -> None:
    # the "host's" own address, on a link of the test's namespace (a veth pair: no dummy module here)
    net.sh("ip", "link", "add", "dy-up0", "type", "veth", "peer", "name", "dy-up1", check=True)
    net.sh("ip", "addr", "add", "192.0.2.10/24", "dev", "dy-up0", check=True)
    for link in ("dy-up0", "dy-up1"):
        net.sh("ip", "link", "set", link, "up", check=True)
    net.httpd("web", ports=[{"host_ip": "", "host_port": 18080, "container_port": 80, "protocol": "tcp"}])
    for url in ("http://127.0.0.1:18080/hosts", "http://192.0.2.10:18080/hosts"):
        assert "localhost" in net.get(url)
    ok(net.run("udp", "/bin/udpecho", "5353", ports=[{"host_port": 15353, "container_port": 5353,
                                                      "protocol": "udp"}]))
    def echoed(addr: str) -> bool:
        return net.sh("python3", "-c", UDP_CLIENT, addr, "15353").stdout.strip() == "echo:over-udp"

    for addr in ("192.0.2.10", "127.0.0.1"):
        # asked again until it answers: the server may not be bound yet, and a first datagram may
        # race the DNAT rule (conntrack keeps a flow made before it)
        wait_until(functools.partial(echoed, addr), 20, what=f"a datagram through the UDP mapping on {addr}",
                   interval=0.2)
    net.rm("web")
    net.rm("udp")
    assert not net.answers("http://127.0.0.1:18080/hosts")
    assert rules_naming(net, 18080) == [] and rules_naming(net, 15353) == []
    assert bound(net, 18080) and bound(net, 15353, "udp")
    # and the port can be published again
    net.httpd("again", ports=[{"host_port": 18080, "container_port": 80}])
    assert "localhost" in net.get("http://127.0.0.1:18080/hosts")
    net.rm("again")


def test_a_container_that_exits_frees_its_address_and_ports(net: Net) -> None:
    net.httpd("short", ports=[{"host_port": 18090, "container_port": 80}])
    net.get("http://127.0.0.1:18090/hosts")
    ok(ctr(net.d, "tasks", "kill", "-s", "SIGKILL", "short"))
    wait_until(lambda: not net.state()["records"], 20, what="the exited container's network to be released")
    assert rules_naming(net, 18090) == []
    # its task stays (STOPPED) until deleted, as containerd's; deleting it is fine
    ok(ctr(net.d, "tasks", "rm", "short"))
    ok(ctr(net.d, "containers", "rm", "short"))


# -- failures leave nothing --------------------------------------------------------------------


def test_a_create_that_fails_part_way_leaves_nothing(net: Net) -> None:
    base = baseline(net)
    # after attach: the shim refuses the spec (a bind of a missing source)
    r = net.run("badmount", BB, "true", ports=[{"host_port": 18100, "container_port": 80}],
                extra=("--mount", "type=bind,src=/nonexistent-dockyard-src,dst=/x,options=rbind"))
    assert r.returncode != 0 and "nonexistent-dockyard-src" in r.stderr
    assert net.state() == base
    ok(ctr(net.d, "containers", "rm", "badmount"))
    # during attach: the second network's plugin does not exist
    (net.d.base / "net.d" / "broken.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "dy-no-such-plugin"}]}))
    r = net.run("badnet", BB, "true", networks=["bridge", "broken"], ports=[{"host_port": 18101, "container_port": 80}])
    assert r.returncode != 0 and "dy-no-such-plugin" in r.stderr and "Traceback" not in r.stderr
    assert net.state() == base
    ok(ctr(net.d, "containers", "rm", "badnet"))
    # before attach: the host port is taken (named in the error)
    with subprocess.Popen(["nsenter", f"--net={net.ns}", "python3", "-c", textwrap.dedent("""
            import socket, sys
            s = socket.socket(); s.bind(("0.0.0.0", 18102)); s.listen(); print("ready", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        r = net.run("taken", BB, "true", ports=[{"host_port": 18102, "container_port": 80}])
        assert holder.stdin is not None
        holder.stdin.close()
    assert r.returncode != 0 and "18102" in r.stderr and "in use" in r.stderr
    assert net.state() == base
    ok(ctr(net.d, "containers", "rm", "taken"))
    # bad labels: a clear error, nothing made
    for labels, words in (({PORTS: "not json"}, "not valid JSON"),
                          ({PORTS: [{"container_port": 70000}]}, "container_port"),
                          ({NETWORKS: ["no-such-net"]}, "no-such-net"),
                          ({"dockyard.network/bogus": "[]"}, "unknown network label")):
        r = net.run("badlabel", BB, "true", labels=labels)
        assert r.returncode != 0 and words in r.stderr and "Traceback" not in r.stderr, (labels, r.stderr)
        ok(ctr(net.d, "containers", "rm", "badlabel"))
        assert net.state() == base


# -- a daemon killed with networked containers -----------------------------------------------


def test_kill_9_daemon_then_restart_releases_only_the_dead(net: Net) -> None:
    base = baseline(net)
    cids = [f"c{i}" for i in range(10)]
    for i, cid in enumerate(cids):
        net.httpd(cid, ports=[{"host_port": 18200 + i, "container_port": 80}])
    for i in range(10):
        net.get(f"http://127.0.0.1:{18200 + i}/hosts")
    ips = {cid: net.ip_of(cid) for cid in cids}
    inits = {cid: net.task_pid(cid) for cid in cids}
    net.d.stop(signal.SIGKILL)
    # while no daemon watches: two containers die; one loses its shim too
    for cid in ("c1", "c2", "c3"):
        os.kill(inits[cid], signal.SIGKILL)
    wait_until(lambda: not any(alive(inits[c]) for c in ("c1", "c2", "c3")), 20, what="the inits to die")
    for pid in processes_in(net.d.state / "tasks" / "default" / "c3"):
        os.kill(pid, signal.SIGKILL)
    net.d = start_daemon(base=net.d.base, netns=net.ns)
    # the survivors' networks are CHECKed (CNI) after the start, and pass
    wait_until(lambda: "networks of 7 running containers checked: 0 with problems" in net.d.log()[net.d.log_start:],
               60, what="the CNI CHECK of the surviving containers")
    for i, cid in enumerate(cids):
        url = f"http://127.0.0.1:{18200 + i}/hosts"
        if cid in ("c1", "c2", "c3"):
            assert not net.answers(url) and rules_naming(net, 18200 + i) == []
        else:
            assert f" {ips[cid]}/" in net.get(url.replace("/hosts", "/ip"))
    ipam = net.state()["ipam"]
    for cid in cids:
        assert any(f.endswith("/" + ips[cid]) for f in ipam) == (cid not in ("c1", "c2", "c3")), cid
    # a released port can be published again at once
    net.httpd("newcomer", ports=[{"host_port": 18201, "container_port": 80}])
    assert "localhost" in net.get("http://127.0.0.1:18201/hosts")
    for cid in [*cids, "newcomer"]:
        with contextlib.suppress(AssertionError):
            net.rm(cid)
    remove_everything(net.d)
    assert net.state() == base


# -- many ----------------------------------------------------------------------------------


def test_100_containers_with_ports_leave_the_baseline(net: Net) -> None:
    base = baseline(net)
    cids = [f"m{i}" for i in range(100)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # as parallel `dock run`s would
        results = list(pool.map(lambda c: net.run(c, BB, "sleep", "600", ports=[{"host_port": 0,
                                                                                  "container_port": 80}]), cids))
    for r in results:
        ok(r)
    started = time.monotonic() - t0
    state = net.state()
    assert len(state["records"]) == 100 and len(state["netns"]) == 100
    assert len({f for f in state["ipam"]}) == 100
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(net.rm, cids))
    print(f"100 networked containers: started in {started:.1f}s, all gone in {time.monotonic() - t0:.1f}s")
    assert net.state() == base


# -- events and stats --------------------------------------------------------------------------


async def test_attach_and_detach_events_and_network_stats(net: Net) -> None:
    client = net.d.client()
    try:
        events = await subscribed(client.channel, 'topic~="^/network/"')
        it = aiter(events)
        await asyncio.to_thread(net.httpd, "ev", ports=[{"host_port": 18300, "container_port": 80}])
        env = await anext(it)
        assert env.topic == "/network/attach" and env.event.type_url == "dockyard.network.v1.NetworkAttach"
        attach = net_events.NetworkAttach.FromString(env.event.value)
        assert attach.container_id == "ev" and attach.attachment.interfaces[0].name == "eth0"
        assert [p.host_port for p in attach.attachment.ports] == [18300]
        ip = attach.attachment.interfaces[0].addresses[0].split("/")[0]

        async def traffic_seen() -> StatsSample | None:
            await asyncio.to_thread(net.get, "http://127.0.0.1:18300/hosts")
            async for s in client.stats.stream("ev", interval=0.2):
                if s.networks:
                    return s if s.network_io and s.network_io[0] > 0 and s.network_io[1] > 0 else None
            return None

        sample = await wait_until_async(traffic_seen, 30, what="rx/tx bytes in the stats stream")
        assert sample.networks is not None and [i.name for i in sample.networks] == ["eth0"]
        await asyncio.to_thread(net.rm, "ev")
        env = await anext(it)
        assert env.topic == "/network/detach"
        detach = net_events.NetworkDetach.FromString(env.event.value)
        assert detach.container_id == "ev" and detach.attachment.interfaces[0].addresses[0].startswith(ip)
        events.cancel()
    finally:
        await client.close()
