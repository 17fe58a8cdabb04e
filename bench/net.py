"""Container networking: dockyardd driven by `dock` vs Debian's podman (runc, CNI plugins), same image.

    python3 bench/net.py [--rounds 20] [--containers 100] [--batch-rounds 2] [--throughput-rounds 5]
                         [--seconds 3] [--only dockyardd|podman] [--quick] [--json FILE]

(a) latency of `run --rm -p 18080:80 IMG true` (median and p90 of --rounds runs);
(b) --containers networked containers started one after another (`run -d -p PORT:80 IMG sleep 3600`,
    a port each), total seconds; then all removed (timed too, not a goal);
(c) TCP throughput through a published port: busybox httpd in the container serving a 256 MiB
    sparse file, a Python socket in the bench's namespace GETting it from 127.0.0.1:PORT again and
    again for --seconds, MB/s.
The two take turns round by round in every case (the order flipping each round), so the drifting
load of a shared host lands on both alike. `--quick` is a short run (< 1 minute); `--only` runs
one side (`--only dockyardd --quick` is the smoke test's path: no podman needed).

Nothing touches the host's network: each side gets a network namespace made for the run (pinned
on a file, entered with `nsenter --net=`; `ip netns exec` would remount /sys and hide the cgroup
mounts). dockyardd runs inside one (its config dir, so its CNI networks, private); every podman
command runs inside the other. Podman gets private --root/--runroot and a containers.conf of its
own: CNI backend, one network whose host-local IPAM keeps its data under the temp dir, file locks
and events under the temp dir, cgroupfs with a cgroup parent named for the run. All of it (temp
dirs, namespaces, processes by PID, mounts, cgroups, CNI cache files named for our network) is
removed at the end; the host's iptables-save is compared before and after.

Podman on this host needs `--runtime runc` (crun refuses the hybrid cgroup layout), `--ulimit
nofile=1024:1024` (its default is above what the VM allows; containerd's default spec, which
dockyardd's follows, sets the same) and an nproc limit no higher than its own, which here is the
kernel's pid_max (32768; podman's default for root, 4194304, is refused by runc's setrlimit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rounds import take_turns
from supervisor.network import netns as netns_files
from tests.daemon import (
    REPO,
    DaemonProcess,
    pinned_netns,
    reap_leftovers,
    remove_base,
    start_daemon,
    stopping_new_zygotes,
)
from tests.images import build_image, docker_archive, tar_tree
from tests.rootfs import make_busybox_rootfs

IMAGE = "localhost/busybox:net"  # fully qualified: the same name in both stores
NAMESPACE = "bench"
RUN_PORT = 18080
SERVE_PORT = 18081
BATCH_PORTS = 20000  # the batch's containers publish 20000, 20001, ...
# busybox httpd sends a file with sendfile(2): the network path, not the server's copying, is what
# is measured (busybox nc writes a page at a time, and was CPU-bound: 170-460 MB/s from run to run);
# a sparse file is read from the page cache after the first GET, with no disk behind it
SERVE = "mkdir -p /www && truncate -s 256M /www/zero && exec httpd -f -p 80 -h /www"
CNI_PLUGINS = Path("/usr/lib/cni")
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache: podman does not let us move it


def busybox_archive(path: Path) -> Path:
    """A docker-save archive (both `podman load` and `dock images import` read it) of Debian's
    busybox-static with every applet linked (`httpd`, `truncate` included)."""
    with tempfile.TemporaryDirectory(prefix="bench-net-img-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs", all_applets=True)
        path.write_bytes(docker_archive([build_image(IMAGE, [tar_tree(root)])]))
    return path


def run(argv: list[str], what: str, *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{what} exited with {res.returncode}: {(res.stderr or res.stdout).strip()}")
    return res


class Side(Protocol):
    name: str
    netns: Path

    def load(self, archive: Path) -> None: ...
    def run_rm(self, port: int) -> None: ...
    def start(self, name: str, port: int, *argv: str) -> None: ...
    def remove(self, names: list[str]) -> None: ...


class Podman:
    """Debian's podman on private storage, network config, locks and cgroup parent, every command
    run inside `netns`."""

    name = "podman"

    def __init__(self, base: Path, netns: Path) -> None:
        self.base, self.netns = base, netns
        self.network = f"dybench-{secrets.token_hex(4)}"
        self.cgroup_parent = self.network
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        self.run_options = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit",
                            f"nproc={pid_max}:{pid_max}", "--cgroup-parent", f"/{self.cgroup_parent}"]
        netdir = base / "net.d"
        netdir.mkdir(parents=True)
        # podman's own default network (its Debian conflist), renamed and with IPAM data kept here:
        # host-local otherwise writes under /var/lib/cni/networks/<name>
        (netdir / f"{self.network}.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": self.network,
            "plugins": [
                {"type": "bridge", "bridge": "cni-podman0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                          "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                          "dataDir": str(base / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall"},
                {"type": "tuning"},
            ]}, indent=1))
        conf = base / "containers.conf"
        conf.write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{CNI_PLUGINS}"]\n'
            f'network_config_dir = "{netdir}"\n'
            f'default_network = "{self.network}"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{base / "events.log"}"\n'
            'lock_type = "file"\n'  # not the host-wide /dev/shm/libpod_lock
            'runtime = "runc"\n'
            f'tmp_dir = "{base / "tmp"}"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.cache_existed = {p: p.exists() for p in (CNI_CACHE, CNI_CACHE / "results")}

    def podman(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net={self.netns}", "podman", "--root", str(self.base / "root"),
                "--runroot", str(self.base / "run"), *args]
        return run(argv, f"podman {' '.join(args[:2])}", env=self.env, check=check, timeout=timeout)

    def load(self, archive: Path) -> None:
        self.podman("load", "-q", "-i", str(archive))
        self.podman("run", "--rm", *self.run_options, IMAGE, "true")  # warm-up: caches, the bridge

    def run_rm(self, port: int) -> None:
        self.podman("run", "--rm", *self.run_options, "-p", f"{port}:80", IMAGE, "true")

    def start(self, name: str, port: int, *argv: str) -> None:
        self.podman("run", "-d", "--name", name, *self.run_options, "-p", f"{port}:80", IMAGE, *argv)

    def remove(self, names: list[str]) -> None:
        self.podman("rm", "-f", "-t", "0", *names, timeout=600)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.podman("rm", "-a", "-f", "-t", "0", check=False, timeout=600)
        reap_leftovers(self.base)  # conmons and containers by PID (they name the base), then mounts
        remove_cgroups(self.cgroup_parent)
        for leftover in (CNI_CACHE / "results").glob(f"{self.network}-*"):
            leftover.unlink(missing_ok=True)
        for path in (CNI_CACHE / "results", CNI_CACHE / "networks", CNI_CACHE):
            if not self.cache_existed.get(path, False):
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty: made by this run's podman
        shutil.rmtree(self.base, ignore_errors=True)


class Dock:
    """dockyardd from this checkout started inside `netns`, driven by the `dock` CLI (run inside the
    namespace too, as podman's commands are)."""

    name = "dockyardd"

    def __init__(self, base: Path, netns: Path) -> None:
        self.netns = netns
        self.daemon: DaemonProcess = start_daemon(base, extra=["--log-level", "info"], netns=netns)
        self.ids = 0
        # the `dock` scripts/install writes (`python3 -S`, then dock.cli.launch): warm from the
        # second command on (the zygote the first one starts), else cold as before
        self.launcher = base / "dock"
        subprocess.run([sys.executable, str(REPO / "scripts" / "dock-launcher"), str(self.launcher)], check=True)

    def dock(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net={self.netns}", str(self.launcher), "--address",
                self.daemon.address, "--namespace", NAMESPACE, *args]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        return run(argv, f"dock {' '.join(args[:2])}", env=env, check=check, timeout=timeout)

    def next_id(self) -> str:
        self.ids += 1
        return f"r{self.ids}"

    def load(self, archive: Path) -> None:
        self.dock("images", "import", "--unpack", "--quiet", str(archive))
        self.dock("run", "--rm", "--name", self.next_id(), IMAGE, "true")  # warm-up: the default network, the zygote

    def run_rm(self, port: int) -> None:
        self.dock("run", "--rm", "-p", f"{port}:80", "--name", self.next_id(), IMAGE, "true")

    def start(self, name: str, port: int, *argv: str) -> None:
        self.dock("run", "-d", "-p", f"{port}:80", "--name", name, IMAGE, *argv)

    def remove(self, names: list[str]) -> None:
        self.dock("tasks", "rm", "-f", *names, timeout=600)
        self.dock("containers", "rm", *names, timeout=600)

    def close(self) -> None:
        remove_base(self.daemon)


def remove_cgroups(parent: str) -> None:
    """Kill what is left in /sys/fs/cgroup/*/<parent> (by PID), then rmdir it and what is below
    it, leaves first (a cgroup that still refuses stays, reported)."""
    assert parent.startswith("dybench-"), parent  # only ever the cgroup parent this run named
    for procs in Path("/sys/fs/cgroup").glob(f"*/{parent}/**/cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    for top in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        found = [Path(root, d) for root, subdirs, _ in os.walk(top) for d in subdirs]
        for d in [*sorted(found, key=lambda p: len(p.parts), reverse=True), top]:
            for attempt in range(40):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if attempt == 39:
                        print(f"warning: cgroup {d} left: {exc.strerror}", file=sys.stderr)
                    time.sleep(0.05)  # a killed process may still be leaving it


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM unwinds as Ctrl-C does, so a stopped run still removes what it made."""
    raise KeyboardInterrupt


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.9 + 0.5) - 1)]


def run_latency(sides: list[Side], rounds: int) -> dict[str, list[float]]:
    """(a) `run --rm -p 18080:80 IMG true` on each side in turn."""
    return take_turns({s.name: partial(timed, partial(s.run_rm, RUN_PORT)) for s in sides}, rounds, flip=True)


def start_many(side: Side, count: int, removal: list[float]) -> float:
    """(b) `count` detached containers with a published port each, one after another; seconds.
    Then they are removed, the seconds that takes appended to `removal`."""
    names: list[str] = []
    try:
        start = time.perf_counter()
        for i in range(count):
            names.append(f"b{i}")  # before the start: a half-made one is removed too
            side.start(names[-1], BATCH_PORTS + i, "sleep", "3600")
        took = time.perf_counter() - start
    finally:
        if names:
            removal.append(timed(partial(side.remove, names)))
    return took


def get_once(port: int, buf: bytearray, until: float) -> int:
    """One `GET /zero` from 127.0.0.1:port, read to its end or until `until`: the bytes read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /zero HTTP/1.0\r\n\r\n")
        total = 0
        while time.perf_counter() < until:
            got = conn.recv_into(buf)
            if not got:
                break
            total += got
        return total


def read_for(port: int, seconds: float) -> tuple[int, float]:
    """Bytes read from 127.0.0.1:port in about `seconds` of GETs one after another, and the
    seconds taken. First one whole GET, untimed: it waits for the server in the container (until
    it listens, the connection is refused, or reset by the NAT) and brings the file into the page
    cache."""
    buf = bytearray(1 << 20)
    deadline = time.monotonic() + 30
    while True:
        try:
            if get_once(port, buf, time.perf_counter() + 30):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
    total, start = 0, time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        total += get_once(port, buf, end)
    return total, time.perf_counter() - start


def throughput_once(side: Side, seconds: float, serial: list[int]) -> float:
    """(c) One sample of MB/s through a published port: busybox httpd in a container serving a
    sparse file (by sendfile), read by a socket made in the side's namespace (in a thread that
    entered it)."""
    serial[0] += 1
    name = f"t{serial[0]}"
    try:
        side.start(name, SERVE_PORT, "sh", "-c", SERVE)
        total, took = netns_files.in_netns(side.netns, partial(read_for, SERVE_PORT, seconds))
    finally:
        side.remove([name])
    return total / took / 1e6


def iptables_snapshot() -> str:
    """The host's firewall (this process is in the host's namespace), to compare after the run."""
    out: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            text = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            # counters move with the host's own traffic; the rules are what must not change
            out += [line.split(" [")[0] for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(out)


@contextlib.contextmanager
def side_in_netns(kind: str) -> Iterator[Side]:
    """One side in a network namespace of its own, removed (and everything it made) at the end."""
    with pinned_netns(prefix=f"bench-net-{kind}-") as netns:
        base = Path(tempfile.mkdtemp(prefix=f"bnet-{kind[:2]}-"))
        side: Podman | Dock
        if kind == "podman":
            side = Podman(base, netns)
        else:
            try:
                side = Dock(base, netns)
            except BaseException:
                shutil.rmtree(base, ignore_errors=True)
                raise
        try:
            yield side
        finally:
            side.close()


def summarise(name: str, latencies: list[float], batch: list[float], removal: list[float],
              rates: list[float], containers: int) -> dict[str, Any]:
    found: dict[str, Any] = {"containers": containers}
    if latencies:
        found |= {"run_rm_median_ms": statistics.median(latencies) * 1e3, "run_rm_p90_ms": p90(latencies) * 1e3,
                  "run_rm_samples_ms": [round(t * 1e3, 1) for t in latencies]}
    if batch:
        found |= {"start_many_s": statistics.median(batch), "start_many_samples_s": [round(t, 2) for t in batch],
                  "remove_many_s": statistics.median(removal) if removal else None}
    if rates:
        found |= {"throughput_mb_s": statistics.median(rates), "throughput_samples_mb_s": [round(r, 1) for r in rates]}
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="(a) run --rm rounds")
    ap.add_argument("--containers", type=int, default=100, help="(b) containers started one after another")
    ap.add_argument("--batch-rounds", type=int, default=2, help="(b) rounds")
    ap.add_argument("--throughput-rounds", type=int, default=5, help="(c) rounds")
    ap.add_argument("--seconds", type=float, default=3.0, help="(c) seconds of reading per sample")
    ap.add_argument("--only", choices=("dockyardd", "podman"), help="run one side (no ratios)")
    ap.add_argument("--cases", default="abc", help="which of the cases a, b, c to run (default all)")
    ap.add_argument("--quick", action="store_true", help="a short run: 3 rounds, 5 containers, 1 s of throughput")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.containers, args.batch_rounds = 3, 5, 1
        args.throughput_rounds, args.seconds = 1, 1.0
    # a case left out runs no rounds
    args.rounds *= "a" in args.cases
    args.batch_rounds *= "b" in args.cases
    args.throughput_rounds *= "c" in args.cases
    if os.geteuid() != 0:
        raise SystemExit("bench/net.py needs root (network namespaces, mounts, cgroups)")
    kinds = [args.only] if args.only else ["dockyardd", "podman"]
    missing = [tool for tool, needed in (("podman", "podman" in kinds), ("nsenter", True),
                                         ("iptables", True)) if needed and not shutil.which(tool)]
    if missing or not (CNI_PLUGINS / "bridge").exists():
        raise SystemExit(f"bench/net.py needs {', '.join(missing) or 'the CNI plugins'} "
                         "(apt-get install podman containernetworking-plugins iptables)")

    firewall = iptables_snapshot()
    load_before = os.getloadavg()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "load_before": [round(x, 2) for x in load_before]}
    with tempfile.TemporaryDirectory(prefix="bench-net-") as tmp, stopping_new_zygotes(), \
            contextlib.ExitStack() as stack:
        signal.signal(signal.SIGTERM, interrupted)
        archive = busybox_archive(Path(tmp) / "busybox-net.tar")
        sides: list[Side] = [stack.enter_context(side_in_netns(kind)) for kind in kinds]
        for side in sides:
            side.load(archive)
        if args.rounds:
            print(f"(a) run --rm -p {RUN_PORT}:80, {args.rounds} rounds", flush=True)
        latencies = run_latency(sides, args.rounds)
        if args.batch_rounds:
            print(f"(b) {args.containers} containers with a published port each, {args.batch_rounds} rounds",
                  flush=True)
        removal: dict[str, list[float]] = {s.name: [] for s in sides}
        batch = take_turns({s.name: partial(start_many, s, args.containers, removal[s.name]) for s in sides},
                           args.batch_rounds, flip=True)
        if args.throughput_rounds:
            print(f"(c) TCP through -p {SERVE_PORT}:80, {args.throughput_rounds} rounds of {args.seconds:g} s",
                  flush=True)
        serial = [0]
        rates = take_turns({s.name: partial(throughput_once, s, args.seconds, serial) for s in sides},
                           args.throughput_rounds, flip=True)
        for s in sides:
            results[s.name] = summarise(s.name, latencies[s.name], batch[s.name], removal[s.name], rates[s.name],
                                        args.containers)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    changed = iptables_snapshot() != firewall
    results["host_firewall_changed"] = changed
    report(results, kinds)
    if changed:
        print("warning: the host's iptables-save differs from before the run (another process on the host?)",
              file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict[str, Any], kinds: list[str]) -> None:
    print(f"{results['date']}, load average {results['load_before'][0]:.2f} -> {results['load_after'][0]:.2f}")
    rows = (("run_rm_median_ms", "run --rm median ms"), ("run_rm_p90_ms", "run --rm p90 ms"),
            ("start_many_s", f"start {results[kinds[0]]['containers']} s"),
            ("remove_many_s", "remove them s"), ("throughput_mb_s", "TCP MB/s"))
    for key, label in rows:
        if any(results[k].get(key) is None for k in kinds):
            continue  # a case not run
        values = "   ".join(f"{k} {results[k][key]:9.1f}" for k in kinds)
        print(f"{label:22} {values}", end="")
        if len(kinds) == 2:
            ratio = results["dockyardd"][key] / max(results["podman"][key], 1e-9)
            results.setdefault("ratios", {})[key] = round(ratio, 3)
            print(f"   dockyardd/podman {ratio:5.2f}", end="")
        print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
