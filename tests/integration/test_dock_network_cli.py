"""`dock network`, `dock port` and `dock run --net/-p/--dns/--add-host/--hostname` against a real
dockyardd with Debian's CNI plugins.

The daemon runs inside a network namespace this module pins (tests/daemon.py `pinned_netns`), so
its bridges, veths and firewall rules stay there; clients that need the network (wget) enter it
with nsenter. The host's `iptables-save` must be the same before and after the module.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import DaemonProcess, in_netns, pinned_netns, remove_base, start_daemon
from tests.dockcli import DockCLI
from tests.images import build_image, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = pytest.mark.root

NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("iptables-save") \
        or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, iptables and busybox-static (scripts/install)",
                allow_module_level=True)

from tests.integration.test_network_cni import _host_firewall  # noqa: E402  (after the skip: it skips alike)

IMAGE = "docker.io/library/nettest:1"
PAGE = "hello from a dockyard container\n"
# busybox httpd in the foreground, serving /www on port 80
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]


@dataclass
class Rig:
    d: DaemonProcess
    netns: Path
    tmp: Path
    ids: list[str] = field(default_factory=list)

    def new_id(self, name: str) -> str:
        cid = f"{name}-{secrets.token_hex(4)}"
        self.ids.append(cid)
        return cid

    @property
    def cli(self) -> DockCLI:
        return DockCLI(self.d.address, self.tmp)

    def dock(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.cli.dock(*args, timeout=timeout)

    def ok(self, *args: str) -> str:
        return self.cli.ok(*args, timeout=120)

    def fails(self, *args: str, words: str) -> str:
        """The command fails with one clear line on stderr naming `words`: no traceback, no Python names."""
        return self.cli.fails(*args, words=words)

    def json(self, *args: str) -> Any:
        return self.cli.json(*args)

    def container_ids(self) -> list[str]:
        return self.ok("containers", "ls", "-q").split()

    def remove(self, cid: str) -> None:
        self.dock("tasks", "rm", "-f", cid)
        self.dock("containers", "rm", cid)

    def wget(self, url: str) -> subprocess.CompletedProcess[str]:
        # no -T: Debian's static busybox wget crashes (SIGSEGV) with it; the call's timeout bounds it
        return in_netns(self.netns, "/bin/busybox", "wget", "-q", "-O", "-", url, check=False, timeout=20)

    def serves(self, url: str) -> str:
        """What `url` answers from the test's namespace, once its server is up."""
        def answered() -> str | None:
            try:
                res = self.wget(url)
            except subprocess.TimeoutExpired:
                return None
            return res.stdout if res.returncode == 0 else None
        return wait_until(answered, timeout=60, what=f"{url} to answer", interval=0.2)

    def leftovers(self) -> dict[str, list[str]]:
        """The daemon's network bookkeeping: netns files, attachment records, generated files."""
        def names(p: Path) -> list[str]:
            return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
        files = self.d.state / "network"
        return {"netns": names(self.d.state / "netns"),
                "records": names(self.d.root / "networks" / "attachments"),
                "files": sorted(str(p.relative_to(files)) for p in files.glob("*/*")) if files.is_dir() else []}


def web_image(tmp: Path) -> bytes:
    root = make_busybox_rootfs(tmp / "rootfs", all_applets=True)
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text(PAGE)
    # EXPOSE 80 (httpd) and 9999/udp: what -P publishes
    return oci_archive([build_image(IMAGE, [tar_tree(root)], {"ExposedPorts": {"80/tcp": {}, "9999/udp": {}}})])


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    before = _host_firewall()
    with pinned_netns() as ns, tempfile.TemporaryDirectory(prefix="dy-netcli-") as tmp:
        d = start_daemon(Path(tempfile.mkdtemp(prefix="dy-")), netns=ns)
        r = Rig(d, ns, Path(tmp))
        try:
            archive = Path(tmp) / "image.tar"
            archive.write_bytes(web_image(Path(tmp)))
            r.ok("images", "import", "--unpack", str(archive))
            yield r
        finally:
            for cid in r.ids:
                r.remove(cid)
            remove_base(d)
    assert _host_firewall() == before, "the host's firewall changed"


@pytest.fixture
def clean(rig: Rig) -> Iterator[Rig]:
    """Each test leaves no container and no network bookkeeping behind."""
    yield rig
    for cid in list(rig.ids):
        rig.remove(cid)
        rig.ids.remove(cid)
    assert rig.container_ids() == []
    assert rig.leftovers() == {"netns": [], "records": [], "files": []}


# -- dock network ---------------------------------------------------------------------------------


def test_network_create_ls_inspect_rm(clean: Rig) -> None:
    r = clean
    name = f"web-{secrets.token_hex(3)}"
    net_id = r.ok("network", "create", "--subnet", "10.123.0.0/24", "--gateway", "10.123.0.254",
                  "--label", "team=a", name).strip()
    assert len(net_id) >= 12
    table = r.ok("network", "ls").splitlines()
    assert table[0].split()[:4] == ["NETWORK", "ID", "NAME", "DRIVER"]
    row = next(line.split() for line in table if name in line.split())
    assert row[:5] == [net_id[:12], name, "bridge", "10.123.0.0/24", "10.123.0.254"] and row[-1] == "team=a"
    assert name in r.ok("network", "ls", "-q").split()
    listed = {n["name"]: n for n in r.json("network", "ls")}
    assert listed[name]["subnets"] == ["10.123.0.0/24"] and listed[name]["labels"] == {"team": "a"}
    [shown] = r.json("network", "inspect", name)
    assert (shown["id"], shown["gateway"], shown["internal"], shown["managed"], shown["containers"]) == \
        (net_id, "10.123.0.254", False, True, [])
    assert shown["path"] == str(r.d.base / "net.d" / f"{name}.conflist")
    # taken names, overlapping subnets, bad values: refused, with what was wrong
    r.fails("network", "create", "--subnet", "10.123.0.128/25", f"x{name}", words="overlaps subnet 10.123.0.0/24")
    r.fails("network", "create", name, words="already exists")
    r.fails("network", "create", "--subnet", "10.1.2.3/33", "bad1", words="invalid subnet '10.1.2.3/33'")
    r.fails("network", "create", "--subnet", "10.124.0.0/24", "--gateway", "10.125.0.1", "bad2",
            words="not a host address of subnet 10.124.0.0/24")
    r.fails("network", "create", "--gateway", "10.0.0.1", "bad3", words="--gateway needs --subnet")
    r.fails("network", "create", "bad name", words="invalid network name")
    r.fails("network", "create", "bridge", words="reserved")
    r.fails("network", "inspect", "nosuch", words="network 'nosuch': not found")
    assert r.ok("network", "rm", name) == f"{name}\n"
    r.fails("network", "rm", name, words=f"network {name!r}: not found")
    assert name not in r.ok("network", "ls", "-q").split()


def test_internal_network_and_prune(clean: Rig) -> None:
    r = clean
    a, b = f"pa-{secrets.token_hex(3)}", f"pb-{secrets.token_hex(3)}"
    r.ok("network", "create", "--internal", a)
    r.ok("network", "create", b)
    [shown] = r.json("network", "inspect", a)
    assert shown["internal"] is True and shown["subnets"][0].endswith("/16")
    # a user's own file is a network too; prune leaves it (and the default network) alone
    user = r.d.base / "net.d" / "mine.conflist"
    user.write_text(json.dumps({"cniVersion": "1.0.0", "name": "mine", "plugins": [
        {"type": "bridge", "bridge": "mine0", "ipam": {"type": "host-local", "subnet": "10.200.0.0/24"}}]}))
    try:
        removed = r.json("network", "prune")
        assert set(removed) >= {a, b} and "mine" not in removed
        names = r.ok("network", "ls", "-q").split()
        assert a not in names and b not in names and "mine" in names
        [mine] = r.json("network", "inspect", "mine")
        assert mine["managed"] is False and mine["subnets"] == ["10.200.0.0/24"]
    finally:
        user.unlink()


def test_a_malformed_user_conflist_is_named_and_hides_nothing(clean: Rig) -> None:
    r = clean
    good = f"ok-{secrets.token_hex(3)}"
    r.ok("network", "create", good)
    broken = r.d.base / "net.d" / "broken.conflist"
    broken.write_text('{"cniVersion": "1.0.0", "name": "broken", "plugins": [')
    try:
        res = r.dock("network", "ls")
        assert res.returncode == 0 and good in res.stdout
        assert str(broken) in res.stderr and "warning" in res.stderr and "Traceback" not in res.stderr
        r.fails("network", "inspect", "broken", words=str(broken))
        cid = r.new_id("broken")
        r.fails("run", "--rm", "--net", "broken", "--name", cid, IMAGE, "true", words=str(broken))
        assert cid not in r.container_ids()
    finally:
        broken.unlink()
        r.ok("network", "rm", good)


def test_unknown_network_fails_before_anything_is_made(clean: Rig) -> None:
    r = clean
    cid = r.new_id("unknown")
    r.fails("run", "--rm", "--net", "nosuch", "--name", cid, IMAGE, "true", words="network 'nosuch': not found")
    r.fails("run", "-d", "--net", "container:nosuch", "--name", cid, IMAGE, "true", words="nosuch")
    assert cid not in r.container_ids()


# -- dock run on networks ---------------------------------------------------------------------------


def test_publish_serves_and_dock_port_shows_it(clean: Rig) -> None:
    r = clean
    cid = r.new_id("web")
    assert r.ok("run", "-d", "-p", "18080:80", "--name", cid, IMAGE, *HTTPD) == f"{cid}\n"
    assert r.serves("http://127.0.0.1:18080/") == PAGE
    # the address the container got answers too, from the test's namespace (the host side)
    info = r.json("containers", "info", cid)
    assert info["ports"] == [{"container_port": 80, "protocol": "tcp", "host_ip": "", "host_port": 18080}]
    [eth0] = info["network"]["interfaces"]
    assert eth0["name"] == "eth0" and eth0["network"] == "dockyard" and eth0["mac"]
    addr = eth0["addresses"][0].split("/")[0]
    assert r.serves(f"http://{addr}:80/") == PAGE
    assert r.ok("port", cid) == "80/tcp -> 0.0.0.0:18080\n"
    assert r.ok("port", cid, "80") == "0.0.0.0:18080\n"
    assert r.ok("port", cid, "80/tcp") == "0.0.0.0:18080\n"
    r.fails("port", cid, "81", words=f"no public port '81/tcp' published for {cid}")
    r.fails("port", "nosuch", words="nosuch")
    r.fails("port", cid, "http", words="invalid port 'http'")
    assert r.json("port", cid) == [{"container_port": 80, "host_ip": "", "host_port": 18080, "protocol": "tcp"}]
    row = next(line for line in r.ok("containers", "ls").splitlines() if line.startswith(cid))
    assert "0.0.0.0:18080->80/tcp" in row
    # the default network is in use now: refused, naming the container
    [default] = r.json("network", "inspect", "dockyard")
    assert {"namespace": "default", "id": cid} in default["containers"]
    r.fails("network", "rm", "dockyard", words=f"default/{cid}")
    # the same host port again: a clear error naming it, and nothing of the second run stays
    other = r.new_id("clash")
    r.fails("run", "-d", "-p", "18080:80", "--name", other, IMAGE, *HTTPD, words="18080")
    assert other not in r.container_ids()
    r.remove(cid)
    r.ids.remove(cid)
    # its port is free again
    again = r.new_id("again")
    r.ok("run", "-d", "-p", "18080:80", "--name", again, IMAGE, *HTTPD)
    assert r.serves("http://127.0.0.1:18080/") == PAGE


def test_a_free_host_port_is_picked_and_shown(clean: Rig) -> None:
    r = clean
    cid = r.new_id("free")
    r.ok("run", "-d", "-p", "80", "--name", cid, IMAGE, *HTTPD)
    line = r.ok("port", cid).strip()
    assert line.startswith("80/tcp -> 0.0.0.0:"), line
    port = int(line.rsplit(":", 1)[1])
    assert 0 < port <= 65535
    assert r.serves(f"http://127.0.0.1:{port}/") == PAGE
    row = next(line for line in r.ok("containers", "ls").splitlines() if line.startswith(cid))
    assert f"0.0.0.0:{port}->80/tcp" in row
    [listed] = [c for c in r.json("containers", "ls") if c["id"] == cid]
    assert listed["ports"] == [{"container_port": 80, "protocol": "tcp", "host_ip": "", "host_port": port}]


def test_a_hundred_ports_in_one_range(clean: Rig) -> None:
    """A range is one `-p` text in the container's ports label: 100 ports were ~7 KB of label,
    past containerd's 4096 bytes, and the run failed on the label size."""
    r = clean
    cid = r.new_id("range")
    r.ok("run", "-d", "-p", "127.0.0.1:18100-18199:30-129", "--name", cid, IMAGE, *HTTPD)
    assert r.serves("http://127.0.0.1:18150/") == PAGE  # 18150 -> 80
    lines = r.ok("port", cid).splitlines()
    assert len(lines) == 100 and "80/tcp -> 127.0.0.1:18150" in lines and "30/tcp -> 127.0.0.1:18100" in lines
    labels = r.json("containers", "info", cid)["labels"]
    assert json.loads(labels["dockyard.network/ports"]) == ["127.0.0.1:18100-18199:30-129"]
    row = next(line for line in r.ok("ps").splitlines() if line.rstrip().endswith(cid))
    assert "127.0.0.1:18100-18199->30-129/tcp" in row  # one range, as docker ps shows it


def test_a_host_range_for_one_port_takes_a_free_one(clean: Rig) -> None:
    """Docker's `-p 18300-18302:80`: each container gets the first free port of the range."""
    r = clean
    first, second = r.new_id("span"), r.new_id("span")
    for cid in (first, second):
        r.ok("run", "-d", "-p", "127.0.0.1:18300-18302:80", "--name", cid, IMAGE, *HTTPD)
    assert r.ok("port", first) == "80/tcp -> 127.0.0.1:18300\n"
    assert r.ok("port", second) == "80/tcp -> 127.0.0.1:18301\n"
    assert r.serves("http://127.0.0.1:18300/") == PAGE and r.serves("http://127.0.0.1:18301/") == PAGE
    # the range is what the container asked for: its label keeps it
    assert json.loads(r.json("containers", "info", first)["labels"]["dockyard.network/ports"]) == [
        "127.0.0.1:18300-18302:80"]
    third = r.new_id("span")
    r.ok("run", "-d", "-p", "127.0.0.1:18301-18302:80", "--name", third, IMAGE, *HTTPD)
    assert r.ok("port", third) == "80/tcp -> 127.0.0.1:18302\n"
    r.fails("run", "-d", "-p", "127.0.0.1:18300-18302:80", "--name", r.new_id("span"), IMAGE, *HTTPD,
            words="no free host port in 18300-18302 for 80/tcp")


def test_publish_all_publishes_what_the_image_exposes(clean: Rig) -> None:
    r = clean
    cid = r.new_id("all")
    r.ok("run", "-d", "-P", "-p", "127.0.0.1:18089:80", "--name", cid, IMAGE, *HTTPD)
    lines = sorted(r.ok("port", cid).splitlines())
    assert lines[0] == "80/tcp -> 127.0.0.1:18089", lines  # -p's own binding stays; -P adds no second one
    assert len(lines) == 2 and lines[1].startswith("9999/udp -> 0.0.0.0:"), lines
    assert r.serves("http://127.0.0.1:18089/") == PAGE
    other = r.new_id("all")
    r.ok("run", "-d", "-P", "--name", other, IMAGE, *HTTPD)
    ports = {(p["container_port"], p["protocol"]): p["host_port"]
             for c in r.json("containers", "ls") if c["id"] == other for p in c["ports"]}
    assert set(ports) == {(80, "tcp"), (9999, "udp")} and all(ports.values())
    assert r.serves(f"http://127.0.0.1:{ports[80, 'tcp']}/") == PAGE
    r.fails("run", "--rm", "-P", "--net", "none", IMAGE, "true", words="does not go with --net none")


def test_a_named_network_is_in_use_while_a_container_is_on_it(clean: Rig) -> None:
    r = clean
    name = f"busy-{secrets.token_hex(3)}"
    r.ok("network", "create", "--subnet", "10.131.0.0/24", name)
    cid = r.new_id("onnet")
    r.ok("run", "-d", "--net", name, "--name", cid, IMAGE, "sleep", "600")
    [eth0] = r.json("containers", "info", cid)["network"]["interfaces"]
    assert eth0["network"] == name and eth0["addresses"][0].startswith("10.131.0.")
    [shown] = r.json("network", "inspect", name)
    assert shown["containers"] == [{"namespace": "default", "id": cid}]
    err = r.fails("network", "rm", name, words="in use")
    assert f"default/{cid}" in err
    assert name not in r.json("network", "prune")
    r.remove(cid)
    r.ids.remove(cid)
    assert r.ok("network", "rm", name) == f"{name}\n"


def test_dns_hosts_and_hostname_reach_the_container(clean: Rig) -> None:
    r = clean
    cid = r.new_id("dns")
    out = r.ok("run", "--rm", "--dns", "192.0.2.53", "--dns-search", "example.org", "--add-host", "db:10.1.2.3",
               "--hostname", "webhost", "--name", cid, IMAGE, "sh", "-c", "cat /etc/resolv.conf /etc/hosts; hostname")
    assert "nameserver 192.0.2.53" in out and "example.org" in out
    assert any(line.split()[:2] == ["10.1.2.3", "db"] for line in out.splitlines()), out
    assert out.splitlines()[-1] == "webhost"
    assert any("webhost" in line.split()[1:] for line in out.splitlines() if line[:1].isdigit()), out


def test_default_is_bridge_and_none_is_only_lo(clean: Rig) -> None:
    r = clean
    out = r.ok("run", "--rm", "--name", r.new_id("deflt"), IMAGE, "ip", "-o", "-4", "addr", "show", "eth0")
    assert " eth0 " in out and "inet " in out
    links = r.ok("run", "--rm", "--net", "none", "--name", r.new_id("none"), IMAGE, "ip", "-o", "link").splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]


def test_bad_flags_leave_nothing(clean: Rig) -> None:
    r = clean
    cid = r.new_id("bad")
    for argv, words in ((["-p", "70000:80"], "out of range"), (["-p", "80/icmp"], "not tcp or udp"),
                        (["-p", "300.1.1.1:80:80"], "not an IP address"), (["--net", "host", "-p", "80"], "--net host"),
                        (["--dns", "resolver"], "not an IP address"), (["--add-host", "db"], "want NAME:IP")):
        r.fails("run", "-d", *argv, "--name", cid, IMAGE, "true", words=words)
    assert cid not in r.container_ids()


def test_container_mode_shares_the_other_containers_network(clean: Rig) -> None:
    r = clean
    web = r.new_id("shared")
    r.ok("run", "-d", "--name", web, IMAGE, *HTTPD)
    [eth0] = r.json("containers", "info", web)["network"]["interfaces"]
    r.serves(f"http://{eth0['addresses'][0].split('/')[0]}:80/")  # its server is up
    # its localhost is this one's: the same network namespace
    out = r.ok("run", "--rm", "--net", f"container:{web}", "--name", r.new_id("joiner"), IMAGE,
               "wget", "-q", "-O", "-", "http://127.0.0.1:80/")
    assert out == PAGE
    r.fails("run", "--rm", "--net", f"container:{web}", "-p", "81:80", "--name", r.new_id("joinp"), IMAGE, "true",
            words=f"does not go with --net container:{web}")
    # a container without a running task has no network to join: refused, nothing left
    stopped = r.new_id("stopped")
    r.ok("containers", "create", "--name", stopped, IMAGE, "true")
    joiner = r.new_id("nojoin")
    r.fails("run", "--rm", "--net", f"container:{stopped}", "--name", joiner, IMAGE, "true", words=stopped)
    assert joiner not in r.container_ids()
