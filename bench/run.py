"""Running containers: dockyardd (our shim) vs containerd with runc, driven by the same `ctr`.

    python3 bench/run.py [--rounds 20] [--containers 50] [--json out.json] [--no-ksm]

- latency of `ctr run --rm IMAGE ID true` (median and p90 of --rounds runs);
- time to start --containers detached containers (`ctr run -d ... sleep 600`, one after another);
- shim memory per running container: PSS from /proc/PID/smaps_rollup of each container's shim
  (the init's parent) with those containers running, Dockyard's shim vs containerd-shim-runc-v2.
  Our shims are forked from a zygote that lives as long as they do: its PSS is shared out
  evenly over the shims it forked and added to each (`shim_pss_median_kib`); the shims' own
  PSS and their private dirty pages are reported too. Where the kernel has KSM and the host
  does not run ksmd, memory is measured a second time with ksmd on (default pace, the host's
  setting restored after; `--no-ksm` skips it): our shims offer the zygote's pages to it (see
  shim.zygote.offer_to_ksm), and ksmd's own CPU is reported with them.
- `ctr tasks ls`, `ctr containers ls` and `ctr run -d` latency with --list-containers running
  containers on each daemon (default 50, then 1000; the daemons alternating round by round,
  --list-rounds): what a host with many containers costs each call;
  `--list-only` runs just this case.
The image is Debian's busybox-static, built by tests/images.py and imported on both daemons.
`--seccomp` adds two latency cases, alternating with the others round by round: the same
`ctr run --rm` carrying Dockyard's default seccomp profile (dockyard_common, resolved for the
default capabilities, as `dock run` sends it) on each daemon: what the filter costs to load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from bench.rounds import take_turns
from bench.stats import cpu_seconds
from dockyard_common import capabilities, seccomp
from tests import ksm
from tests.images import busybox_oci_archive

IMAGE = "docker.io/library/busybox:latest"
NAMESPACE = "bench"
CTR = shutil.which("ctr") or "ctr"


def ctr(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([CTR, "--address", address, "--namespace", NAMESPACE, *args], capture_output=True,
                         text=True, timeout=120)
    if check and res.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {res.stderr.strip()}")
    return res


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def private_dirty_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def helper_share_kib(shims: set[int]) -> dict[int, float]:
    """Each shim's share of the PSS of a helper it was forked from and that lives on with it
    (our zygote): the helper's PSS divided by the number of shims it serves."""
    parents: dict[int, list[int]] = {}
    for shim in shims:
        parent = shim_of(shim)
        if comm(parent) == "dockyard-zygote":
            parents.setdefault(parent, []).append(shim)
    share = dict.fromkeys(shims, 0.0)
    for parent, children in parents.items():
        for shim in children:
            share[shim] = pss_kib(parent) / len(children)
    return share


def shim_of(task_pid: int) -> int:
    for line in Path(f"/proc/{task_pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no parent for {task_pid}")


def prepare(address: str, image_tar: Path) -> None:
    ctr(address, "images", "import", str(image_tar))
    ctr(address, "run", "--rm", IMAGE, "warmup", "true")


def run_latencies(addresses: dict[str, str], rounds: int, profile: Path | None = None) -> dict[str, list[float]]:
    """`ctr run --rm` on each daemon in turn, round after round (the order flipping each round):
    load drifting on a shared host lands on both alike. With `profile` (an OCI linux.seccomp
    file) each daemon also runs with it, as case "<daemon>+seccomp"."""
    ids = itertools.count()

    def once(address: str, *options: str) -> float:
        t = time.perf_counter()
        ctr(address, "run", "--rm", *options, IMAGE, f"r{next(ids)}", "true")
        return time.perf_counter() - t

    cases = {name: partial(once, address) for name, address in addresses.items()}
    if profile is not None:
        cases |= {f"{name}+seccomp": partial(once, address, "--seccomp", "--seccomp-profile", str(profile))
                  for name, address in addresses.items()}
    return take_turns(cases, rounds, flip=True)


def shim_memory(shims: set[int], *prefixes: str) -> dict[str, float]:
    """The shims' memory now, under each of `prefixes` ("" when none is given)."""
    own = {p: pss_kib(p) for p in shims}
    share = helper_share_kib(shims)
    pss = [own[p] + share[p] for p in shims]
    dirty = [private_dirty_kib(p) for p in shims]
    found = {
        "shim_pss_median_kib": statistics.median(pss) if pss else 0,
        "shim_pss_total_kib": sum(pss),
        "shim_own_pss_median_kib": statistics.median(own.values()) if own else 0,
        "helper_pss_share_kib": statistics.median(share.values()) if share else 0,
        "shim_private_dirty_median_kib": statistics.median(dirty) if dirty else 0,
    }
    return {prefix + key: value for prefix in prefixes or ("",) for key, value in found.items()}


def ksmd_cpu_percent(window: float) -> float:
    """ksmd's CPU over the next `window` seconds, as a share of one core."""
    pid = ksm.ksmd_pid()
    cpu = cpu_seconds(pid)
    time.sleep(window)
    return 100 * (cpu_seconds(pid) - cpu) / window


def memory_with_ksm(shims: set[int], window: float = 30.0) -> dict[str, float]:
    """The shims' memory once ksmd (at its default pace) has merged what it can, and what ksmd
    costs: its CPU over `window` seconds after that, as a share of one core; then the same at a
    tenth of the pace (what a host keeps once the pages are merged). Shims that offer KSM
    nothing (containerd's) are measured as they are: ksmd would not scan them."""
    if not any(ksm.smaps_kib(p, "Size", "mg") for p in shims):
        return {**shim_memory(shims, "ksm_", "ksm_slow_"), "ksm_settle_s": 0.0,
                "ksmd_cpu_percent": 0.0, "ksmd_slow_cpu_percent": 0.0}
    with ksm.running():
        t = time.perf_counter()
        ksm.settle(2, timeout=900)
        settled = time.perf_counter() - t
        cpu = ksmd_cpu_percent(window)
        memory = shim_memory(shims, "ksm_")
        ksm.set_pace(10 * ksm.read("sleep_millisecs"))
        slow_cpu = ksmd_cpu_percent(window)
        return {**memory, **shim_memory(shims, "ksm_slow_"), "ksm_settle_s": settled,
                "ksmd_cpu_percent": cpu, "ksmd_slow_cpu_percent": slow_cpu}


def remove_containers(address: str, ids: list[str]) -> None:
    """Kill and remove the tasks and containers `ids` (those that exist)."""
    for cid in ids:
        ctr(address, "tasks", "kill", "-s", "SIGKILL", cid, check=False)
    for cid in ids:
        for _ in range(50):
            if ctr(address, "tasks", "rm", cid, check=False).returncode == 0:
                break
            time.sleep(0.1)
        ctr(address, "containers", "rm", cid, check=False)


def list_latencies(addresses: dict[str, str], counts: list[int], rounds: int) -> dict[str, Any]:
    """`ctr tasks ls`, `ctr containers ls` and one more `ctr run -d` with N running containers
    on each daemon, N growing through `counts`; the daemons take turns round by round (order
    flipping). The extra container of a `run -d` sample is removed after it, untimed."""
    started: dict[str, list[str]] = {name: [] for name in addresses}
    probes = itertools.count()

    def once(address: str, *args: str) -> float:
        t = time.perf_counter()
        ctr(address, *args)
        return time.perf_counter() - t

    def run_once(address: str) -> float:
        cid = f"probe{next(probes)}"
        try:
            return once(address, "run", "-d", IMAGE, cid, "sleep", "3600")
        finally:
            remove_containers(address, [cid])

    results: dict[str, Any] = {}
    try:
        for count in counts:
            for name, address in addresses.items():
                for i in range(len(started[name]), count):
                    started[name].append(f"ls{i}")  # before the run: a failed run is cleaned up too
                    ctr(address, "run", "-d", IMAGE, f"ls{i}", "sleep", "3600")
                running = sum(" RUNNING" in r for r in ctr(address, "tasks", "ls").stdout.splitlines())
                assert running >= count, f"{name}: {running} running tasks, wanted {count}"
            cases: dict[str, Callable[[], float]] = {
                f"{what} {name}": partial(once, address, what, "ls")
                for what in ("tasks", "containers") for name, address in addresses.items()}
            cases |= {f"run {name}": partial(run_once, address) for name, address in addresses.items()}
            times = take_turns(cases, rounds, flip=True)
            found = {case: statistics.median(samples) * 1e3 for case, samples in times.items()}
            results[str(count)] = found
            for what, shown in (("tasks", "tasks ls"), ("containers", "containers ls"), ("run", "run -d")):
                dy, ctd = found[f"{what} dockyardd"], found[f"{what} containerd"]
                print(f"ctr {shown:13}, {count:5d} running: dockyardd {dy:8.1f} ms   containerd {ctd:8.1f} ms   "
                      f"ratio {dy / ctd:5.2f}", flush=True)
    finally:
        for name, address in addresses.items():
            remove_containers(address, started[name])
    return results


def measure(address: str, containers: int, samples: list[float], with_ksm: bool) -> dict[str, Any]:
    t = time.perf_counter()
    ids = [f"d{i}" for i in range(containers)]
    try:
        for cid in ids:
            ctr(address, "run", "-d", IMAGE, cid, "sleep", "600")
        start_all = time.perf_counter() - t
        rows = [r.split() for r in ctr(address, "tasks", "ls").stdout.splitlines()[1:]]
        shims = {shim_of(int(r[1])) for r in rows if r[0] in ids}
        memory = shim_memory(shims)
        if with_ksm:
            memory |= memory_with_ksm(shims)
    finally:
        remove_containers(address, ids)
    ordered = sorted(samples)
    return {
        "run_rm_median_ms": statistics.median(ordered) * 1e3,
        "run_rm_p90_ms": ordered[max(0, int(len(ordered) * 0.9) - 1)] * 1e3,
        "start_containers_s": start_all,
        "containers": containers,
        "shims": len(shims),
        **memory,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-ksm", action="store_true", help="skip the second memory measurement with ksmd on")
    ap.add_argument("--seccomp", action="store_true",
                    help="also time runs with Dockyard's default seccomp profile, alternating with those without")
    ap.add_argument("--list-containers", type=int, nargs="*", default=[50, 1000],
                    help="running containers for the `ctr tasks ls` / `ctr containers ls` case (growing)")
    ap.add_argument("--list-rounds", type=int, default=20)
    ap.add_argument("--list-only", action="store_true", help="only the listing case")
    args = ap.parse_args()
    with_ksm = ksm.available() and not args.no_ksm and ksm.read("run") != 1
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        tar = Path(tmp) / "busybox.tar"
        tar.write_bytes(busybox_oci_archive(IMAGE))
        profile = None
        if args.seccomp:
            profile = Path(tmp) / "seccomp.json"
            profile.write_text(json.dumps(seccomp.default_profile().resolve(capabilities.DEFAULT)))
        results: dict[str, Any] = {}
        with containerd() as ctd_sock, dockyardd() as dy_sock:
            addresses = {"containerd": ctd_sock, "dockyardd": dy_sock}
            for sock in addresses.values():
                prepare(sock, tar)
            if args.list_containers:
                results["list_ms"] = list_latencies(addresses, sorted(args.list_containers), args.list_rounds)
            if args.list_only:
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2))
                return
            latencies = run_latencies(addresses, args.rounds, profile)
            # the 50-container phase one daemon at a time: their shims must not share the memory picture
            for name, sock in addresses.items():
                results[name] = measure(sock, args.containers, latencies[name], with_ksm)
    dy, ctd = results["dockyardd"], results["containerd"]
    if profile is not None:
        for name in addresses:
            plain, filtered = statistics.median(latencies[name]), statistics.median(latencies[f"{name}+seccomp"])
            results[name]["run_rm_seccomp_median_ms"] = filtered * 1e3
            print(f"{'run_rm_median_ms':30} {name} without {plain * 1e3:8.1f}   with seccomp {filtered * 1e3:8.1f}   "
                  f"ratio {filtered / plain:5.2f}")
    for key in ("run_rm_median_ms", "run_rm_p90_ms", "start_containers_s", "shim_pss_median_kib",
                "shim_own_pss_median_kib", "shim_private_dirty_median_kib"):
        print(f"{key:30} dockyardd {dy[key]:10.1f}   containerd {ctd[key]:10.1f}   "
              f"ratio {dy[key] / max(ctd[key], 1e-9):5.2f}")
    print(f"{'helper_pss_share_kib':30} dockyardd {dy['helper_pss_share_kib']:10.1f}")
    if with_ksm:
        for key in ("ksm_shim_pss_median_kib", "ksm_shim_own_pss_median_kib", "ksm_shim_private_dirty_median_kib"):
            print(f"{key:30} dockyardd {dy[key]:10.1f}   containerd {ctd[key]:10.1f}   "
                  f"ratio {dy[key] / max(ctd[key], 1e-9):5.2f}")
        print(f"{'ksm_settle_s':30} dockyardd {dy['ksm_settle_s']:10.1f}   (two full ksmd scans)")
        print(f"{'ksmd_cpu_percent':30} dockyardd {dy['ksmd_cpu_percent']:10.1f}   (of one core, default pace)")
        print(f"{'ksm_slow_shim_pss_median_kib':30} dockyardd {dy['ksm_slow_shim_pss_median_kib']:10.1f}   "
              "(after 30 s at a tenth of the pace)")
        print(f"{'ksmd_slow_cpu_percent':30} dockyardd {dy['ksmd_slow_cpu_percent']:10.1f}   "
              "(of one core, a tenth of the pace)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
