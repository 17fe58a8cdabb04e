"""CRI containers on dockyardd, driven by the real `crictl`: create, start, ps, inspect, logs,
exec, stop, rm inside pods (runp, stopp, rmp), with one daemon for the module.

The daemon runs inside a network namespace this module pins (as test_cri_sandbox.py), with the
pause look-alike and two busybox images imported into `k8s.io`: nothing is pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from tests.cgroupfs import cgroup_dir
from tests.ctr import ctr, ok
from tests.daemon import pinned_netns, remove_base, start_daemon
from tests.images import Image, build_image, oci_archive, tar_tree
from tests.integration.test_cri_sandbox import CRI_NS, CRICTL, Rig, pause_archive, pod_config
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = pytest.mark.root

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
ECHOER = "example.org/cri/echoer:1"  # an image with an entrypoint and a default argument
POLITE = "example.org/cri/polite:1"  # an image whose StopSignal is SIGINT
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] .*$")


class CriRig(Rig):
    containers: list[str]

    def create(self, pod: str, pod_cfg: dict[str, Any], config: dict[str, Any]) -> str:
        cid = self.ok("create", pod, self.config_file(config), self.config_file(pod_cfg)).strip()
        self.containers.append(cid)
        return cid

    def run(self, pod: str, pod_cfg: dict[str, Any], config: dict[str, Any]) -> str:
        cid = self.create(pod, pod_cfg, config)
        self.ok("start", cid)
        return cid

    def status(self, cid: str) -> Any:
        return self.json("inspect", cid)["status"]

    def state(self, cid: str) -> str:
        return str(self.status(cid)["state"])

    def ps(self, *args: str) -> list[str]:
        return [c["id"] for c in self.json("ps", "-a", *args)["containers"]]

    def remove_pods(self) -> None:
        """Every pod this rig ran goes (`crictl rmp -f`), their containers with them."""
        for p in list(self.pods):
            self.ok("rmp", "-f", p)
            self.pods.remove(p)
        self.containers.clear()
        assert self.ps() == []


def container(name: str, image: str = BUSYBOX, **more: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "image": {"image": image}, "log_path": f"{name}.log", "linux": {}, **more}


def pod(name: str, tmp: Path, **more: Any) -> dict[str, Any]:
    cfg = pod_config(name, **more)
    cfg["log_directory"] = str(tmp / f"logs-{name}-{secrets.token_hex(3)}")
    return cfg


def inode(path: str) -> int:
    return os.stat(path).st_ino


R = TypeVar("R", bound=CriRig)


@contextlib.contextmanager
def cri_rig(kind: type[R], prefix: str, images: Callable[[Path], list[Image]], config: str = "") -> Iterator[R]:
    """A daemon in a network namespace of its own with the pause look-alike and `images(busybox
    root)` imported into k8s.io; its pods removed and the daemon gone at the end. `config`: the
    daemon's config file (TOML)."""
    if not CRICTL.exists():
        pytest.fail(f"{CRICTL} is missing (see /work/shared/tools/cri/README.md)", pytrace=False)
    with pinned_netns() as ns, tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        base = Path(tempfile.mkdtemp(prefix="dy-"))
        (base / "config.toml").write_text(config)
        d = start_daemon(base, netns=ns)
        r = kind(d, ns, Path(tmp))
        r.containers = []
        try:
            root = make_busybox_rootfs(Path(tmp) / "busybox")
            for name, blob in (("pause", pause_archive(Path(tmp))), ("images", oci_archive(images(root)))):
                archive = Path(tmp) / f"{name}.tar"
                archive.write_bytes(blob)
                ok(ctr(d, "images", "import", str(archive), namespace=CRI_NS))
            yield r
        finally:
            for p in r.pods:
                r.crictl("rmp", "-f", p)
            remove_base(r.d)


def _images(root: Path) -> list[Image]:
    with (root / "etc" / "group").open("a") as f:
        f.write("extra:x:50000:user\n")  # a group that lists `user` (uid 1000)
    return [build_image(BUSYBOX, [tar_tree(root)]),
            build_image(ECHOER, [tar_tree(root)], config={"Entrypoint": ["/bin/echo", "from-entrypoint"],
                                                          "Cmd": ["default-arg"], "WorkingDir": "/tmp",
                                                          "Env": ["PATH=/bin", "FROM_IMAGE=1"]}),
            build_image(POLITE, [tar_tree(root)], config={"StopSignal": "SIGINT"})]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-cric-", _images) as r:
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    removed_all(rig)


def removed_all(rig: CriRig) -> None:
    """The rig's pods removed: no pod, container, pod file or network bookkeeping is left."""
    rig.remove_pods()
    assert rig.listed() == {}
    assert rig.leftovers() == {"netns": [], "records": [], "containers": [], "veths": []}
    pod_files = rig.d.state / "cri" / "sandboxes"
    assert not pod_files.exists() or list(pod_files.iterdir()) == []
    # each pod's shim exited with its last container (the socket goes when the shim does)
    wait_until(lambda: not list((rig.d.state / "tasks").glob(".dockyard-shim/group-*.sock")),
               what="the pods' shims to exit")


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_container_lifecycle_in_a_pod(clean: CriRig) -> None:
    rig = clean
    volume = rig.tmp / f"vol-{secrets.token_hex(3)}"
    volume.mkdir()
    (volume / "data").write_text("from the host\n")
    parent = f"/dy-kubepods-{secrets.token_hex(3)}/burstable/pod1"
    pcfg = pod("web", rig.tmp, hostname="web-host", linux={"cgroup_parent": parent})
    p = rig.runp(pcfg)
    cfg = container("app", command=["sh", "-c"],
                    args=["echo hello; echo oops >&2; echo $GREETING; pwd; id -u; sleep 3600"],
                    envs=[{"key": "GREETING", "value": "hi there"}], working_dir="/srv",
                    labels={"tier": "front"}, annotations={"note": "first"},
                    mounts=[{"container_path": "/data", "host_path": str(volume), "readonly": True}],
                    linux={"resources": {"memory_limit_in_bytes": 64 << 20, "cpu_shares": 512,
                                         "cpu_quota": 50000, "cpu_period": 100000},
                           "security_context": {"run_as_user": {"value": 1000},
                                                "namespace_options": {"pid": 1}}})
    cid = rig.create(p, pcfg, cfg)
    assert len(cid) == 64
    assert rig.state(cid) == "CONTAINER_CREATED"
    ok(ctr(rig.d, "containers", "info", cid, namespace=CRI_NS))  # a containerd container of `k8s.io`
    rig.ok("start", cid)
    assert rig.ps("--state", "running") == [cid]

    found = rig.json("inspect", cid)
    status, info = found["status"], found["info"]
    assert status["state"] == "CONTAINER_RUNNING" and status["metadata"]["name"] == "app"
    assert status["labels"] == {"tier": "front"} and status["annotations"] == {"note": "first"}
    assert status["image"]["image"] == BUSYBOX and status["imageRef"].startswith("sha256:")
    log_path = Path(pcfg["log_directory"]) / "app.log"
    assert status["logPath"] == str(log_path)
    assert status["mounts"][0]["containerPath"] == "/data" and status["mounts"][0]["readonly"] is True
    assert status["startedAt"].startswith("20")
    pid, pause = int(info["pid"]), int(rig.inspect(p)["info"]["pid"])

    # the pod's namespaces: network, IPC, UTS shared with the pause process; PID its own (CONTAINER)
    for ns in ("net", "ipc", "uts"):
        assert inode(f"/proc/{pid}/ns/{ns}") == inode(f"/proc/{pause}/ns/{ns}"), ns
    assert inode(f"/proc/{pid}/ns/pid") != inode(f"/proc/{pause}/ns/pid")
    assert inode(f"/proc/{pid}/ns/mnt") != inode(f"/proc/{pause}/ns/mnt")

    # the log, in the CRI format, as crictl reads it
    wait_until(lambda: len(log_lines(log_path)) >= 5, what="the container's output in its log")
    lines = log_lines(log_path)
    assert all(RECORD.match(line) for line in lines), lines
    assert any(line.endswith(" stdout F hello") for line in lines) and \
        any(line.endswith(" stderr F oops") for line in lines), lines
    res = rig.crictl("logs", cid)
    assert res.stdout.splitlines() == ["hello", "hi there", "/srv", "1000"] and res.stderr.strip() == "oops", res

    # exec: output, exit code, and what the container sees
    assert rig.ok("exec", "-s", cid, "cat", "/etc/hostname").strip() == "web-host"
    assert rig.ok("exec", "-s", cid, "hostname").strip() == "web-host"
    assert rig.ok("exec", "-s", cid, "cat", "/data/data").strip() == "from the host"  # (crictl adds newlines)
    res = rig.crictl("exec", "-s", cid, "touch", "/data/nope")
    assert res.returncode != 0 and "Read-only file system" in res.stderr + res.stdout, res
    assert "nameserver" in rig.ok("exec", "-s", cid, "cat", "/etc/resolv.conf")
    res = rig.crictl("exec", "-s", cid, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert res.returncode != 0 and "exited with 4: err" in res.stderr, res
    assert exec_sync(rig, cid, ["sh", "-c", "echo out; echo err >&2; exit 4"]) == (b"out\n", b"err\n", 4)
    # /dev/shm is the pod's: what the container writes the pause process sees
    rig.ok("exec", "-s", cid, "sh", "-c", "echo shared > /dev/shm/marker")
    assert Path(f"/proc/{pause}/root/dev/shm/marker").read_text() == "shared\n"

    # linux resources in the container's cgroup, under the pod's cgroup parent (v1 or v2)
    memory, cpu = cgroup_dir(pid, "memory"), cgroup_dir(pid, "cpu")
    assert str(memory).endswith(f"{parent}/{cid}") and str(cpu).endswith(f"{parent}/{cid}"), (memory, cpu)
    if (memory / "memory.max").exists():
        assert (memory / "memory.max").read_text().strip() == str(64 << 20)
        assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (cpu / "cpu.shares").read_text().strip() == "512"

    # stop: SIGTERM (ignored by PID 1 without a handler), SIGKILL after the timeout
    rig.ok("stop", "--timeout", "1", cid)
    stopped = rig.status(cid)
    assert stopped["state"] == "CONTAINER_EXITED" and stopped["exitCode"] == 137 and stopped["reason"] == "Error"
    assert stopped["finishedAt"].startswith("20")
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    rig.ok("stop", cid)  # again: no error
    assert rig.crictl("logs", cid).stdout.splitlines()[0] == "hello"  # the log outlives the process
    rig.ok("rm", cid)
    assert rig.ps() == []
    assert_missing_is_no_error(rig, cid)
    assert ok(ctr(rig.d, "containers", "ls", "-q", namespace=CRI_NS)).split() == [p]


def test_exit_codes_and_reasons(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("jobs", rig.tmp)
    p = rig.runp(pcfg)
    failing = rig.run(p, pcfg, container("fails", command=["sh", "-c", "echo bye; exit 3"]))
    done = rig.run(p, pcfg, container("done", command=["true"]))
    wait_until(lambda: rig.state(failing) == "CONTAINER_EXITED" and rig.state(done) == "CONTAINER_EXITED",
               what="both containers to exit")
    status = rig.status(failing)
    assert (status["exitCode"], status["reason"]) == (3, "Error")
    assert status["finishedAt"] >= status["startedAt"]
    # As containerd's CRI at the exit: the exit is recorded and the task, with its shim, goes.
    wait_until(lambda: not {failing, done} & set(ok(ctr(rig.d, "tasks", "ls", "-q", namespace=CRI_NS)).split()),
               what="the exited containers' tasks to be deleted")
    assert (rig.status(failing)["exitCode"], rig.status(failing)["reason"]) == (3, "Error")
    assert (rig.status(done)["exitCode"], rig.status(done)["reason"]) == (0, "Completed")
    res = rig.crictl("start", failing)  # an exited container cannot start again
    assert res.returncode != 0 and "not CREATED" in res.stderr, res
    rig.ok("stop", failing)  # records the exit and frees the task: the status stays
    assert (rig.status(failing)["exitCode"], rig.status(failing)["reason"]) == (3, "Error")
    assert rig.crictl("logs", failing).stdout == "bye\n"

    # the OOM killer: reason OOMKilled, before and after the stop frees the task
    hog = rig.run(p, pcfg, container("hog", command=["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                                     linux={"resources": {"memory_limit_in_bytes": 32 << 20}}))
    wait_until(lambda: rig.state(hog) == "CONTAINER_EXITED", what="the memory hog to be killed")
    assert (rig.status(hog)["exitCode"], rig.status(hog)["reason"]) == (137, "OOMKilled")
    rig.ok("stop", hog)
    assert (rig.status(hog)["exitCode"], rig.status(hog)["reason"]) == (137, "OOMKilled")


def test_image_entrypoint_and_defaults(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("echo", rig.tmp)
    p = rig.runp(pcfg)
    plain = rig.run(p, pcfg, container("plain", ECHOER))
    args = rig.run(p, pcfg, container("args", ECHOER, args=["given", "args"]))
    env = rig.run(p, pcfg, container("env", ECHOER, command=["sh", "-c", "echo $FROM_IMAGE $MINE; pwd"],
                                     envs=[{"key": "MINE", "value": "2"}]))
    tty = rig.run(p, pcfg, container("tty", command=["sh", "-c", "test -t 1 && echo is-a-tty"], tty=True))
    by_name = rig.run(p, pcfg, container("by-name", command=["sh", "-c", "id -u; id -G"], linux={
        "security_context": {"run_as_username": "user"}}))
    by_uid = rig.run(p, pcfg, container("by-uid", command=["sh", "-c", "id -u; id -G"], linux={
        "security_context": {"run_as_user": {"value": 1000}, "supplemental_groups": [7]}}))
    wait_until(lambda: {rig.state(c) for c in (plain, args, env, tty, by_name, by_uid)} == {"CONTAINER_EXITED"},
               what="the containers to exit")
    # a user's primary group from /etc/passwd, its groups from /etc/group, as under containerd
    assert rig.crictl("logs", by_name).stdout == "1000\n1000 50000\n"
    assert rig.crictl("logs", by_uid).stdout == "1000\n1000 7 50000\n"
    assert rig.crictl("logs", tty).stdout.strip() == "is-a-tty"
    assert rig.status(tty)["exitCode"] == 0
    assert rig.crictl("logs", plain).stdout == "from-entrypoint default-arg\n"
    assert rig.crictl("logs", args).stdout == "from-entrypoint given args\n"
    assert rig.crictl("logs", env).stdout == "1 2\n/tmp\n"


def test_filters_and_pod_stop_and_remove(clean: CriRig) -> None:
    rig = clean
    a_cfg, b_cfg = pod("a", rig.tmp), pod("b", rig.tmp)
    a, b = rig.runp(a_cfg), rig.runp(b_cfg)
    sleeper = ["sleep", "3600"]
    a1 = rig.run(a, a_cfg, container("one", command=sleeper, labels={"app": "x"}))
    a2 = rig.create(a, a_cfg, container("two", command=sleeper, labels={"app": "y"}))
    b1 = rig.run(b, b_cfg, container("one", command=sleeper, labels={"app": "x"}))
    assert set(rig.ps()) == {a1, a2, b1}
    assert set(rig.ps("--pod", a)) == {a1, a2}
    assert set(rig.ps("--label", "app=x")) == {a1, b1}
    assert rig.ps("--state", "created") == [a2]
    assert set(rig.ps("--state", "running")) == {a1, b1}
    assert rig.ps("--id", a1[:12]) == [a1]
    assert rig.ps("--pod", b, "--label", "app=x") == [b1]
    # the same name again in the same pod is refused
    res = rig.crictl("create", a, rig.config_file(container("one", command=sleeper)), rig.config_file(a_cfg))
    assert res.returncode != 0 and "AlreadyExists" in res.stderr, res
    # a PID namespace shared with the pod (POD, the CRI's default)
    shared = rig.run(a, a_cfg, container("pidshare", command=sleeper))
    pause_a = int(rig.inspect(a)["info"]["pid"])
    pid = int(rig.json("inspect", shared)["info"]["pid"])
    assert inode(f"/proc/{pid}/ns/pid") == inode(f"/proc/{pause_a}/ns/pid")

    # stopping a pod stops its containers; removing it removes them
    rig.ok("stopp", a)
    states = {c["id"]: c["state"] for c in rig.json("ps", "-a")["containers"]}
    assert states == {a1: "CONTAINER_EXITED", a2: "CONTAINER_CREATED", shared: "CONTAINER_EXITED",
                      b1: "CONTAINER_RUNNING"}, states
    res = rig.crictl("start", a2)
    assert res.returncode != 0 and "not ready" in res.stderr, res
    rig.ok("rmp", a)
    rig.pods.remove(a)
    assert rig.ps() == [b1]
    assert sorted(ok(ctr(rig.d, "containers", "ls", "-q", namespace=CRI_NS)).split()) == sorted([b, b1])


def test_exec_timeout_kills_the_process(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("slow", rig.tmp)
    p = rig.runp(pcfg)
    cid = rig.run(p, pcfg, container("c", command=["sleep", "3600"]))
    res = rig.crictl("exec", "-s", "--timeout", "1", cid, "sleep", "4242")
    assert res.returncode != 0 and "DeadlineExceeded" in res.stderr, res
    assert "Traceback" not in res.stderr
    ps = rig.ok("exec", "-s", cid, "ps")
    assert "4242" not in ps, ps  # killed at the timeout, not left running


def exec_sync(rig: Rig, cid: str, cmd: list[str]) -> tuple[bytes, bytes, int]:
    async def call() -> tuple[bytes, bytes, int]:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            resp = await api_pb2_grpc.RuntimeServiceStub(ch).ExecSync(
                api_pb2.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=30))
            return resp.stdout, resp.stderr, resp.exit_code
    return asyncio.run(call())


def assert_missing_is_no_error(rig: Rig, cid: str) -> None:
    """Stop and Remove of a container that is not there succeed, as the CRI asks (critest's
    idempotence specs); its status is NotFound."""
    async def calls() -> None:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            await stub.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=1))
            await stub.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value
    asyncio.run(calls())


def test_missing_and_bad_input(clean: CriRig) -> None:
    rig = clean
    assert_missing_is_no_error(rig, secrets.token_hex(32))
    pcfg = pod("bad", rig.tmp)
    missing_pod = secrets.token_hex(32)

    async def calls() -> list[tuple[grpc.StatusCode, str]]:
        out = []
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            good = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"),
                                           image=api_pb2.ImageSpec(image=BUSYBOX))
            for pod_id, config in ((missing_pod, good),
                                   (p, api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"))),
                                   (p, api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"),
                                                               image=api_pb2.ImageSpec(image="no/such:image"))),
                                   (p, api_pb2.ContainerConfig(image=api_pb2.ImageSpec(image=BUSYBOX)))):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config))
                out.append((err.value.code(), err.value.details() or ""))
        return out

    p = rig.runp(pcfg)
    results = asyncio.run(calls())
    assert [code for code, _ in results] == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT], results
    assert missing_pod in results[0][1] and "image must not be empty" in results[1][1], results
    assert "no/such:image" in results[2][1] and "metadata.name" in results[3][1], results
    for _, message in results:
        assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b|Traceback", message), message
    message = rig.fails("inspect", secrets.token_hex(32))
    assert "NotFound" in message, message
    assert rig.ps() == []
    assert ok(ctr(rig.d, "containers", "ls", "-q", namespace=CRI_NS)).split() == [p]


def test_log_format_is_what_crictl_reads(clean: CriRig) -> None:
    """Long lines are split into P records of 16 KiB and crictl joins them again."""
    rig = clean
    pcfg = pod("long", rig.tmp)
    p = rig.runp(pcfg)
    cid = rig.run(p, pcfg, container("long", command=["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a; echo"]))
    wait_until(lambda: rig.state(cid) == "CONTAINER_EXITED", what="the container to exit")
    lines = log_lines(Path(pcfg["log_directory"]) / "long.log")
    assert [line.split(" ")[2] for line in lines] == ["P", "P", "F"], [line[:60] for line in lines]
    assert rig.crictl("logs", cid).stdout == "a" * 40000 + "\n"


def test_daemon_kill_keeps_containers(clean: CriRig) -> None:
    """kill -9 of the daemon mid-life: the shims keep the containers running; the new daemon
    reports them as they were (states, exit, log) and can exec, stop and remove them."""
    rig = clean
    pcfg = pod("survivor", rig.tmp)
    p = rig.runp(pcfg)
    running = rig.run(p, pcfg, container("runs", command=["sh", "-c", "echo before; sleep 3600"]))
    exited = rig.run(p, pcfg, container("exits", command=["sh", "-c", "exit 5"]))
    created = rig.create(p, pcfg, container("waits", command=["true"]))
    wait_until(lambda: rig.state(exited) == "CONTAINER_EXITED", what="the container to exit")
    pid = int(rig.json("inspect", running)["info"]["pid"])
    started = rig.status(running)["startedAt"]
    assert rig.d.stop(9) in (0, -9)
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    states = {c["id"]: c["state"] for c in rig.json("ps", "-a")["containers"]}
    assert states == {running: "CONTAINER_RUNNING", exited: "CONTAINER_EXITED", created: "CONTAINER_CREATED"}
    assert int(rig.json("inspect", running)["info"]["pid"]) == pid and rig.status(running)["startedAt"] == started
    assert rig.status(exited)["exitCode"] == 5
    assert rig.crictl("logs", running).stdout == "before\n"
    assert rig.ok("exec", "-s", running, "echo", "still here").strip() == "still here"
    rig.ok("start", created)
    wait_until(lambda: rig.state(created) == "CONTAINER_EXITED", what="the late container to run and exit")
    rig.ok("stop", "--timeout", "0", running)
    assert rig.state(running) == "CONTAINER_EXITED"


def test_stats_and_resource_updates(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("measured", rig.tmp)
    p = rig.runp(pcfg)
    busy = rig.run(p, pcfg, container("busy", command=["sh", "-c", "dd if=/dev/zero of=/tmp/blob bs=1M count=8; "
                                                       "while :; do :; done"], labels={"m": "yes"}))
    idle = rig.create(p, pcfg, container("idle", command=["true"]))
    wait_until(lambda: rig.ok("exec", "-s", busy, "ls", "/tmp").strip() == "blob", what="the blob to be written")

    def busy_stats() -> dict[str, Any]:
        items = rig.json("stats", "--id", busy)["stats"]
        assert [s["attributes"]["id"] for s in items] == [busy], items
        return dict(items[0])

    wait_until(lambda: int(busy_stats()["cpu"]["usageCoreNanoSeconds"]["value"]) > 10_000_000,
               what="the busy loop to use CPU time")
    stats = busy_stats()
    assert stats["attributes"]["labels"] == {"m": "yes"} and stats["attributes"]["metadata"]["name"] == "busy"
    assert int(stats["memory"]["workingSetBytes"]["value"]) > 0
    assert int(stats["writableLayer"]["usedBytes"]["value"]) >= 8 << 20  # the blob, in the container's snapshot
    assert [s["attributes"]["id"] for s in rig.json("stats", "--label", "m=yes")["stats"]] == [busy]
    assert idle not in [s["attributes"]["id"] for s in rig.json("stats")["stats"]]  # not running: no cgroup

    pid = int(rig.json("inspect", busy)["info"]["pid"])
    rig.ok("update", "--memory", str(96 << 20), "--cpu-quota", "20000", "--cpu-period", "100000", busy)
    memory, cpu = cgroup_dir(pid, "memory"), cgroup_dir(pid, "cpu")
    if (memory / "memory.max").exists():
        assert (memory / "memory.max").read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.max").read_text().split() == ["20000", "100000"]
    else:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "20000"
    info = rig.json("inspect", busy)["info"]
    assert info["runtimeSpec"]["linux"]["resources"]["memory"] == {"limit": 96 << 20}
    res = rig.crictl("update", "--memory", "-5", busy)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res
    rig.ok("stop", "--timeout", "0", busy)


def test_stop_signal_and_devices(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("polite", rig.tmp)
    p = rig.runp(pcfg)
    script = "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 1 & wait $!; done"
    cid = rig.run(p, pcfg, container("c", POLITE, command=["sh", "-c", script],
                                     devices=[{"container_path": "/dev/mynull", "host_path": "/dev/null",
                                               "permissions": "rw"}]))
    wait_until(lambda: rig.crictl("logs", cid).stdout == "ready\n", what="the trap to be set")
    assert rig.ok("exec", "-s", cid, "sh", "-c", "echo x > /dev/mynull && echo wrote").strip() == "wrote"
    rig.ok("stop", "--timeout", "30", cid)  # SIGINT, the image's: the trap answers, no SIGKILL needed
    status = rig.status(cid)
    assert (status["exitCode"], status["reason"]) == (7, "Error"), status
    assert rig.crictl("logs", cid).stdout == "ready\ngot-int\n"
