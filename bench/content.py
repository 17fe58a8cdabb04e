"""Content throughput, dockyardd vs containerd: `ctr content ingest` of one large blob, then
`ctr content get` of it.

    python3 bench/content.py [--size-mib 1024] [--runs 3] [--json out.json]

The same ctr binary feeds the same file (random bytes, on disk, in the page cache) to each
daemon; every run uses a new ref and new bytes' digest is the same, so each daemon deletes
the blob between runs. Then the blob is ingested once more and read back --runs times with
`ctr content get` to /dev/null (ctr reads through one Read call per 32 KiB, so this measures
per-call cost as much as streaming). Reported: best and median MiB/s per daemon and
dockyardd/containerd, for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd

NAMESPACE = "bench"


def make_blob(path: Path, size: int) -> str:
    import hashlib

    h = hashlib.sha256()
    chunk = 1 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(chunk, left))
            f.write(data)
            h.update(data)
            left -= len(data)
    return "sha256:" + h.hexdigest()


def ctr(address: str, *args: str, stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | int = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    ctr_bin = shutil.which("ctr")
    if ctr_bin is None:
        raise SystemExit("ctr is not installed (apt-get install containerd)")
    res = subprocess.run([ctr_bin, "--address", address, "--namespace", NAMESPACE, *args], stdin=stdin,
                         stdout=stdout, stderr=subprocess.PIPE, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {res.stderr.decode()}")
    return res


def measure(address: str, blob: Path, digest: str, runs: int) -> list[float]:
    size = blob.stat().st_size
    rates = []
    for i in range(runs):
        with open(blob, "rb") as f:
            start = time.perf_counter()
            ctr(address, "content", "ingest", "--expected-size", str(size), f"bench-{i}", stdin=f)
            elapsed = time.perf_counter() - start
        listed = ctr(address, "content", "ls", "-q").stdout.decode().split()
        assert digest in listed, f"{digest} not listed after ingest: {listed}"
        ctr(address, "content", "rm", digest)
        rates.append(size / elapsed / (1 << 20))
    return rates


def measure_get(address: str, blob: Path, digest: str, runs: int) -> list[float]:
    size = blob.stat().st_size
    with open(blob, "rb") as f:
        ctr(address, "content", "ingest", "--expected-size", str(size), "bench-get", stdin=f)
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        ctr(address, "content", "get", digest, stdout=subprocess.DEVNULL)
        rates.append(size / (time.perf_counter() - start) / (1 << 20))
    ctr(address, "content", "rm", digest)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("dockyardd", "containerd"), default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tmpfs", action="store_true",
                    help="put both daemons' roots on a private tmpfs (CPU-bound: no disk in the way)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-content-"))
    mnt = None
    if args.tmpfs:
        mnt = Path(tempfile.mkdtemp(prefix="bench-tmpfs-"))
        size = 2 * (args.size_mib << 20) + (256 << 20)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
        tempfile.tempdir = str(mnt)  # bench.daemons makes its dirs with mkdtemp
    try:
        blob = work / "blob"
        digest = make_blob(blob, args.size_mib << 20)
        results: dict[str, dict[str, float]] = {}
        daemons = {"containerd": containerd, "dockyardd": dockyardd}
        for name, start in daemons.items():
            if args.only and name != args.only:
                continue
            with start() as address:
                measure(address, blob, digest, 1)  # warm-up: daemon caches, page cache, code paths
                rates = measure(address, blob, digest, args.runs)
                gets = measure_get(address, blob, digest, args.runs)
            results[name] = {"best_mib_s": max(rates), "median_mib_s": statistics.median(rates),
                             "get_best_mib_s": max(gets), "get_median_mib_s": statistics.median(gets)}
            print(f"{name:11s} ingest best {max(rates):8.1f} MiB/s   median {statistics.median(rates):8.1f} MiB/s"
                  f"   get best {max(gets):8.1f} MiB/s   median {statistics.median(gets):8.1f} MiB/s", flush=True)
        if len(results) == 2:
            ratio = results["dockyardd"]["median_mib_s"] / results["containerd"]["median_mib_s"]
            get_ratio = results["dockyardd"]["get_median_mib_s"] / results["containerd"]["get_median_mib_s"]
            results["ratio"] = {"dockyardd_over_containerd_median": ratio,
                                "get_dockyardd_over_containerd_median": get_ratio}
            print(f"dockyardd/containerd (median): ingest {ratio:.2f} (goal >= 0.80), get {get_ratio:.2f}")
        if args.json:
            args.json.write_text(json.dumps({"size_mib": args.size_mib, "runs": args.runs, **results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if mnt is not None:
            tempfile.tempdir = None
            subprocess.run(["umount", str(mnt)], check=False)
            mnt.rmdir()


if __name__ == "__main__":
    main()
