"""Registry pull + unpack: dockyardd vs containerd, from the same local docker-registry.

    python3 bench/pull.py [--size-mib 200] [--layers 4] [--files 20000] [--runs 2] [--images big,many]
                          [--tmpfs] [--json out.json]

Two images are generated deterministically (bench/import.py's generator) and pushed with
skopeo into a private docker-registry on 127.0.0.1: "big", about `--size-mib` MiB in
`--layers` layers of a few hundred files, and "many", `--files` small files. Each run pulls
with unpack into overlayfs, then removes the image with `images rm --sync` (and `sync`s), so
every run starts empty. Both daemons run throughout and the cases take turns, one run each
per round:

    containerd  ctr images pull --plain-http     (client-side: ctr fetches and unpacks)
    dockyardd   ctr images pull --plain-http     (the same client against our daemon)
    dockyardd   dock pull --plain-http           (server-side: the daemon fetches and unpacks)

Reported: median seconds per case and each dockyardd case over containerd's (goal <= 1.0).
With `--tmpfs` the registry and both daemons keep their data on a private tmpfs: on a shared
VM the disk's speed varies 3-4x with what else runs, which hides the CPU cost being compared.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from bench.rounds import fresh_sample, report_ratios, report_times, take_turns
from tests.registry import start_registry

gen = importlib.import_module("bench.import")  # `import` is a keyword: the module is loaded by name
NAMESPACE = "bench"


def _run(args: list[str], what: str) -> None:
    res = subprocess.run(args, capture_output=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed: {res.stderr.decode()}")


def ctr(address: str, *args: str) -> str:
    res = subprocess.run(["ctr", "--address", address, "--namespace", NAMESPACE, *args], capture_output=True,
                         timeout=1800, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)} failed: {res.stderr}")
    return res.stdout


def pull(address: str, ref: str, client: str) -> None:
    if client == "ctr":
        ctr(address, "images", "pull", "--plain-http", ref)
    else:
        _run([sys.executable, "-m", "dock.cli", "--address", address, "--namespace", NAMESPACE, "pull",
              "--plain-http", "--quiet", ref], f"dock pull {ref}")


def measure(address: str, ref: str, client: str) -> float:
    """Seconds of one pull into an empty store, which is emptied again afterwards."""
    return fresh_sample(partial(pull, address, ref, client), partial(ctr, address, "images", "check"),
                        partial(ctr, address, "images", "rm", "--sync", ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--images", default="big,many", help="which of the two images to pull (comma-separated)")
    ap.add_argument("--tmpfs", action="store_true", help="keep the registry's and the daemons' data on a private tmpfs")
    args = ap.parse_args()
    for tool in ("ctr", "skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/install")
    mnt = None
    if args.tmpfs:
        mnt = Path(tempfile.mkdtemp(prefix="bench-tmpfs-"))
        size = 6 * (args.size_mib << 20) + (1 << 30)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
        tempfile.tempdir = str(mnt)  # the registry and bench.daemons make their dirs with mkdtemp
    work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
    results: dict[str, Any] = {}
    try:
        with start_registry() as reg:
            images = {}
            for name, size, files, layers in (("big", args.size_mib, max(400, args.layers * 50), args.layers),
                                              ("many", max(20, args.files // 500), args.files, 2)):
                if name not in args.images.split(","):
                    continue
                d = work / name
                d.mkdir()
                started = time.perf_counter()
                archive = gen.build_archive(d, size, files, layers)
                ref = f"{reg.host}/bench/{name}:1"
                _run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{ref}"],
                     f"skopeo copy {name}")
                archive.unlink()
                images[name] = ref
                print(f"{name}: {files} files, {layers} layers, ~{size} MiB, in the registry as {ref} "
                      f"({time.perf_counter() - started:.1f}s)", flush=True)
            with containerd() as theirs, dockyardd() as ours:
                cases = (("containerd (ctr pull)", "ctr", theirs), ("dockyardd (ctr pull)", "ctr", ours),
                         ("dockyardd (dock pull)", "dock", ours))
                for image, ref in images.items():
                    times = take_turns({f"{image}: {case}": partial(measure, address, ref, client)
                                        for case, client, address in cases}, args.runs)
                    found = report_times(times, 30)
                    report_ratios(found, f"{image}: containerd (ctr pull)",
                                  [f"{image}: dockyardd (ctr pull)", f"{image}: dockyardd (dock pull)"], "containerd")
                    results.update(found)
        if args.json:
            args.json.write_text(json.dumps({"size_mib": args.size_mib, "files": args.files, "layers": args.layers,
                                             "runs": args.runs, "tmpfs": args.tmpfs, **results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if mnt is not None:
            tempfile.tempdir = None
            subprocess.run(["umount", str(mnt)], check=False)
            mnt.rmdir()


if __name__ == "__main__":
    main()
