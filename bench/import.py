"""Image import + unpack: `ctr images import` against dockyardd vs containerd, and `dock images import`.

    python3 bench/import.py [--size-mib 200] [--files 20000] [--layers 4] [--runs 2] [--tmpfs] [--json out.json]

The image is generated deterministically (seeded) in a temp dir: `--layers` gzip layers of
`--files` files in all, about `--size-mib` MiB uncompressed (half random bytes, half text that
compresses), written as one OCI archive. Each run imports it with unpack into overlayfs
(`ctr images import`, which unpacks through Snapshots + Diff.Apply) and then removes it with
`images rm --sync`, so every run starts from an empty store (and `sync` first, so one run's
disk writeback does not land in the next). Both daemons run throughout and the cases take
turns, one run each per round. Reported: median seconds per
daemon, dockyardd/containerd, and dockyardd's server-side import (`dock images import --unpack`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from bench.rounds import fresh_sample, report_ratios, report_times, take_turns

NAMESPACE = "bench"
IMAGE = "docker.io/library/bench-import:1"
_WORDS = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel", b"india", b"juliet"]


class _Hashing:
    """A write-only file that hashes and counts what passes through."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.h, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def _content(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    text = b" ".join(rng.choice(_WORDS) for _ in range(size // 5 + 1))
    return text[:size]


def _sizes(rng: random.Random, files: int, total: int) -> list[int]:
    """Mostly small files with a few large ones, scaled to `total` bytes."""
    raw = [rng.randint(1 << 20, 6 << 20) if rng.random() < 0.01 else rng.randint(200, 12000) for _ in range(files)]
    scale = total / sum(raw)
    return [max(0, int(s * scale)) for s in raw]


def write_layer(path: Path, rng: random.Random, index: int, sizes: list[int]) -> tuple[str, str, int]:
    """Write a gzip'd layer tar; returns (diff id, blob digest, blob size)."""
    with open(path, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:  # type: ignore[arg-type]
            uncompressed = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
                dirs = [f"layer{index}/d{i:03d}" for i in range(max(1, len(sizes) // 100))]
                for d in [f"layer{index}", *dirs]:
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                    tf.addfile(info)
                for i, size in enumerate(sizes):
                    info = tarfile.TarInfo(f"{dirs[i % len(dirs)]}/f{i:06d}")
                    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
                    tf.addfile(info, io.BytesIO(_content(rng, size)))
    return uncompressed.digest, compressed.digest, compressed.size


def build_archive(work: Path, size_mib: int, files: int, layers: int) -> Path:
    rng = random.Random(20261128)
    sizes = _sizes(rng, files, size_mib << 20)
    per = -(-files // layers)
    blobs = work / "blobs"
    blobs.mkdir()
    diff_ids, descs = [], []
    for i in range(layers):
        tmp = work / f"layer{i}.tar.gz"
        diff_id, digest, size = write_layer(tmp, rng, i, sizes[i * per:(i + 1) * per])
        tmp.rename(blobs / digest[7:])
        diff_ids.append(diff_id)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
                           "layers": descs}).encode()
    for blob in (config, manifest):
        (blobs / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
         "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"}}]}
    archive = work / "image.tar"
    with tarfile.open(archive, "w") as tf:
        small = (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode()))
        for name, data in small:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for path in sorted(blobs.iterdir()):
            tf.add(path, arcname=f"blobs/sha256/{path.name}")
    shutil.rmtree(blobs)
    return archive


def _run(args: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(args, capture_output=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed: {res.stderr.decode()}")
    return res


def ctr(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    ctr_bin = shutil.which("ctr")
    if ctr_bin is None:
        raise SystemExit("ctr is not installed (apt-get install containerd)")
    return _run([ctr_bin, "--address", address, "--namespace", NAMESPACE, *args], f"ctr {' '.join(args)}")


def dock(address: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return _run([sys.executable, "-m", "dock.cli", "--address", address, "--namespace", NAMESPACE, *args],
                f"dock {' '.join(args)}")


def measure(address: str, archive: Path, client: str) -> float:
    """Seconds of one import into an empty store, which is emptied again afterwards."""
    def transfer() -> None:
        if client == "ctr":
            ctr(address, "images", "import", str(archive))
        else:
            dock(address, "images", "import", "--unpack", "--quiet", str(archive))

    return fresh_sample(transfer, lambda: ctr(address, "images", "check").stdout.decode(),
                        partial(ctr, address, "images", "rm", "--sync", IMAGE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tmpfs", action="store_true",
                    help="put the daemons' roots on a private tmpfs (CPU-bound: no disk writeback in the way)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    mnt = None
    if args.tmpfs:
        mnt = Path(tempfile.mkdtemp(prefix="bench-tmpfs-"))
        size = 4 * (args.size_mib << 20) + (512 << 20)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        start = time.perf_counter()
        archive = build_archive(work, args.size_mib, args.files, args.layers)
        print(f"image: {args.files} files, {args.layers} layers, archive {archive.stat().st_size / (1 << 20):.0f} MiB "
              f"(built in {time.perf_counter() - start:.1f}s)", flush=True)
        if mnt is not None:
            tempfile.tempdir = str(mnt)  # bench.daemons makes its dirs with mkdtemp
        with containerd() as theirs, dockyardd() as ours:
            cases = (("containerd (ctr import)", "ctr", theirs), ("dockyardd (ctr import)", "ctr", ours),
                     ("dockyardd (dock import)", "dock", ours))
            times = take_turns({name: partial(measure, address, archive, client) for name, client, address in cases},
                               args.runs)
        results: dict[str, Any] = report_times(times, 26)
        report_ratios(results, "containerd (ctr import)", ["dockyardd (ctr import)", "dockyardd (dock import)"])
        if args.json:
            args.json.write_text(json.dumps({"size_mib": args.size_mib, "files": args.files, "layers": args.layers,
                                             "runs": args.runs, **results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if mnt is not None:
            tempfile.tempdir = None
            subprocess.run(["umount", str(mnt)], check=False)
            mnt.rmdir()


if __name__ == "__main__":
    main()
