"""CRI pod sandboxes on dockyardd, driven by the real `crictl`: runp, pods, inspectp, stopp, rmp.

The daemon runs inside a network namespace this module pins (tests/daemon.py `pinned_netns`), so
the pods' bridge, veths and firewall rules stay there; the host's links and iptables must be
unchanged after the module. The sandbox image is a look-alike of registry.k8s.io/pause:3.10 built
from busybox (a shell that waits and exits on SIGTERM), imported into `k8s.io`: nothing is pulled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from supervisor.network.attachments import cni_container_id
from tests.ctr import ctr, ok
from tests.daemon import DaemonProcess, in_netns, pinned_netns, remove_base, start_daemon
from tests.images import build_image, oci_archive, tar_tree
from tests.registry import push_blobs, push_manifest, start_registry
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = pytest.mark.root

NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
CRICTL = Path("/work/shared/tools/cri/crictl")
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("iptables-save") \
        or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, iptables and busybox-static (scripts/install)",
                allow_module_level=True)

from tests.integration.test_network_cni import _host_firewall  # noqa: E402  (after the skip: it skips alike)

CRI_NS = "k8s.io"
PAUSE = "registry.k8s.io/pause:3.10"
# The pause look-alike: PID 1 of the pod, reaping (each `wait`) until SIGTERM ends it.
PAUSE_SCRIPT = "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n"
DEFAULT_SUBNET = ipaddress.ip_network("10.88.0.0/16")  # the daemon's default bridge in a fresh namespace


def pause_rootfs(tmp: Path) -> Path:
    root = make_busybox_rootfs(tmp / "pause-rootfs")
    (root / "pause").write_text(PAUSE_SCRIPT)
    (root / "pause").chmod(0o755)
    return root


def pause_archive(tmp: Path) -> bytes:
    image = build_image(PAUSE, [tar_tree(pause_rootfs(tmp))], config={"Entrypoint": ["/pause"], "Cmd": None})
    return oci_archive([image])


@dataclass
class Rig:
    d: DaemonProcess
    netns: Path
    tmp: Path
    pods: list[str] = field(default_factory=list)

    def crictl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        endpoint = f"unix://{self.d.address}"
        config = self.tmp / "crictl.yaml"  # our own (empty): never the machine's /etc/crictl.yaml
        config.touch()
        return subprocess.run([str(CRICTL), "--config", str(config), "--runtime-endpoint", endpoint,
                               "--image-endpoint", endpoint, "--timeout", "60s", *args],
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> str:
        return ok(self.crictl(*args))

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(args[0], "-o", "json", *args[1:]))

    def fails(self, *args: str) -> str:
        res = self.crictl(*args)
        if res.returncode == 0 and args[0] == "runp":
            self.pods.append(res.stdout.strip())  # made after all: the fixture removes it
        assert res.returncode != 0, f"{res.args} succeeded:\n{res.stdout}"
        assert "Traceback" not in res.stderr and "Error(" not in res.stderr, res.stderr
        return res.stderr

    def config_file(self, config: dict[str, Any]) -> str:
        path = self.tmp / f"pod-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(config))
        return str(path)

    def runp(self, config: dict[str, Any], *args: str) -> str:
        pod_id = self.ok("runp", *args, self.config_file(config)).strip()
        self.pods.append(pod_id)
        return pod_id

    def inspect(self, pod_id: str) -> Any:
        return self.json("inspectp", pod_id)

    def listed(self) -> dict[str, str]:
        return {p["id"]: p["state"] for p in self.json("pods")["items"]}

    def veths(self) -> list[str]:
        out = in_netns(self.netns, "ip", "-o", "link", "show", "type", "veth").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def firewall(self) -> str:
        return in_netns(self.netns, "iptables-save").stdout

    def leftovers(self) -> dict[str, list[str]]:
        def names(p: Path) -> list[str]:
            return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
        return {"netns": names(self.d.state / "netns"), "records": names(self.d.root / "networks" / "attachments"),
                "containers": ok(ctr(self.d, "containers", "ls", "-q", namespace=CRI_NS)).split(),
                "veths": self.veths()}


def pod_config(name: str, **more: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": secrets.token_hex(8), "attempt": 1},
            "log_directory": f"/tmp/dy-pods/{name}", "linux": {}, **more}


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    if not CRICTL.exists():
        pytest.fail(f"{CRICTL} is missing (see /work/shared/tools/cri/README.md)", pytrace=False)
    before = _host_firewall()
    links_before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    with pinned_netns() as ns, tempfile.TemporaryDirectory(prefix="dy-crisb-") as tmp:
        d = start_daemon(Path(tempfile.mkdtemp(prefix="dy-")), netns=ns)
        r = Rig(d, ns, Path(tmp))
        try:
            archive = Path(tmp) / "pause.tar"
            archive.write_bytes(pause_archive(Path(tmp)))
            ok(ctr(d, "images", "import", str(archive), namespace=CRI_NS))
            yield r
        finally:
            for pod in r.pods:
                r.crictl("rmp", "-f", pod)
            remove_base(r.d)
    assert _host_firewall() == before, "the host's firewall changed"
    links_after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [ln.split(":")[1] for ln in links_after.splitlines()] == \
        [ln.split(":")[1] for ln in links_before.splitlines()], "the host's links changed"


@pytest.fixture
def clean(rig: Rig) -> Iterator[Rig]:
    """Each test leaves no pod, container or network bookkeeping behind."""
    yield rig
    for pod in list(rig.pods):
        ok(rig.crictl("rmp", "-f", pod))
        rig.pods.remove(pod)
    assert rig.listed() == {}
    assert rig.leftovers() == {"netns": [], "records": [], "containers": [], "veths": []}


def pid_of(rig: Rig, pod_id: str) -> int:
    return int(rig.inspect(pod_id)["info"]["pid"])


def test_pods_run_reach_each_other_stop_and_go(clean: Rig) -> None:
    rig = clean
    a = rig.runp(pod_config("web", hostname="web-host", labels={"app": "web", "tier": "front"},
                            annotations={"note": "first"},
                            dns_config={"servers": ["192.0.2.53"], "searches": ["example.org"], "options": ["ndots:2"]},
                            port_mappings=[{"protocol": 0, "container_port": 80, "host_port": 18080}]))
    assert len(a) == 64 and all(c in "0123456789abcdef" for c in a)
    assert rig.listed() == {a: "SANDBOX_READY"}

    found = rig.inspect(a)
    status, info = found["status"], found["info"]
    assert status["id"] == a and status["state"] == "SANDBOX_READY"
    assert status["metadata"]["name"] == "web" and status["metadata"]["namespace"] == "default"
    assert status["metadata"]["attempt"] == 1
    assert status["labels"] == {"app": "web", "tier": "front"} and status["annotations"] == {"note": "first"}
    ip_a = ipaddress.ip_address(status["network"]["ip"])
    assert ip_a in DEFAULT_SUBNET, status["network"]
    options = status["linux"]["namespaces"]["options"]
    assert (options["network"], options["pid"], options["ipc"]) == ("POD", "POD", "POD"), options
    assert status["createdAt"].startswith("20"), status["createdAt"]  # crictl prints it as a time
    assert info["config"]["log_directory"] == "/tmp/dy-pods/web" and info["image"] == PAUSE
    spec = info["runtimeSpec"]
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"
    assert spec["annotations"]["io.kubernetes.cri.sandbox-name"] == "web"
    assert spec["annotations"]["io.kubernetes.cri.sandbox-log-directory"] == "/tmp/dy-pods/web"

    # the pause process: hostname, resolv.conf from dns_config, a clamped oom_score_adj
    pid = pid_of(rig, a)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sh", b"/pause"]
    host = subprocess.run(["nsenter", f"--uts=/proc/{pid}/ns/uts", "hostname"], capture_output=True, text=True)
    assert host.stdout.strip() == "web-host"
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert "nameserver 192.0.2.53" in resolv and "example.org" in resolv and "ndots:2" in resolv, resolv
    daemon_oom = int(Path(f"/proc/{rig.d.proc.pid}/oom_score_adj").read_text())
    assert int(Path(f"/proc/{pid}/oom_score_adj").read_text()) == max(-998, daemon_oom)

    # a second pod: another address; the two reach each other
    b = rig.runp(pod_config("db"))
    ip_b = ipaddress.ip_address(rig.inspect(b)["status"]["network"]["ip"])
    assert ip_b in DEFAULT_SUBNET and ip_b != ip_a
    netns_a = rig.inspect(a)["info"]["netNamespacePath"]
    ping = subprocess.run(["nsenter", f"--net={netns_a}", "/bin/busybox", "ping", "-c", "1", "-W", "5", str(ip_b)],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert len(rig.veths()) == 2

    # the port mapping and the pod's CNI rules are in the daemon's namespace while it runs
    cni_id = cni_container_id(CRI_NS, a)
    assert "--dport 18080" in rig.firewall() and cni_id in rig.firewall()

    ok(rig.crictl("stopp", a))
    assert rig.listed() == {a: "SANDBOX_NOTREADY", b: "SANDBOX_READY"}
    stopped = rig.inspect(a)["status"]
    assert stopped["state"] == "SANDBOX_NOTREADY" and stopped["network"]["ip"] == ""
    assert stopped["labels"] == {"app": "web", "tier": "front"}
    assert len(rig.veths()) == 1
    firewall = rig.firewall()
    assert cni_id not in firewall and "--dport 18080" not in firewall  # not "18080": a pod id may hold it
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the pause process to be gone")

    ok(rig.crictl("stopp", a))  # again: nothing to do, no error
    ok(rig.crictl("rmp", a))
    rig.pods.remove(a)
    assert rig.listed() == {b: "SANDBOX_READY"}
    assert_missing_is_no_error(rig, a)  # gone already: stop and remove still succeed

    # filters: by state, by label, by id prefix
    c = rig.runp(pod_config("cache", labels={"app": "cache"}))
    ok(rig.crictl("stopp", c))
    assert [p["id"] for p in rig.json("pods", "--state", "ready")["items"]] == [b]
    assert [p["id"] for p in rig.json("pods", "--state", "notready")["items"]] == [c]
    assert [p["id"] for p in rig.json("pods", "--label", "app=cache")["items"]] == [c]
    assert [p["id"] for p in rig.json("pods", "--id", b[:12])["items"]] == [b]
    assert rig.json("pods", "--name", "cache")["items"][0]["id"] == c


def assert_missing_is_no_error(rig: Rig, pod_id: str) -> None:
    """Stop and Remove of a pod that is not there succeed, as the CRI asks (critest's idempotence
    specs call the API directly: crictl itself asks for the pod's status first)."""
    async def calls() -> None:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            await stub.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            await stub.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    asyncio.run(calls())


def test_missing_pods(clean: Rig) -> None:
    missing = secrets.token_hex(32)
    assert_missing_is_no_error(clean, missing)
    message = clean.fails("inspectp", missing)
    assert "NotFound" in message and missing in message, message


def test_same_name_twice_is_refused(clean: Rig) -> None:
    config = pod_config("twice")
    clean.runp(config)
    assert "AlreadyExists" in clean.fails("runp", clean.config_file(config))
    assert len(clean.listed()) == 1


def test_host_network_pod(clean: Rig) -> None:
    pod = clean.runp(pod_config("hostnet", linux={"security_context": {"namespace_options": {"network": 2}}}))
    status = clean.inspect(pod)["status"]
    assert status["state"] == "SANDBOX_READY" and status["network"]["ip"] == ""
    assert status["linux"]["namespaces"]["options"]["network"] == "NODE"
    pid = pid_of(clean, pod)
    # the daemon's own network namespace (the pinned one standing in for the host): no veth made
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(clean.netns).st_ino
    assert clean.veths() == []


def test_cgroup_parent_and_security_context(clean: Rig) -> None:
    parent = f"/dy-kubepods-{secrets.token_hex(3)}/burstable/pod1"
    pod = clean.runp(pod_config("confined", linux={
        "cgroup_parent": parent, "sysctls": {"net.ipv4.ip_forward": "1"},
        "security_context": {"run_as_user": {"value": 65534}, "readonly_rootfs": True,
                             "namespace_options": {"pid": 2}}}))
    pid = pid_of(clean, pod)
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"{parent}/{pod}" in cgroup, cgroup
    assert Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0] == "65534"
    # PID namespace NODE: the pause process is not PID 1 of a namespace of its own
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino
    netns = clean.inspect(pod)["info"]["netNamespacePath"]
    forward = in_netns(Path(netns), "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    assert forward == "1"
    assert clean.inspect(pod)["status"]["linux"]["namespaces"]["options"]["pid"] == "NODE"


@pytest.mark.parametrize(("config", "args", "words"), [
    (pod_config("p", hostname="a/b"), (), "is not a host name"),
    (pod_config("p", port_mappings=[{"protocol": 2, "container_port": 80, "host_port": 8080}]), (),
     "SCTP is not supported"),
    (pod_config("p", port_mappings=[{"container_port": 0, "host_port": 8080}]), (), "within 1-65535"),
    (pod_config("p", linux={"cgroup_parent": "kubepods.slice:cri:x"}), (), "cgroupfs"),
    (pod_config("p", linux={"cgroup_parent": "/../escape"}), (), "cgroup_parent"),
    (pod_config("p", linux={"security_context": {"namespace_options": {"network": 3}}}), (), "TARGET"),
    (pod_config("p", linux={"security_context": {"seccomp_profile_path": "bogus"}}), (), "seccomp_profile_path"),
    (pod_config("p", linux={"security_context": {"namespace_options": {"network": 2}},
                            "sysctls": {"net.core.somaxconn": "1"}}), (), "network sysctls"),
    (pod_config("p"), ("--runtime", "kata"), "runtime handler 'kata' is not configured"),
])
def test_bad_configs_are_refused_cleanly(clean: Rig, config: dict[str, Any], args: tuple[str, ...],
                                         words: str) -> None:
    message = clean.fails("runp", *args, clean.config_file(config))
    assert "InvalidArgument" in message and words in message, message
    assert clean.listed() == {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restart_keeps_pods(rig: Rig, sig: int) -> None:
    running = rig.runp(pod_config("survivor", labels={"keep": "yes"}))
    stopped = rig.runp(pod_config("resting"))
    ip = rig.inspect(running)["status"]["network"]["ip"]
    ok(rig.crictl("stopp", stopped))
    assert rig.d.stop(sig) in (0, -signal.SIGKILL)  # the shims, and so the pods, outlive the daemon
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    assert rig.listed() == {running: "SANDBOX_READY", stopped: "SANDBOX_NOTREADY"}
    status = rig.inspect(running)["status"]
    assert status["network"]["ip"] == ip and status["labels"] == {"keep": "yes"}
    for pod in (running, stopped):
        ok(rig.crictl("rmp", "-f", pod))
        rig.pods.remove(pod)
    assert rig.listed() == {}
    assert rig.leftovers() == {"netns": [], "records": [], "containers": [], "veths": []}



def test_sandbox_image_is_pulled_when_missing() -> None:
    """On the host's namespace, a daemon without a default network: the configured sandbox image
    comes from a registry on 127.0.0.1 for a host-network pod; a pod network is refused clearly."""
    with start_registry() as reg, tempfile.TemporaryDirectory(prefix="dy-crisb-") as tmp:
        pause = build_image("cri/pause:9", [tar_tree(pause_rootfs(Path(tmp)))], config={"Entrypoint": ["/pause"]})
        push_blobs(reg.url, "cri/pause", {d: b for d, b in pause.blobs.items() if d != pause.manifest_digest})
        push_manifest(reg.url, "cri/pause", "9", pause.manifest, "application/vnd.oci.image.manifest.v1+json")
        base = Path(tempfile.mkdtemp(prefix="dy-"))
        (base / "config.toml").write_text(f'[cri]\nsandbox_image = "{reg.host}/cri/pause:9"\n')
        d = start_daemon(base)
        r = Rig(d, Path("/proc/self/ns/net"), Path(tmp))
        try:
            message = r.fails("runp", r.config_file(pod_config("needs-net")))
            assert "FailedPrecondition" in message and "no default network" in message, message
            pod = r.runp(pod_config("host", linux={"security_context": {"namespace_options": {"network": 2}}}))
            assert r.inspect(pod)["status"]["state"] == "SANDBOX_READY"
            assert r.inspect(pod)["info"]["image"] == f"{reg.host}/cri/pause:9"
            assert [i["repoTags"] for i in r.json("images")["images"]] == [[f"{reg.host}/cri/pause:9"]]
            ok(r.crictl("rmp", "-f", pod))
            r.pods.remove(pod)
            assert r.listed() == {}
        finally:
            for pod in r.pods:
                r.crictl("rmp", "-f", pod)
            remove_base(d)


def test_failed_start_leaves_nothing(clean: Rig) -> None:
    """The sandbox's task cannot start (a sysctl the kernel does not have): the error says so, and
    the container, snapshot, network namespace and veth made for it are gone again."""
    message = clean.fails("runp", clean.config_file(pod_config("doomed", linux={
        "sysctls": {"net.ipv4.no_such_setting": "1"}})))
    assert "no_such_setting" in message, message
    assert clean.listed() == {}
