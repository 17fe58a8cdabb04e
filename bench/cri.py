"""Kubernetes' CRI: dockyardd vs containerd 1.6.20's CRI plugin (runc), driven by a Python gRPC client.

    python3 bench/cri.py [--rounds 20] [--pods 100] [--batch-rounds 1] [--only dockyardd|containerd] [--ksm]
                         [--pods-per-shim N] [--json FILE]

(a) RunPodSandbox + CreateContainer + StartContainer latency of one pod of one container (then
    stopped and removed, untimed), the daemons taking turns round by round (order flipping); the
    median of each of the three calls too;
(b) --pods pods of one container each started one after another (timed), then all stopped and
    removed (timed too), --batch-rounds rounds taking turns likewise;
(c) memory per pod while (b)'s pods run: PSS and RSS (/proc/<pid>/smaps_rollup) of the pod's shims
    and its pause process, summed over the daemon's shims and pause processes and divided by the
    pods. The workload (`sleep`) is the same on both and left out. Dockyard's shim zygote (one for
    the daemon, the shims are forked from it and share its pages) is counted in, as a shim. A pod's
    containers share its shim on both sides (the sandbox id groups them); Dockyard's pods share
    shims too, 8 a shim by default (`[cri] pods_per_shim`, --pods-per-shim). With --ksm, on a host whose
    ksmd is off, measured again once ksmd (turned on for it, scanning 1000 pages a batch, the
    host's settings back after) has gone over every mergeable page twice: Dockyard's shims offer
    the pages they copied from the zygote (shim.zygote.offer_to_ksm), containerd's offer nothing;
(d) while (b)'s pods run, kubelet's status pass: ListPodSandbox and ListContainers, then
    PodSandboxStatus and ContainerStatus of every pod and container (the median of 3 passes): what
    a node pays per relist, growing with the pods it runs.

The client is the generated CRI stubs (dockyard_api/cri/runtime/v1) over the daemon's unix socket:
no crictl process start in the numbers. Both daemons run at once in one network namespace made for
the run (entered with `nsenter --net=`, never the host's) and each in a private IPC namespace; both
get the same look-alike images (tests/cri_mirror.py's pause and busybox, imported with
`ctr -n k8s.io images import`), and the same pause image name as their sandbox image. containerd
gets a bridge conflist of its own with the plugins of Dockyard's default network (bridge with
host-local IPAM data under the temp dir, portmap, firewall with the same-bridge policy) and
`restrict_oom_score_adj = true` (the host withholds CAP_SYS_RESOURCE; ../shared/tools/cri/README.md).
Pods get a cgroup parent named for the run. At the end every pod, both daemons and their shims (by
PID), mounts, cgroups, the namespace, libcni cache files named for our network and the temp dirs are
removed; the host's iptables-save and links are compared before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from bench.net import interrupted, iptables_snapshot, remove_cgroups
from bench.rounds import take_turns
from dockyard_api.cri.runtime.v1 import api_pb2 as cri
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as cri_grpc
from tests import ksm
from tests.containerd import stop as stop_process
from tests.containerd import wait_socket
from tests.cri_mirror import busybox_layer, mirror_image, pause_layer
from tests.ctr import ctr, ok
from tests.daemon import (
    pinned_netns,
    processes_in,
    processes_mentioning,
    reap_leftovers,
    remove_base,
    start_daemon,
    stopping_new_zygotes,
)
from tests.images import oci_archive

PAUSE = "registry.k8s.io/pause:3.6"  # the sandbox image of both (containerd 1.6's default)
IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
CNI_PLUGINS = Path("/usr/lib/cni")
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache: containerd 1.6 does not let us move it
CONTAINERD_SUBNET = "10.213.0.0/16"  # away from dockyardd's default bridge in the same namespace

CONTAINERD_CRI_CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{base}/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


def images_archive(path: Path) -> Path:
    """An OCI archive of the look-alike pause and busybox images (tests/cri_mirror.py's)."""
    with tempfile.TemporaryDirectory(prefix="bench-cri-img-") as tmp:
        pause_dir = Path(tempfile.mkdtemp(prefix="pause-", dir=tmp))
        base_dir = Path(tempfile.mkdtemp(prefix="base-", dir=tmp))
        images = [mirror_image(PAUSE, pause_layer(pause_dir), {"Entrypoint": ["/pause"], "Cmd": None}),
                  mirror_image(IMAGE, busybox_layer(base_dir))]
        path.write_bytes(oci_archive(images))
    return path


class Side:
    """One daemon's CRI: a channel to its socket and what is needed to find its processes."""

    name: str
    address: str

    def __init__(self) -> None:
        self.channel: grpc.Channel | None = None
        self.rt: cri_grpc.RuntimeServiceStub

    def connect(self) -> None:
        self.channel = grpc.insecure_channel(f"unix://{self.address}")
        self.rt = cri_grpc.RuntimeServiceStub(self.channel)
        self.rt.Version(cri.VersionRequest(), timeout=30)

    def load(self, archive: Path) -> None:
        ok(ctr(self.address, "images", "import", str(archive), namespace="k8s.io", timeout=300))

    def shims(self) -> set[int]:
        raise NotImplementedError

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


class Dockyardd(Side):
    name = "dockyardd"

    def __init__(self, base: Path, netns: Path, pods_per_shim: int | None = None) -> None:
        super().__init__()
        shared = f"pods_per_shim = {pods_per_shim}\n" if pods_per_shim else ""  # else the daemon's default
        (base / "config.toml").write_text(f'[cri]\nsandbox_image = "{PAUSE}"\n{shared}')  # its config dir is base
        self.daemon = start_daemon(base, extra=["--log-level", "info"], netns=netns, private_ipc=True)
        self.address = self.daemon.address

    def shims(self) -> set[int]:
        # forked by the zygote (cwd in their bundle) or started by command (-address <socket>);
        # the zygote itself, whose pages the shims share, counts as one of them
        found = processes_in(self.daemon.state / "tasks") | processes_mentioning(self.address)
        return found | {p for p in _parents(found) if _comm(p) == "dockyard-zygote"}

    def close(self) -> None:
        super().close()
        remove_base(self.daemon)


class Containerd(Side):
    """Debian's containerd with its CRI plugin on private dirs, in `netns` and its own IPC namespace."""

    name = "containerd"

    def __init__(self, base: Path, netns: Path) -> None:
        super().__init__()
        self.base = base
        self.network = f"dybench-{secrets.token_hex(4)}"
        netdir = base / "net.d"
        netdir.mkdir(parents=True)
        (netdir / "10-bench.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": self.network,
            "plugins": [
                {"type": "bridge", "bridge": f"cni-{self.network[8:]}", "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": CONTAINERD_SUBNET}]], "dataDir": str(base / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                # as Dockyard's default network (supervisor/network/networks.py): the same plugins run
                {"type": "firewall", "backend": "iptables", "ingressPolicy": "same-bridge"},
            ]}, indent=1))
        config = base / "config.toml"
        config.write_text(CONTAINERD_CRI_CONFIG.format(base=base, pause=PAUSE, cni_bin=CNI_PLUGINS))
        self.address = str(base / "containerd.sock")
        self.log_path = base / "containerd.log"
        self.cache_existed = {p: p.exists() for p in (CNI_CACHE, CNI_CACHE / "results")}
        binary = shutil.which("containerd")
        assert binary is not None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--ipc", "nsenter", f"--net={netns}", binary, "--config", str(config)],
                stdout=log, stderr=log, start_new_session=True)
        wait_socket(Path(self.address), self.proc, self.log_path)

    def shims(self) -> set[int]:
        return {p for p in processes_mentioning(self.address) if "shim" in _comm(p)}

    def close(self) -> None:
        super().close()
        shims = self.shims()
        stop_process(self.proc)
        for pid in shims | processes_mentioning(str(self.base)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        reap_leftovers(self.base)  # what is left by PID (they name the base), then the mounts under it
        for leftover in (CNI_CACHE / "results").glob(f"{self.network}-*"):
            leftover.unlink(missing_ok=True)
        for path in (CNI_CACHE / "results", CNI_CACHE):
            if not self.cache_existed.get(path, False):
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty: made by this run's containerd
        shutil.rmtree(self.base, ignore_errors=True)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parents(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            found.add(int(stat[stat.rindex(")") + 2:].split()[1]))
    return found


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found |= {int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(Pss, Rss) in KiB from /proc/<pid>/smaps_rollup; zeros for a process gone meanwhile."""
    pss = rss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "Pss":
                pss = int(rest.split()[0])
            elif key == "Rss":
                rss = int(rest.split()[0])
    return pss, rss


class Pods:
    """Pod and container configs for one run: unique names, a cgroup parent of the run's, logs in a temp dir."""

    def __init__(self, cgroup_parent: str, log_root: Path) -> None:
        self.cgroup_parent, self.log_root, self.serial = cgroup_parent, log_root, 0

    def pod_config(self) -> cri.PodSandboxConfig:
        self.serial += 1
        name = f"bench-{self.serial}"
        logs = self.log_root / name
        logs.mkdir(parents=True)
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=secrets.token_hex(8), namespace="bench", attempt=0),
            hostname=name, log_directory=str(logs),
            linux=cri.LinuxPodSandboxConfig(cgroup_parent=f"/{self.cgroup_parent}"))

    @staticmethod
    def container_config() -> cri.ContainerConfig:
        return cri.ContainerConfig(metadata=cri.ContainerMetadata(name="sleep", attempt=0),
                                   image=cri.ImageSpec(image=IMAGE), command=["sleep", "3600"],
                                   log_path="sleep.log", linux=cri.LinuxContainerConfig())


STEPS = ("RunPodSandbox", "CreateContainer", "StartContainer")


def start_pod(side: Side, pods: Pods, steps: dict[str, list[float]] | None = None) -> tuple[str, str]:
    """RunPodSandbox + CreateContainer + StartContainer: the pod's and the container's ids. With
    `steps`, each call's seconds are appended to its list there."""
    config = pods.pod_config()
    t0 = time.perf_counter()
    pod = side.rt.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    t1 = time.perf_counter()
    cid = side.rt.CreateContainer(cri.CreateContainerRequest(pod_sandbox_id=pod, config=pods.container_config(),
                                                             sandbox_config=config), timeout=120).container_id
    t2 = time.perf_counter()
    side.rt.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=120)
    if steps is not None:
        for name, took in zip(STEPS, (t1 - t0, t2 - t1, time.perf_counter() - t2), strict=True):
            steps.setdefault(name, []).append(took)
    return pod, cid


def remove_pod(side: Side, pod: str) -> None:
    """As the kubelet does: StopPodSandbox (stops its containers), then RemovePodSandbox (removes them)."""
    side.rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    side.rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)


def remove_pods(side: Side, pods: list[str]) -> None:
    for pod in pods:
        remove_pod(side, pod)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_pod(side: Side, pods: Pods, steps: dict[str, list[float]] | None = None) -> float:
    """(a) one sample: the start of a pod of one container; it is removed after, untimed."""
    start = time.perf_counter()
    pod, _ = start_pod(side, pods, steps)
    took = time.perf_counter() - start
    remove_pod(side, pod)
    return took


def status_pass(side: Side, started: list[tuple[str, str]]) -> None:
    """(d) kubelet's relist and the status of every pod and container."""
    side.rt.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=120)
    side.rt.ListContainers(cri.ListContainersRequest(), timeout=120)
    for pod, cid in started:
        side.rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=120)
        side.rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid), timeout=120)


def pod_memory(side: Side) -> dict[str, Any]:
    """Pss/Rss of the side's shims and of the pause processes below them (their children)."""
    shims = side.shims()
    pauses = {c for s in shims for c in _children(s) if _comm(c) == "pause"}
    shim_mem = [memory_kib(p) for p in shims]
    pause_mem = [memory_kib(p) for p in pauses]
    return {"shims": len(shims), "pauses": len(pauses),
            "shim_pss_kib": sum(m[0] for m in shim_mem), "shim_rss_kib": sum(m[1] for m in shim_mem),
            "pause_pss_kib": sum(m[0] for m in pause_mem), "pause_rss_kib": sum(m[1] for m in pause_mem)}


def memory_with_ksm(side: Side) -> dict[str, Any]:
    """`pod_memory` once ksmd has merged what it can (see the module's note on --ksm)."""
    start = time.perf_counter()
    with ksm.running(pages_to_scan=1000):
        ksm.settle(2, timeout=900)
        found = pod_memory(side)
    found["settle_s"] = round(time.perf_counter() - start, 1)
    return found


def many_pods(side: Side, pods: Pods, count: int, removal: list[float], memory: list[dict[str, Any]],
              with_ksm: bool = False, status: list[float] | None = None) -> float:
    """(b) `count` pods started one after another: seconds. Then (c) their memory and (d) their
    status pass (seconds appended to `status`), then all removed (seconds appended to `removal`)."""
    started: list[tuple[str, str]] = []
    try:
        start = time.perf_counter()
        for _ in range(count):
            started.append(start_pod(side, pods))
        took = time.perf_counter() - start
        mem = pod_memory(side)
        mem["pods"] = count
        if with_ksm:
            mem["ksm"] = memory_with_ksm(side)
        memory.append(mem)
        if status is not None:
            status.append(statistics.median(timed(partial(status_pass, side, started)) for _ in range(3)))
    finally:
        removal.append(timed(partial(remove_pods, side, [pod for pod, _ in started])))
    return took


def links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout


def host_state() -> tuple[str, list[str]]:
    # link counters and flags move; names are what must not change
    return iptables_snapshot(), sorted(line.split(":")[1].strip().split("@")[0] for line in links().splitlines())


@contextlib.contextmanager
def sides_in_netns(kinds: list[str], tmp: Path, pods_per_shim: int | None = None) -> Iterator[list[Side]]:
    """The daemons of `kinds`, all in one network namespace made here; everything removed at the end."""
    with pinned_netns(prefix="bench-cri-ns-") as netns, contextlib.ExitStack() as stack:
        sides: list[Side] = []
        for kind in kinds:
            base = Path(tempfile.mkdtemp(prefix=f"bcri-{kind[:2]}-"))
            try:
                side: Side = Dockyardd(base, netns, pods_per_shim) if kind == "dockyardd" else Containerd(base, netns)
            except BaseException:
                reap_leftovers(base)
                shutil.rmtree(base, ignore_errors=True)
                raise
            stack.callback(side.close)
            sides.append(side)
        yield sides


def summarise(latencies: list[float], steps: dict[str, list[float]], batch: list[float], removal: list[float],
              memory: list[dict[str, Any]], pods: int, status: list[float] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"pods": pods}
    if latencies:
        found |= {"start_pod_median_ms": statistics.median(latencies) * 1e3,
                  "start_pod_best_ms": min(latencies) * 1e3,
                  "start_pod_samples_ms": [round(t * 1e3, 1) for t in latencies]}
        found |= {f"{name}_median_ms": statistics.median(steps[name]) * 1e3 for name in STEPS}
    if batch:
        found |= {"start_many_s": statistics.median(batch), "start_many_samples_s": [round(t, 2) for t in batch],
                  "remove_many_s": statistics.median(removal)}
    if status:
        found["status_pass_ms"] = statistics.median(status) * 1e3
    if memory:
        m = memory[-1]
        found |= {"memory": m,
                  "pss_per_pod_kib": (m["shim_pss_kib"] + m["pause_pss_kib"]) / pods,
                  "rss_per_pod_kib": (m["shim_rss_kib"] + m["pause_rss_kib"]) / pods}
        if "ksm" in m:
            found["ksm_pss_per_pod_kib"] = (m["ksm"]["shim_pss_kib"] + m["ksm"]["pause_pss_kib"]) / pods
    return found


def report(results: dict[str, Any], kinds: list[str]) -> None:
    print(f"{results['date']}, load average {results['load_before'][0]:.2f} -> {results['load_after'][0]:.2f}")
    pods = results[kinds[0]]["pods"]
    rows = (("start_pod_median_ms", "run+create+start ms"), ("start_pod_best_ms", "  best ms"),
            *((f"{name}_median_ms", f"  {name} ms") for name in STEPS),
            ("start_many_s", f"start {pods} pods s"), ("remove_many_s", f"remove {pods} pods s"),
            ("status_pass_ms", f"status of {pods} pods ms"),
            ("pss_per_pod_kib", "PSS per pod KiB"), ("rss_per_pod_kib", "RSS per pod KiB"),
            ("ksm_pss_per_pod_kib", "  ksmd on: PSS KiB"))
    for key, label in rows:
        if any(results[k].get(key) is None for k in kinds):
            continue
        print(f"{label:22} " + "   ".join(f"{k} {results[k][key]:9.1f}" for k in kinds), end="")
        if len(kinds) == 2:
            ratio = results["dockyardd"][key] / max(results["containerd"][key], 1e-9)
            results.setdefault("ratios", {})[key] = round(ratio, 3)
            print(f"   dockyardd/containerd {ratio:5.2f}", end="")
        print(flush=True)
    for k in kinds:
        if "memory" in results[k]:
            print(f"{k}: {json.dumps(results[k]['memory'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="(a) rounds of one pod's start")
    ap.add_argument("--pods", type=int, default=100, help="(b, c) pods started one after another")
    ap.add_argument("--batch-rounds", type=int, default=1, help="(b) rounds")
    ap.add_argument("--only", choices=("dockyardd", "containerd"), help="run one side (no ratios)")
    ap.add_argument("--ksm", action="store_true", help="(c) again once ksmd merged what it can (a host with it off)")
    ap.add_argument("--pods-per-shim", type=int, help="dockyardd's [cri] pods_per_shim (default: its default)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with_ksm = args.ksm and ksm.available() and ksm.read("run") != 1
    if os.geteuid() != 0:
        raise SystemExit("bench/cri.py needs root (namespaces, mounts, cgroups)")
    kinds = [args.only] if args.only else ["dockyardd", "containerd"]
    missing = [t for t, needed in (("containerd", "containerd" in kinds), ("runc", "containerd" in kinds),
                                   ("nsenter", True), ("unshare", True), ("ctr", True), ("gcc", True))
               if needed and not shutil.which(t)]
    if missing or not (CNI_PLUGINS / "bridge").exists():
        raise SystemExit(f"bench/cri.py needs {', '.join(missing) or 'the CNI plugins'} "
                         "(apt-get install containerd runc containernetworking-plugins gcc)")

    before = host_state()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "pods_per_shim": args.pods_per_shim or "default",
                               "load_before": [round(x, 2) for x in os.getloadavg()]}
    cgroup_parent = f"dybench-{secrets.token_hex(4)}"
    signal.signal(signal.SIGTERM, interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cri-") as tmp, stopping_new_zygotes(), \
                sides_in_netns(kinds, Path(tmp), args.pods_per_shim) as sides:
            archive = images_archive(Path(tmp) / "images.tar")
            pods = Pods(cgroup_parent, Path(tmp) / "logs")
            for side in sides:
                side.load(archive)
                side.connect()
                one_pod(side, pods)  # warm-up: the sandbox image's snapshot, the bridge, the zygote
            if args.rounds:
                print(f"(a) RunPodSandbox + CreateContainer + StartContainer, {args.rounds} rounds", flush=True)
            steps: dict[str, dict[str, list[float]]] = {s.name: {} for s in sides}
            latencies = take_turns({s.name: partial(one_pod, s, pods, steps[s.name]) for s in sides}, args.rounds,
                                   flip=True)
            print(f"(b) {args.pods} pods of one container one after another, then removed, {args.batch_rounds} rounds;"
                  " (c) their memory; (d) their status pass",
                  flush=True)
            removal: dict[str, list[float]] = {s.name: [] for s in sides}
            memory: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
            status: dict[str, list[float]] = {s.name: [] for s in sides}
            batch = take_turns({s.name: partial(many_pods, s, pods, args.pods, removal[s.name], memory[s.name],
                                                with_ksm, status[s.name]) for s in sides}, args.batch_rounds, flip=True)
            for s in sides:
                results[s.name] = summarise(latencies[s.name], steps[s.name], batch[s.name], removal[s.name],
                                            memory[s.name], args.pods, status[s.name])
    finally:
        remove_cgroups(cgroup_parent)
        for top in Path("/sys/fs/cgroup").glob(f"*/dockyard/{cgroup_parent}"):  # dockyardd's pods' parents
            with contextlib.suppress(OSError):
                top.rmdir()
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    changed = host_state() != before
    results["host_changed"] = changed
    report(results, kinds)
    if changed:
        print("warning: the host's iptables-save or links differ from before the run (another process on the host?)",
              file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
