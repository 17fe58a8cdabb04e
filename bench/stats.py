"""Stats streams vs one-shot metrics: what watching N containers every second costs.

    python3 bench/stats.py [--containers 100] [--seconds 60] [--interval 1.0] [--idle 10] [--json out.json]
                           [--skip-containerd]

dockyardd: N busybox containers (`sleep`) on our shim; one client streams all of them with
dockyard.stats.v1.Stats/Stream at the interval (shims push samples, the daemon fans out).
containerd: the same containers on containerd's Go shim; one client calls the one-shot
containerd.services.tasks.v1.Tasks/Metrics (all tasks in one call) every interval.

Measured over the window (after a warm-up in which every container has reported once):
- CPU time of the daemon and of all the shims, from /proc/<pid>/stat, as a share of one core;
  the same over an idle window first (nobody watching), so the cost of watching is the difference;
- dockyardd: end-to-end latency, from the shim reading the cgroup (the sample's timestamp) to the
  client receiving it; containerd: the Metrics call's latency (a sample is at most that old);
- samples received per second, and the client's own CPU (for the record; not part of the goal).
Issue 7's goal: daemon + shims under 5% of one core together at 100 containers and 1 Hz.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from dock.client import Client
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from tests.images import busybox_oci_archive

NAMESPACE = "statsbench"
IMAGE = "docker.io/library/busybox:latest"
TICK = os.sysconf("SC_CLK_TCK")


def ctr(address: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", address, "--namespace", NAMESPACE, *args], capture_output=True,
                          text=True, timeout=timeout)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (0 for one that is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def total_cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def start_containers(address: str, n: int) -> list[str]:
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(busybox_oci_archive(IMAGE))
        f.flush()
        res = ctr(address, "images", "import", f.name)
        if res.returncode:
            raise SystemExit(f"import failed: {res.stderr}")
    ids = [f"sb{i:03d}" for i in range(n)]

    def one(cid: str) -> None:
        res = ctr(address, "run", "-d", IMAGE, cid, "sleep", "100000")
        if res.returncode:
            raise RuntimeError(f"ctr run {cid}: {res.stderr}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, ids))
    return ids


def remove_containers(address: str, ids: list[str]) -> None:
    def one(cid: str) -> None:
        ctr(address, "tasks", "kill", "-s", "SIGKILL", cid)
        for _ in range(100):
            if ctr(address, "tasks", "rm", cid).returncode == 0:
                break
            time.sleep(0.1)
        ctr(address, "containers", "rm", cid)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, ids))
    # The namespace-level cgroups the runtimes made (containerd's /<ns>, ours /dockyard/<ns>).
    for d in [*Path("/sys/fs/cgroup").glob(f"*/{NAMESPACE}"), *Path("/sys/fs/cgroup").glob(f"*/dockyard/{NAMESPACE}")]:
        with contextlib.suppress(OSError):
            d.rmdir()


async def measure_async(pids: Callable[[], tuple[int, list[int]]], seconds: float) -> tuple[float, float]:
    daemon, shims = pids()
    d0, s0 = cpu_seconds(daemon), total_cpu(shims)
    await asyncio.sleep(seconds)
    return cpu_seconds(daemon) - d0, total_cpu(shims) - s0


def shares(window: tuple[float, float], seconds: float) -> dict[str, float]:
    d, s = window
    return {"daemon_pct": d / seconds * 100, "shims_pct": s / seconds * 100, "total_pct": (d + s) / seconds * 100}


# ----- dockyardd ----------------------------------------------------------------------------------


def bench_dockyardd(n: int, seconds: float, interval: float, idle: float) -> dict[str, Any]:
    with dockyardd() as address:
        ids = start_containers(address, n)
        try:
            return asyncio.run(_stream(address, ids, seconds, interval, idle))
        finally:
            remove_containers(address, ids)


async def _stream(address: str, ids: list[str], seconds: float, interval: float, idle: float) -> dict[str, Any]:
    async with Client(address, NAMESPACE) as client:
        info = await client.info()
    state = Path(info.state)

    def pids() -> tuple[int, list[int]]:
        shims = [int((state / "tasks" / NAMESPACE / cid / "shim.pid").read_text()) for cid in ids]
        return info.pid, shims

    idle_window = await measure_async(pids, idle)
    latencies: list[float] = []
    seen: set[str] = set()
    warm = asyncio.Event()
    counting = False
    received = 0
    async with Client(address, NAMESPACE) as client:

        async def read() -> None:
            nonlocal received
            async for s in client.stats.stream(all=True, interval=interval):
                seen.add(s.id)
                if len(seen) == len(ids):
                    warm.set()
                if counting:
                    received += 1
                    latencies.append((s.received_ns - s.timestamp_ns) / 1e6)

        reader = asyncio.create_task(read())
        try:
            await asyncio.wait_for(warm.wait(), 60)
            await asyncio.sleep(interval)
            counting = True
            c0 = time.process_time()
            window = await measure_async(pids, seconds)
            client_cpu = time.process_time() - c0
            counting = False
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return {"idle": shares(idle_window, idle), "watching": shares(window, seconds),
            "latency_ms": {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "max": max(latencies)},
            "samples_per_s": received / seconds, "client_cpu_pct": client_cpu / seconds * 100}


# ----- containerd ---------------------------------------------------------------------------------


def bench_containerd(n: int, seconds: float, interval: float, idle: float) -> dict[str, Any]:
    with containerd() as address:
        ids = start_containers(address, n)
        try:
            return asyncio.run(_poll(address, ids, seconds, interval, idle))
        finally:
            remove_containers(address, ids)


def _processes_mentioning(text: str) -> dict[int, list[bytes]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(text.encode() in a for a in argv):
                found[int(entry)] = argv
    return found


async def _poll(address: str, ids: list[str], seconds: float, interval: float, idle: float) -> dict[str, Any]:
    base = str(Path(address).parent)
    procs = _processes_mentioning(base)
    daemon = next(p for p, argv in procs.items() if argv[0].endswith(b"containerd"))
    shims = [p for p, argv in procs.items() if b"shim" in argv[0]]
    if len(shims) < len(ids):
        raise SystemExit(f"found {len(shims)} containerd shims for {len(ids)} containers")

    def pids() -> tuple[int, list[int]]:
        return daemon, shims

    idle_window = await measure_async(pids, idle)
    md = [("containerd-namespace", NAMESPACE)]
    latencies: list[float] = []
    received = 0
    async with grpc.aio.insecure_channel(f"unix:{address}") as ch:
        stub = tasks_pb2_grpc.TasksStub(ch)
        await stub.Metrics(tasks_pb2.MetricsRequest(), metadata=md)  # warm-up
        loop = asyncio.get_running_loop()

        async def poll() -> None:
            nonlocal received
            next_at = loop.time()
            while True:
                t = time.perf_counter()
                resp = await stub.Metrics(tasks_pb2.MetricsRequest(), metadata=md)
                latencies.append((time.perf_counter() - t) * 1000)
                received += len(resp.metrics)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))

        c0 = time.process_time()
        poller = asyncio.create_task(poll())
        window = await measure_async(pids, seconds)
        client_cpu = time.process_time() - c0
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    return {"idle": shares(idle_window, idle), "watching": shares(window, seconds),
            "latency_ms": {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "max": max(latencies)},
            "samples_per_s": received / seconds, "client_cpu_pct": client_cpu / seconds * 100}


# ----- report -------------------------------------------------------------------------------------


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{args.containers} containers, interval {args.interval}s, window {args.seconds}s, "
          f"idle window {args.idle}s; CPU as % of one core")
    names = [k for k in ("dockyardd", "containerd") if k in results]
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows = [
        ("daemon CPU % (watching)", lambda r: f"{r['watching']['daemon_pct']:.2f}"),
        ("shims CPU % (watching)", lambda r: f"{r['watching']['shims_pct']:.2f}"),
        ("total CPU % (watching)", lambda r: f"{r['watching']['total_pct']:.2f}"),
        ("total CPU % (idle)", lambda r: f"{r['idle']['total_pct']:.2f}"),
        ("cost of watching (watching - idle)",
         lambda r: f"{r['watching']['total_pct'] - r['idle']['total_pct']:.2f}"),
        ("latency p50 / p99 ms", lambda r: f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f}"),
        ("samples / s", lambda r: f"{r['samples_per_s']:.1f}"),
        ("client CPU %", lambda r: f"{r['client_cpu_pct']:.2f}"),
    ]
    for label, get in rows:
        print(f"| {label} | " + " | ".join(get(results[k]) for k in names) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--idle", type=float, default=10)
    p.add_argument("--skip-containerd", action="store_true")
    p.add_argument("--json", default="")
    args = p.parse_args()
    results: dict[str, Any] = {}
    results["dockyardd"] = bench_dockyardd(args.containers, args.seconds, args.interval, args.idle)
    if not args.skip_containerd:
        results["containerd"] = bench_containerd(args.containers, args.seconds, args.interval, args.idle)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
