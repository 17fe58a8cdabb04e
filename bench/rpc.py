"""Unary RPC latency and throughput: dockyardd vs containerd, same Python gRPC client.

    python3 bench/rpc.py [--calls 3000] [--json out.json]
    python3 bench/rpc.py --mixed [--clients 100,200] [--per-client 200] [--rounds 3]

Default: Namespaces/List and Namespaces/Get with 1, 10 and 100 concurrent callers on one
channel, both daemons up at once, each case run on one then the other (the order alternating).
Reported as p50/p99 latency and calls per second, and dockyardd/containerd ratios.

--mixed (issue 11 item 12): N concurrent clients, each its own channel and so its own
connection (as N client processes would have), spread over a few client processes so the
client is not one Python process; each makes `--per-client` calls cycling Namespaces/List,
Containers/List, Images/List and Content/Info. Connecting is inside the timed window (the
clients start together). Rounds alternate the daemons; medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from dockyard_api.containerd.services.containers.v1 import containers_pb2 as cpb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as cpb_grpc
from dockyard_api.containerd.services.content.v1 import content_pb2 as kpb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc as kpb_grpc
from dockyard_api.containerd.services.images.v1 import images_pb2 as ipb
from dockyard_api.containerd.services.images.v1 import images_pb2_grpc as ipb_grpc
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2 as pb
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import descriptor_pb2

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


# -- the mixed case -------------------------------------------------------------------------

BLOB = b"dockyard rpc bench blob\n" * 64
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
SEED_ITEMS = 10  # containers and images in the namespace: List answers carry a few each


def seed(address: str) -> None:
    """The namespace, SEED_ITEMS containers and images, and one blob (through ctr: the
    Content/Write protocol is ctr's to speak)."""
    async def run() -> None:
        async with grpc.aio.insecure_channel(f"unix:{address}") as ch:
            try:
                await pb_grpc.NamespacesStub(ch).Create(
                    pb.CreateNamespaceRequest(namespace=pb.Namespace(name="bench")), metadata=MD)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            containers, images = cpb_grpc.ContainersStub(ch), ipb_grpc.ImagesStub(ch)
            for i in range(SEED_ITEMS):
                c = cpb.Container(id=f"bench-{i}", image=f"docker.io/library/bench:{i}",
                                  labels={"bench": "rpc", "index": str(i)},
                                  runtime=cpb.Container.Runtime(name="io.containerd.runc.v2"))
                c.spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                c.spec.value = b'{"ociVersion":"1.1.0"}'
                await containers.Create(cpb.CreateContainerRequest(container=c), metadata=MD)
                target = descriptor_pb2.Descriptor(media_type="application/vnd.oci.image.index.v1+json",
                                                   digest=BLOB_DIGEST, size=len(BLOB))
                await images.Create(ipb.CreateImageRequest(image=ipb.Image(
                    name=f"docker.io/library/bench:{i}", labels={"bench": "rpc"}, target=target)), metadata=MD)
    uvloop.run(run())
    subprocess.run(["ctr", "--address", address, "--namespace", "bench", "content", "ingest", "bench-blob"],
                   input=BLOB, check=True, capture_output=True)


async def _client_calls(address: str, calls: int, start_at: float) -> list[float]:
    """One client: its own connection (a local subchannel pool: grpcio would otherwise share one
    connection among channels to the same target), `calls` calls of the four kinds in turn."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with grpc.aio.insecure_channel(f"unix:{address}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        kinds = [
            (pb_grpc.NamespacesStub(ch).List, pb.ListNamespacesRequest()),
            (cpb_grpc.ContainersStub(ch).List, cpb.ListContainersRequest()),
            (ipb_grpc.ImagesStub(ch).List, ipb.ListImagesRequest()),
            (kpb_grpc.ContentStub(ch).Info, kpb.InfoRequest(digest=BLOB_DIGEST)),
        ]
        out = []
        for i in range(calls):
            fn, req = kinds[i % 4]
            t = time.perf_counter()
            await fn(req, metadata=MD)
            out.append(time.perf_counter() - t)
        return out


def _client_process(address: str, clients: int, calls: int, start_at: float) -> tuple[list[float], float]:
    async def run() -> list[float]:
        parts = await asyncio.gather(*(_client_calls(address, calls, start_at) for _ in range(clients)))
        return [x for p in parts for x in p]
    lat = uvloop.run(run())
    return lat, time.time()


def measure_mixed(pool: Any, address: str, clients: int, calls: int, procs: int) -> dict[str, float]:
    """`clients` clients over `procs` client processes, all starting at one instant; wall time
    until the last call ends."""
    start_at = time.time() + 0.5  # every (already started) process has its share by then
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    results = pool.starmap(_client_process, [(address, n, calls, start_at) for n in shares if n], chunksize=1)
    latencies = sorted(x for lat, _ in results for x in lat)
    elapsed = max(end for _, end in results) - start_at
    return {
        "seconds": elapsed,
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
    }


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_mixed(addresses: dict[str, str], client_counts: list[int], calls: int, rounds: int,
              procs: int) -> dict[str, Any]:
    for address in addresses.values():
        seed(address)
    order = list(addresses)
    raw: dict[str, dict[int, list[dict[str, float]]]] = {n: {c: [] for c in client_counts} for n in addresses}
    loads = []
    # spawn, not fork: the parent has used grpc (seeding), which does not survive a fork
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        for r in range(rounds):
            for clients in client_counts:
                for name in order if r % 2 == 0 else order[::-1]:
                    loads.append(_load())
                    m = measure_mixed(pool, addresses[name], clients, calls, procs)
                    raw[name][clients].append(m)
                    print(f"round {r + 1} {name:10} x{clients}: {m['seconds']:.2f} s, {m['calls_per_s']:.0f} "
                          f"calls/s, p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms (load {loads[-1]:.1f})",
                          flush=True)
    med = {name: {c: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for c, ms in per.items()}
           for name, per in raw.items()}
    return {"raw": raw, "median": med, "load": [min(loads), max(loads)]}


def main_mixed(args: argparse.Namespace) -> None:
    counts = [int(x) for x in args.clients.split(",")]
    with containerd() as ctd, dockyardd() as dy:
        res = run_mixed({"containerd": ctd, "dockyardd": dy}, counts, args.per_client, args.rounds, args.procs)
    med = res["median"]
    print(f"medians of {args.rounds} rounds, {args.per_client} calls per client, {args.procs} client processes, "
          f"load {res['load'][0]:.1f}-{res['load'][1]:.1f}")
    print(f"{'clients':8} {'seconds (dy/ctd)':>18} {'tput ratio':>10} {'p99 ms (dy/ctd)':>18} {'p99 ratio':>9}")
    for c in counts:
        dy, ctd = med["dockyardd"][c], med["containerd"][c]
        print(f"{c:<8} {dy['seconds']:>8.2f} / {ctd['seconds']:<7.2f} {dy['calls_per_s'] / ctd['calls_per_s']:>10.2f} "
              f"{dy['p99_ms']:>8.1f} / {ctd['p99_ms']:<7.1f} {dy['p99_ms'] / ctd['p99_ms']:>9.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--mixed", action="store_true", help="the many-connection mixed case (issue 11)")
    ap.add_argument("--clients", default="100,200", help="--mixed: client counts, comma-separated")
    ap.add_argument("--per-client", type=int, default=200, help="--mixed: calls per client")
    ap.add_argument("--rounds", type=int, default=3, help="--mixed: rounds per daemon, alternating")
    ap.add_argument("--procs", type=int, default=4, help="--mixed: client processes")
    args = ap.parse_args()
    if args.mixed:
        main_mixed(args)
        return
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
