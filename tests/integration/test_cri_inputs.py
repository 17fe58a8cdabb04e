"""The CRI fed hostile values, as an outside adversary would (raw CRI calls, raw SPDY clients:
tests/cri_fuzz.py): each is refused with the code naming the caller's mistake and a message
without Python's words, writes nothing outside where it belongs, leaves nothing behind, and the
daemon keeps answering other clients. Found in this round:

- a localhost seccomp profile that is a FIFO blocked the event loop in read() (every client
  waited for ever); /dev/zero was read without end, a 64 MiB file whole; errors quoted
  "[Errno 21]";
- a DNS search domain or option holding a newline wrote the caller's `nameserver` line into the
  pod's resolv.conf; 1000 servers failed as "label key and value greater than maximum size";
- a log_path with `..` created the container's log outside the pod's log directory; a log path
  that was a FIFO wedged the pod's shim in open(2) (every container of the pod, and every create
  after it, timed out); a relative or `..` log_directory was taken;
- a port mapped twice was FAILED_PRECONDITION "already published by ... this container";
- streaming input a process does not read (stdin flooded into `sleep`) was queued in the daemon
  without bound; a client gone while its input waited left the exec running.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from tests.daemon import REPO
from tests.grpc_fuzz import PYTHON_WORDS
from tests.integration.test_cri_containers import BUSYBOX
from tests.integration.test_cri_streaming import NetnsRig, streaming_rig
from tests.waiting import wait_until

pytestmark = pytest.mark.root

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, EXISTS = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS


@pytest.fixture(scope="module")
def rig() -> Iterator[NetnsRig]:
    with streaming_rig() as r:
        yield r
        assert "Traceback" not in r.d.log(), r.d.log()[-5000:]


@pytest.fixture(scope="module")
def rt(rig: NetnsRig) -> Iterator[pb_grpc.RuntimeServiceStub]:
    # kubelet's receive limit (16 MiB of ExecSync output and then some), not grpc's 4 MiB
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(f"unix://{rig.d.address}", options=options) as ch:
        yield pb_grpc.RuntimeServiceStub(ch)


@pytest.fixture
def clean(rig: NetnsRig, rt: pb_grpc.RuntimeServiceStub) -> Iterator[NetnsRig]:
    yield rig
    for p in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id), timeout=60)
    assert rig.leftovers() == {"netns": [], "records": [], "containers": [], "veths": []}
    pod_files = rig.d.state / "cri" / "sandboxes"
    assert not pod_files.exists() or list(pod_files.iterdir()) == []
    exec_dir = rig.d.state / "cri" / "exec"
    assert not exec_dir.exists() or list(exec_dir.iterdir()) == []


def refused(call: Any, request: Any, code: grpc.StatusCode, words: str = "", timeout: float = 30) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=timeout)
    got, message = err.value.code(), err.value.details()
    assert got == code, (got, message[:500])
    assert not PYTHON_WORDS.search(message), message[:500]
    assert words in message, message[:500]
    return str(message)


def pod_cfg(rig: NetnsRig, name: str, **more: Any) -> pb.PodSandboxConfig:
    more.setdefault("log_directory", str(rig.tmp / f"logs-{name}-{secrets.token_hex(3)}"))
    return pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, uid=secrets.token_hex(6), namespace="in"),
                               **more)


def sec(**kw: Any) -> pb.LinuxPodSandboxConfig:
    return pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(**kw))


def localhost(path: str) -> pb.LinuxPodSandboxConfig:
    return sec(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=path))


def ctr_cfg(name: str, **more: Any) -> pb.ContainerConfig:
    base: dict[str, Any] = {"metadata": pb.ContainerMetadata(name=name), "image": pb.ImageSpec(image=BUSYBOX),
                            "command": ["sleep", "3600"], "log_path": f"{name}.log"}
    return pb.ContainerConfig(**{**base, **more})


def running_container(rt: pb_grpc.RuntimeServiceStub, rig: NetnsRig, pod: str, name: str) -> str:
    """A started `sleep` container (ctr_cfg) in a new pod (pod_cfg); its id."""
    pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg(rig, pod)), timeout=60).pod_sandbox_id
    cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr_cfg(name)),
                             timeout=60).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return str(cid)


def csec(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw))


def resources(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(**kw))


def test_pod_configs_with_hostile_values(clean: NetnsRig, rt: pb_grpc.RuntimeServiceStub) -> None:
    rig = clean
    fifo = rig.tmp / "profile.fifo"
    os.mkfifo(fifo)
    big = rig.tmp / "big.json"
    big.write_bytes(b" " * (8 << 20) + b"{}")
    text = rig.tmp / "profile.txt"
    text.write_text("not json")
    run = rt.RunPodSandbox
    cases = [
        (localhost(str(fifo)), "not a regular file"),  # answered at once: the loop never waits
        (sec(seccomp_profile_path="localhost//dev/zero"), "not a regular file"),
        (localhost(str(big)), "larger than"),
        (localhost("/tmp"), "not a regular file"),
        (localhost(str(text)), "not JSON"),
        (localhost("/etc/../etc/passwd"), "without '..'"),
        (sec(seccomp_profile_path="localhost/relative.json"), "absolute path"),
        (localhost(str(rig.tmp / "missing.json")), "No such file"),
    ]
    for linux, words in cases:
        refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "seccomp", linux=linux)), INVALID, words,
                timeout=10)
    for log_directory in ("relative/logs", "/tmp/../tmp/x", "/tmp/a\0b"):
        refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "logdir", log_directory=log_directory)),
                INVALID, "log_directory")
    injected = "nameserver 6.6.6.6"
    for dns in (pb.DNSConfig(searches=[f"a.example\n{injected}"]), pb.DNSConfig(options=[f"ndots:1\n{injected}"]),
                pb.DNSConfig(searches=["a b"]), pb.DNSConfig(servers=[f"1.1.1.1\n{injected}"]),
                pb.DNSConfig(servers=[f"10.0.{i // 250}.{i % 250}" for i in range(1000)])):
        refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "dns", dns_config=dns)), INVALID, "dns_config")
    host_net = pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))
    for sysctls, ctx, words in (({"vm.swappiness": "10"}, None, "not a namespaced sysctl"),
                                ({"kernel.panic": "1"}, None, "not a namespaced sysctl"),
                                ({"net/../../../sysrq-trigger": "h"}, None, "not a sysctl name"),
                                ({"net.ipv4.ip_forward": "1\n0"}, None, "newline"),
                                ({"kernel.hostname": "h"}, host_net, "UTS"),
                                ({"net.ipv4.ip_forward": "1"}, host_net, "network sysctls")):
        linux = pb.LinuxPodSandboxConfig(sysctls=sysctls, security_context=ctx)
        refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "sysctl", linux=linux)), INVALID, words)
    twice = [pb.PortMapping(container_port=80, host_port=18081)] * 2
    refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "ports", port_mappings=twice)), INVALID, "mapped twice")
    bad_ip = [pb.PortMapping(container_port=80, host_port=18082, host_ip="not-an-ip")]
    refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "ports", port_mappings=bad_ip)), INVALID, "host_ip")
    for port in (0, 70000):
        bad = [pb.PortMapping(container_port=port, host_port=18083)]
        refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "ports", port_mappings=bad)), INVALID, "1-65535")
    refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "ids", linux=sec(run_as_user=pb.Int64Value(value=2**40)))),
            INVALID, "run_as_user")
    refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "ids", linux=sec(supplemental_groups=range(70000)))),
            INVALID, "at most 65536")
    refused(run, pb.RunPodSandboxRequest(config=pod_cfg(rig, "hostname", hostname="a\n1.2.3.4 evil")), INVALID,
            "host name")
    assert rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items == []

    # Accepted: values that are odd but go nowhere (names are not paths; ids are the daemon's).
    odd = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="../../x", uid="../u", namespace="a/b"),
                              labels={"k\0": "v\0"}, log_directory=str(rig.tmp / "odd"),
                              dns_config=pb.DNSConfig(searches=["a.example"], options=["ndots:2"]))
    pod_id = run(pb.RunPodSandboxRequest(config=odd), timeout=60).pod_sandbox_id
    status = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=10)
    pid = json.loads(status.info["info"])["pid"]
    resolv = Path(f"/proc/{pid}/root/etc/resolv.conf").read_text()
    assert re.findall(r"^search .*$", resolv, re.M) == ["search a.example"], resolv
    assert dict(status.status.labels) == {"k\0": "v\0"}


def test_container_configs_with_hostile_values(clean: NetnsRig, rt: pb_grpc.RuntimeServiceStub) -> None:
    rig = clean
    cfg = pod_cfg(rig, "ctrs")
    pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id
    logs = Path(cfg.log_directory)
    logs.mkdir(parents=True, exist_ok=True)
    os.mkfifo(logs / "fifo.log")
    os.symlink("/etc/passwd", logs / "link.log")
    (logs / "dir.log").mkdir()
    escape = rig.tmp / f"escape-{secrets.token_hex(3)}.log"

    def create(config: pb.ContainerConfig) -> Any:
        return rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                                            sandbox_config=cfg), timeout=60)

    def refuse(config: pb.ContainerConfig, code: grpc.StatusCode, words: str) -> None:
        refused(lambda r, timeout: create(r), config, code, words)

    steady = create(ctr_cfg("steady")).container_id  # a neighbour in the pod: it keeps working throughout
    rt.StartContainer(pb.StartContainerRequest(container_id=steady), timeout=60)
    for log_path, words in ((os.path.relpath(escape, logs), "without '..'"), ("a\0b", "NUL"), (".", "file path"),
                            ("sub/", "file path"), ("fifo.log", "FIFO"), ("link.log", "symbolic link"),
                            ("dir.log", "directory")):
        refuse(ctr_cfg("logs", log_path=log_path), INVALID, words)
    assert not escape.exists()
    nul_cases = [ctr_cfg("nul", command=["sle\0ep", "1"]), ctr_cfg("nul", envs=[pb.KeyValue(key="A", value=b"b\0c")]),
                 ctr_cfg("nul", working_dir="/a\0b"),
                 ctr_cfg("nul", mounts=[pb.Mount(container_path="/x", host_path="/tmp/a\0b")]),
                 ctr_cfg("nul", devices=[pb.Device(container_path="/dev/x", host_path="/dev/nu\0ll")])]
    for config in nul_cases:
        refuse(config, INVALID, "NUL")
    for config, code, words in (
            (ctr_cfg("c", linux=csec(masked_paths=["relative"])), INVALID, "masked_paths"),
            (ctr_cfg("c", linux=csec(readonly_paths=["/a/../../proc/sysrq-trigger"])), INVALID, "readonly_paths"),
            (ctr_cfg("c", linux=resources(cpuset_cpus="999")), INVALID, "this host has only"),
            (ctr_cfg("c", linux=resources(cpuset_cpus="a-b\n")), INVALID, "not a list"),
            (ctr_cfg("c", linux=resources(cpuset_cpus="3-1")), INVALID, "not a list"),
            (ctr_cfg("c", linux=resources(cpu_shares=-5)), INVALID, "cpu_shares"),
            (ctr_cfg("c", linux=resources(memory_limit_in_bytes=4096)), INVALID, "minimum"),
            (ctr_cfg("c", linux=csec(run_as_user=pb.Int64Value(value=2**40))), INVALID, "run_as_user"),
            (ctr_cfg("c", linux=csec(supplemental_groups=range(70000))), INVALID, "at most 65536"),
            (ctr_cfg("c", linux=csec(run_as_username="nosuchuser")), None, "nosuchuser"),
            (ctr_cfg("c", mounts=[pb.Mount(container_path="/x", host_path=str(rig.tmp), propagation=99)]),  # type: ignore[arg-type]
             INVALID, "propagation"),
            (ctr_cfg("c", devices=[pb.Device(container_path="/dev/x", host_path="/dev/nosuch")]), INVALID, "device"),
            (ctr_cfg("c", devices=[pb.Device(container_path="/dev/x", host_path="/etc/passwd")]), INVALID,
             "not a character or block device"),
            (ctr_cfg("c", image=pb.ImageSpec(image="example.org/no/such:1")), NOT_FOUND, "pull it first"),
            (ctr_cfg("steady"), EXISTS, "reserved")):
        if code is None:  # whatever kind the image lookup says, a caller's mistake worded plainly
            with pytest.raises(grpc.RpcError) as err:
                create(config)
            assert err.value.code() in (INVALID, NOT_FOUND), err.value.details()
            assert not PYTHON_WORDS.search(err.value.details()), err.value.details()
        else:
            refuse(config, code, words)
    refused(rt.CreateContainer, pb.CreateContainerRequest(pod_sandbox_id="f" * 64, config=ctr_cfg("x")), NOT_FOUND)
    refused(rt.UpdateContainerResources, pb.UpdateContainerResourcesRequest(
        container_id=steady, linux=pb.LinuxContainerResources(cpuset_cpus="999")), INVALID, "this host has only")

    # A log path replaced by a FIFO between create and start: the start refuses it, the pod's
    # shim (shared by its containers) is not held in open(2).
    late = create(ctr_cfg("late")).container_id
    os.mkfifo(logs / "late.log")
    refused(rt.StartContainer, pb.StartContainerRequest(container_id=late), INVALID, "FIFO")
    done = rt.ExecSync(pb.ExecSyncRequest(container_id=steady, cmd=["echo", "still"], timeout=20), timeout=30)
    assert done.stdout == b"still\n"
    (logs / "late.log").unlink()
    rt.StartContainer(pb.StartContainerRequest(container_id=late), timeout=60)

    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
    refused(rt.CreateContainer, pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr_cfg("after")),
            PRECONDITION, "not ready")
    assert Path("/etc/passwd").read_text().startswith("root:")


def test_exec_sync_edges(clean: NetnsRig, rt: pb_grpc.RuntimeServiceStub) -> None:
    rig = clean
    cid = running_container(rt, rig, "execsync", "x")
    sync = rt.ExecSync
    big = sync(pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "head -c 40000000 /dev/zero"], timeout=60),
               timeout=90)
    assert len(big.stdout) == 16 << 20 and big.exit_code == 0  # capped, as containerd's
    t0 = time.monotonic()
    refused(sync, pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "4646"], timeout=1),
            grpc.StatusCode.DEADLINE_EXCEEDED, "timed out")
    assert time.monotonic() - t0 < 20
    assert "sleep 4646" not in sync(pb.ExecSyncRequest(container_id=cid, cmd=["ps"]), timeout=30).stdout.decode()
    assert sync(pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=2**62), timeout=30).exit_code == 0
    refused(sync, pb.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=-1), INVALID, "timeout")
    refused(sync, pb.ExecSyncRequest(container_id=cid, cmd=["ec\0ho"]), INVALID, "NUL")
    for cmd in (["no-such-command"], ["/etc"]):
        with pytest.raises(grpc.RpcError) as err:
            sync(pb.ExecSyncRequest(container_id=cid, cmd=cmd), timeout=30)
        assert err.value.code() in (INVALID, NOT_FOUND, PRECONDITION), (err.value.code(), err.value.details())
        assert not PYTHON_WORDS.search(err.value.details()), err.value.details()
    refused(sync, pb.ExecSyncRequest(container_id="f" * 64, cmd=["true"]), NOT_FOUND)


# -- the streaming server ------------------------------------------------------------------------

def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def client(rig: NetnsRig, mode: str, url: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(["nsenter", f"--net={rig.netns}", sys.executable, "-m", "tests.cri_fuzz", mode, url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.communicate(timeout=30)
        raise AssertionError(f"the {mode} client ended without a word")
    return proc, json.loads(line)


def in_container(rt: pb_grpc.RuntimeServiceStub, cid: str, text: str) -> bool:
    return text in rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["ps"]), timeout=30).stdout.decode()


def answers_quickly(rt: pb_grpc.RuntimeServiceStub) -> None:
    t0 = time.monotonic()
    rt.Version(pb.VersionRequest(), timeout=10)
    assert time.monotonic() - t0 < 2.0


def test_streaming_clients_that_flood_stall_or_vanish(clean: NetnsRig, rt: pb_grpc.RuntimeServiceStub) -> None:
    rig = clean
    cid = running_container(rt, rig, "stream", "s")
    daemon = rig.d.proc.pid

    # stdin flooded into a process that never reads it: the client is held back, the daemon's
    # memory is not its buffer; the client then vanishes and the exec goes with it.
    before = rss(daemon)
    url = rt.Exec(pb.ExecRequest(container_id=cid, cmd=["sleep", "4747"], stdin=True, stdout=True, stderr=True),
                  timeout=10).url
    proc, out = client(rig, "flood", url)
    try:
        assert out["stalled"], out  # held back: the input waits in the kernel's buffers
        assert rss(daemon) - before < 48 << 20, (rss(daemon) - before, out)
        answers_quickly(rt)
        assert in_container(rt, cid, "sleep 4747")
    finally:
        proc.communicate("\n", timeout=30)  # it closes its connection
    wait_until(lambda: not in_container(rt, cid, "sleep 4747"), timeout=30, what="the flooded exec to be killed")

    # `yes` into a client that reads nothing: bounded, and the daemon answers others meanwhile.
    before = rss(daemon)
    yes = ["sh", "-c", "while :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done # 5050"]
    url = rt.Exec(pb.ExecRequest(container_id=cid, cmd=yes, stdout=True, stderr=True), timeout=10).url
    proc, _ = client(rig, "hold", url)
    try:
        wait_until(lambda: in_container(rt, cid, "5050"), timeout=30, what="the writer to run")
        for _ in range(3):
            answers_quickly(rt)
        assert rss(daemon) - before < 48 << 20, rss(daemon) - before
    finally:
        proc.communicate("\n", timeout=30)
    wait_until(lambda: not in_container(rt, cid, "5050"), timeout=30, what="the unread exec to be killed")

    # garbage after the upgrade: the session ends, the exec with it (or it never started)
    url = rt.Exec(pb.ExecRequest(container_id=cid, cmd=["sleep", "4848"], stdout=True, stderr=True), timeout=10).url
    proc, out = client(rig, "garbage", url)
    proc.communicate("", timeout=30)
    wait_until(lambda: not in_container(rt, cid, "sleep 4848"), timeout=30, what="the garbage session's exec to go")

    # many sessions at once, each a token used once; the daemon stays responsive
    urls, clients = [], []
    try:
        for _ in range(20):
            urls.append(rt.Exec(pb.ExecRequest(container_id=cid, cmd=["sleep", "4949"], stdout=True, stderr=True),
                                timeout=10).url)
            clients.append(client(rig, "hold", urls[-1])[0])
        wait_until(lambda: rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["ps"]), timeout=30)
                   .stdout.decode().count("sleep 4949") == 20, timeout=60, what="20 sessions")
        answers_quickly(rt)
    finally:
        for c in clients:
            c.communicate("\n", timeout=60)
    wait_until(lambda: not in_container(rt, cid, "sleep 4949"), timeout=60, what="the 20 execs to be killed")
    for url in urls[:3]:  # spent
        probe = subprocess.run(["nsenter", f"--net={rig.netns}", sys.executable, "-m", "tests.cri_fuzz", "hold", url],
                               capture_output=True, text=True, input="\n", timeout=60, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        assert probe.returncode != 0 and "404" in probe.stderr, probe
