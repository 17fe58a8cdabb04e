"""Snapshot latency: prepare + mounts + remove, dockyardd vs containerd.

    python3 bench/snapshots.py [--rounds 30] [--json out.json]

Two clients, the same for both daemons:
- `ctr`: one round is `ctr snapshots prepare K P`, `ctr snapshots mounts DIR K`, `ctr snapshots rm K`
  (three processes, as a user or script runs them); process start-up is part of what is measured.
- gRPC: the same three calls from one Python grpc.aio channel, so the server's share is visible.
Both on overlayfs, on top of a committed parent (a container's rootfs on an image layer) and
with no parent. Reported: median and p90 per round (ms) and the dockyardd/containerd ratio of
medians. Goal: within 1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc

NAMESPACE = "bench"
MD = [("containerd-namespace", NAMESPACE)]
ROOT = {"containerd.io/gc.root": "2026-01-01T00:00:00Z"}
CTR = shutil.which("ctr")


def ctr(address: str, *args: str) -> None:
    assert CTR is not None
    res = subprocess.run([CTR, "--address", address, "--namespace", NAMESPACE, "snapshots", *args],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"ctr snapshots {' '.join(args)}: {res.stderr.strip()}")


def make_parent(address: str) -> None:
    ctr(address, "prepare", "bench-parent-tmp")
    ctr(address, "commit", "bench-parent", "bench-parent-tmp")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered) * 1e3, "p90_ms": ordered[int(len(ordered) * 0.9) - 1] * 1e3,
            "rounds": len(ordered)}


def ctr_rounds(address: str, parent: str, rounds: int) -> list[float]:
    target = tempfile.mkdtemp(prefix="bench-mnt-")
    try:
        samples = []
        for i in range(rounds + 2):  # two warm-up rounds
            key = f"ctr-{parent or 'none'}-{i}"
            start = time.perf_counter()
            ctr(address, "prepare", key, *([parent] if parent else []))
            ctr(address, "mounts", target, key)
            ctr(address, "rm", key)
            if i >= 2:
                samples.append(time.perf_counter() - start)
        return samples
    finally:
        shutil.rmtree(target, ignore_errors=True)


async def grpc_rounds(address: str, parent: str, rounds: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"unix:{address}") as ch:
        stub = pb_grpc.SnapshotsStub(ch)
        samples = []
        for i in range(rounds + 5):
            key = f"grpc-{parent or 'none'}-{i}"
            start = time.perf_counter()
            await stub.Prepare(pb.PrepareSnapshotRequest(snapshotter="overlayfs", key=key, parent=parent,
                                                         labels=ROOT), metadata=MD)
            await stub.Mounts(pb.MountsRequest(snapshotter="overlayfs", key=key), metadata=MD)
            await stub.Remove(pb.RemoveSnapshotRequest(snapshotter="overlayfs", key=key), metadata=MD)
            if i >= 5:
                samples.append(time.perf_counter() - start)
        return samples


def measure(address: str, rounds: int) -> dict[str, dict[str, float]]:
    make_parent(address)
    out = {}
    for parent in ("bench-parent", ""):
        label = "on a parent" if parent else "no parent"
        out[f"ctr, {label}"] = summary(ctr_rounds(address, parent, rounds))
        out[f"gRPC, {label}"] = summary(asyncio.run(grpc_rounds(address, parent, rounds * 5)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="ctr rounds per case (gRPC runs 5x as many)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.rounds < 20:
        ap.error("--rounds must be at least 20")
    if CTR is None:
        raise SystemExit("ctr is not installed (apt-get install containerd)")
    results: dict[str, Any] = {}
    with dockyardd() as address:
        results["dockyardd"] = measure(address, args.rounds)
    with containerd() as address:
        results["containerd"] = measure(address, args.rounds)
    print(f"{'case':<24} {'dockyardd ms':>13} {'p90':>7} {'containerd ms':>14} {'p90':>7} {'ratio':>6}")
    ratios = {}
    for case, dy in results["dockyardd"].items():
        cd = results["containerd"][case]
        ratios[case] = dy["median_ms"] / cd["median_ms"]
        print(f"{case:<24} {dy['median_ms']:>13.2f} {dy['p90_ms']:>7.2f} {cd['median_ms']:>14.2f} "
              f"{cd['p90_ms']:>7.2f} {ratios[case]:>6.2f}")
    results["ratio_of_medians"] = ratios
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
