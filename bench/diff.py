"""Layer diff time: `ctr snapshots diff` of the same change, dockyardd vs containerd.

    python3 bench/diff.py [--rounds 10] [--megabytes 48] [--json out.json]

Each daemon gets the same change on overlayfs (a committed base, then files added on top: text
that compresses ~3:1, random bytes that do not, many small files), and `ctr snapshots diff
--media-type ...tar+gzip work` runs against it round by round, the daemons taking turns; the
whole command is timed (ctr's start included, the layer written to /dev/null). dockyardd runs
twice: with containerd's encoders (`[diff] compressor = "containerd"`, dockyard-compress: the
same blob bytes as containerd) and with Python's zlib (`"python"`). Reported: median seconds
and the ratio to containerd.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from bench.rounds import report_ratios, report_times, take_turns
from dockyard_common.types import Mount
from tests.conformance.mounts import mount_all, unmount

NAMESPACE = "bench"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CTR = shutil.which("ctr")


def ctr(address: str, *args: str) -> str:
    assert CTR is not None
    res = subprocess.run([CTR, "--address", address, "--namespace", NAMESPACE, "snapshots", *args],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"ctr snapshots {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def fill(root: Path, megabytes: int) -> None:
    rng = random.Random(11)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)]
    third = (megabytes << 20) // 3
    (root / "text").write_bytes(b" ".join(rng.choice(words) for _ in range(third // 6)))
    (root / "noise").write_bytes(rng.randbytes(third))
    small = root / "small"
    small.mkdir()
    for i in range(third // 8192):
        (small / f"f{i}").write_bytes(b" ".join(rng.choice(words) for _ in range(1400)))


def make_change(address: str, megabytes: int) -> None:
    ctr(address, "prepare", "base-a")
    ctr(address, "commit", "base", "base-a")
    printed = json.loads(ctr(address, "prepare", "--mounts", "work", "base"))
    target = tempfile.mkdtemp(prefix="bench-diff-")
    try:
        mount_all([Mount(m["Type"], m["Source"], options=m["Options"] or []) for m in printed], target)
        try:
            fill(Path(target), megabytes)
        finally:
            unmount(target)
    finally:
        os.rmdir(target)


def diff_once(address: str) -> float:
    assert CTR is not None
    start = time.perf_counter()
    subprocess.run([CTR, "--address", address, "--namespace", NAMESPACE, "snapshots", "diff", "--media-type",
                    GZIP, "work"], stdout=subprocess.DEVNULL, check=True, timeout=600)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--megabytes", type=int, default=48, help="size of the change")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if CTR is None:
        print("bench/diff.py needs ctr (bash scripts/install)", file=sys.stderr)
        return 2
    if shutil.which("dockyard-compress") is None:
        print("bench/diff.py needs dockyard-compress (bash scripts/install builds it)", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        daemons = {
            "containerd": stack.enter_context(containerd()),
            "dockyardd (Go encoders)": stack.enter_context(dockyardd('[diff]\ncompressor = "containerd"\n')),
            "dockyardd (zlib)": stack.enter_context(dockyardd('[diff]\ncompressor = "python"\n')),
        }
        for address in daemons.values():
            make_change(address, args.megabytes)
            diff_once(address)  # warm the page cache alike
        times = take_turns({name: partial(diff_once, address) for name, address in daemons.items()},
                           rounds=args.rounds, flip=True)
        results = report_times(times, width=26)
        report_ratios(results, "containerd", [n for n in daemons if n != "containerd"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
