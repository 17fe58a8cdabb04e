"""Unary RPC latency and throughput: dockyardd vs containerd, same Python gRPC client.

    python3 bench/rpc.py [--calls 3000] [--json out.json]

Namespaces/List and Namespaces/Get with 1, 10 and 100 concurrent callers on one channel, both
daemons up at once, each case run on one then the other (the order alternating).
Reported as p50/p99 latency and calls per second, and dockyardd/containerd ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2 as pb
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc

MD = [("containerd-namespace", "bench")]


async def measure(address: str, method: str, concurrency: int, calls: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"unix:{address}") as ch:
        stub = pb_grpc.NamespacesStub(ch)
        try:
            await stub.Create(pb.CreateNamespaceRequest(namespace=pb.Namespace(name="bench")), metadata=MD)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        fn = stub.List if method == "List" else stub.Get
        req = pb.ListNamespacesRequest() if method == "List" else pb.GetNamespaceRequest(name="bench")
        for _ in range(100):  # warm-up
            await fn(req, metadata=MD)
        latencies: list[float] = []
        per_worker = calls // concurrency

        async def worker() -> None:
            for _ in range(per_worker):
                t = time.perf_counter()
                await fn(req, metadata=MD)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "calls_per_s": len(latencies) / elapsed,
    }


def run_suite(addresses: dict[str, str], calls: int) -> dict[str, dict[str, dict[str, float]]]:
    """Every case on each daemon in turn, the order flipping case by case: load drifting on a
    shared host lands on both alike."""
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in addresses}
    order = list(addresses)
    for i, (method, conc) in enumerate((m, c) for m in ("List", "Get") for c in (1, 10, 100)):
        for name in order if i % 2 == 0 else order[::-1]:
            out[name][f"{method} x{conc}"] = uvloop.run(measure(addresses[name], method, conc, calls))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with containerd() as ctd, dockyardd() as dy:
        results: dict[str, Any] = run_suite({"containerd": ctd, "dockyardd": dy}, args.calls)
    print(f"{'case':12} {'p50 µs (dy/ctd)':>24} {'ratio':>6} {'calls/s (dy/ctd)':>22} {'ratio':>6}")
    for case, ctd in results["containerd"].items():
        dy = results["dockyardd"][case]
        print(f"{case:12} {dy['p50_us']:>11.0f} / {ctd['p50_us']:<10.0f} {dy['p50_us'] / ctd['p50_us']:>6.2f} "
              f"{dy['calls_per_s']:>10.0f} / {ctd['calls_per_s']:<9.0f} "
              f"{dy['calls_per_s'] / ctd['calls_per_s']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
