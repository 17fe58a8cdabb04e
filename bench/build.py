"""Image builds and commits: `dock build` / `dock commit` against a private dockyardd vs Debian's
`buildah bud` / `buildah commit`, on the same Dockerfile, context and busybox base.

    python3 bench/build.py [--rounds 3] [--files 20000] [--changed 1000] [--driver overlay] [--json out.json]

Cases, the two builders taking turns round by round (bench/rounds.py), whole commands timed
(CLI start included):
- cold: a multi-step Dockerfile (busybox base, 11 RUN/COPY steps, one COPY of `--files` small
  files) with `--no-cache` on both sides; dockyardd's context sent whole (its kept copy pruned
  first, untimed), and again with the copy kept from the build before (only changes are sent);
- rebuild: the same build again, nothing changed, the cache on (buildah: `--layers`);
- commit: of a container in which `--changed` files were written and rewritten (dockyardd: a
  stopped `dock run` container; buildah: `buildah from` + `buildah run`), a fresh container per
  round, only the commit timed.
Both sides have no network (`--network none`; the daemon runs with `--default-network none`),
buildah runs runc (crun refuses this host's hybrid cgroups) with storage of its own (overlay by
default, as dockyardd's snapshotter) in a temp dir. Reported: median and best seconds, and
dockyardd's time over buildah's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import dockyardd
from bench.rounds import report_ratios, report_times, take_turns
from tests.buildah import BUILDAH, Buildah
from tests.images import busybox_oci_archive

REPO = Path(__file__).resolve().parent.parent
BUILD_FLAGS = ("--runtime", "runc", "--network", "none", "--isolation", "oci", "--format", "docker",
               "--identity-label=false", "--pull=never")
DOCKERFILE = """\
FROM busybox
ENV APP=/app
WORKDIR /app
COPY config.txt /app/etc/
RUN mkdir -p /app/data && echo one > /app/data/one
COPY many/ /app/many/
RUN echo two > /app/data/two && ls /app/many | wc -l > /app/data/count
COPY scripts/ /app/scripts/
RUN sh /app/scripts/gen.sh
COPY more.txt /app/
RUN cat /app/more.txt > /app/data/more
RUN rm /app/data/one
COPY config.txt /app/etc/config2.txt
RUN echo done > /app/done
CMD ["sh"]
"""
GEN = "i=0; while [ $i -lt 200 ]; do echo generated $i > /app/data/gen$i; i=$((i+1)); done\n"


def make_context(ctx: Path, files: int) -> None:
    (ctx / "many").mkdir(parents=True)
    (ctx / "scripts").mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "config.txt").write_text("key=value\n")
    (ctx / "more.txt").write_text("more\n" * 100)
    (ctx / "scripts" / "gen.sh").write_text(GEN)
    per_dir = 1000
    for i in range(files):
        d = ctx / "many" / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir()
        (d / f"f{i:05d}.txt").write_text(f"file {i}\n" * (1 + i % 7))


def change_script(count: int) -> str:
    """Shell that writes `count` files in all: new ones, and rewrites of some it wrote in the image."""
    return (f"mkdir -p /changed && i=0; while [ $i -lt {count} ]; do echo changed $i > /changed/f$i; "
            "i=$((i+1)); done")


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _check(res: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if res.returncode != 0:
        raise RuntimeError(f"{what}: rc {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


class Dock:
    def __init__(self, address: str) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": address}

    def __call__(self, *args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True,
                             env=self.env, timeout=1800, stdin=subprocess.DEVNULL)
        return _check(res, f"dock {' '.join(args)}").stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=20000, help="files of the big COPY")
    ap.add_argument("--changed", type=int, default=1000, help="files a committed container changed")
    ap.add_argument("--driver", default="overlay", help="buildah's storage driver (overlay, vfs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if BUILDAH is None:
        raise SystemExit("buildah is not installed (scripts/install installs it)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dy-bench-build-") as tmp, dockyardd() as address, \
            Buildah.private("dy-bench-buildah-", args.driver) as buildah:
        work = Path(tmp)
        archive = work / "busybox.tar"
        archive.write_bytes(busybox_oci_archive())
        ctx = work / "ctx"
        make_context(ctx, args.files)
        dock = Dock(address)
        dock("images", "import", "--unpack", str(archive))
        buildah.load_oci_archive(archive)

        def bud(*extra: str) -> None:
            buildah.run("bud", *BUILD_FLAGS, *extra, "-t", "bench-build:1", str(ctx))

        times: dict[str, list[float]] = {}
        print(f"cold build: {args.files} files in one COPY, {DOCKERFILE.count(chr(10)) - 1} instructions", flush=True)
        times.update(take_turns({
            "cold buildah": lambda: timed(lambda: bud("--no-cache", "--layers")),
            # The context sent whole: the kept copy (a synced context) pruned first, untimed.
            "cold dockyardd": lambda: (dock("builder", "prune", "-a", "-f"),
                                       timed(lambda: dock("build", "--no-cache", "-t", "bench-build:1", str(ctx))))[1],
            # The daemon's copy of the context kept from the build before (BuildKit keeps its too).
            "cold dockyardd, kept context": lambda: timed(
                lambda: dock("build", "--no-cache", "-t", "bench-build:1", str(ctx))),
        }, args.rounds, flip=True))
        times.update(take_turns({
            "rebuild buildah": lambda: timed(lambda: bud("--layers")),
            "rebuild dockyardd": lambda: timed(lambda: dock("build", "-t", "bench-build:1", str(ctx))),
        }, args.rounds, flip=True))

        script = change_script(args.changed)
        counter = iter(range(1_000_000))

        def commit_ours() -> float:
            name = f"bench-commit-{next(counter)}"
            dock("run", "--name", name, "busybox", "sh", "-c", script)
            took = timed(lambda: dock("commit", name, f"bench-commit:{name}"))
            dock("rm", name)
            dock("images", "rm", f"bench-commit:{name}")
            return took

        def commit_buildah() -> float:
            name = f"bench-commit-{next(counter)}"
            buildah.run("from", "--pull=never", "--name", name, "busybox")
            buildah.run("run", "--runtime", "runc", "--network", "none", "--isolation", "oci", name,
                        "--", "sh", "-c", script)
            took = timed(lambda: buildah.run("commit", "-q", "--format", "docker", "--identity-label=false",
                                             name, f"bench-commit:{name}"))
            buildah.run("rm", name)
            buildah.run("rmi", f"bench-commit:{name}")
            return took

        times.update(take_turns({"commit buildah": commit_buildah, "commit dockyardd": commit_ours},
                                args.rounds, flip=True))
        results = report_times(times, width=30)
        ratios: dict[str, Any] = {}
        for case, ours in (("cold", "cold dockyardd"), ("cold", "cold dockyardd, kept context"),
                           ("rebuild", "rebuild dockyardd"), ("commit", "commit dockyardd")):
            report_ratios(results, f"{case} buildah", [ours], base_label="buildah")
            ratios[ours] = results[ours].pop("time_over_containerd")
            results[ours]["time_over_buildah"] = ratios[ours]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
