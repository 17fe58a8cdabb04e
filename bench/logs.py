"""Container logs (issue 15): what capturing costs, and how fast `dock logs --tail` answers.

    python3 bench/logs.py [--rounds 3] [--size 1g] [--json out.json]

A busybox container writes --size bytes of 100-byte lines to stdout (`yes … | head -c`), run
with `ctr run --rm` to completion; the cases alternate round by round:
- `dy-null`:  dockyardd, stdout is /dev/null (`--null-io`): the floor;
- `dy-log`:   dockyardd, the container log on (the label `dock run` sets; 10m x 3 files, the
              daemon's defaults): our shim reads the pipes and writes CRI records, rotating;
- `dy-file`:  dockyardd, `--log-uri file://` (our shim hands the file to the process);
- `cd-file`:  containerd + runc's shim, `--log-uri file://` (its shim copies pipes to the file).
Then one container writes --size bytes with a log big enough to keep it all (max-size = size/2,
3 files) and `dock logs --tail 100` is timed: through the SDK (the RPC alone) and the CLI.

    python3 bench/logs.py --sink-cpu [--rounds 3] [--size 256m]

The shim's side alone, in this process (no containers): busybox `yes | head -c` on the host
writes into a pipe that the log's code drains into CRI files (10m x 3), alternating the two paths
the shim has: `thread` (the writer thread reads the pipe itself, `LogSink.read_from`: a stream no
client reads) and `loop` (an event-loop copier hands chunks to the thread, `LogSink.put`: a
stream also copied to a client's FIFO). Reported: this process's CPU seconds per GiB and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd, dockyardd
from bench.rounds import take_turns
from dock.client import Client
from dockyard_common import containerlog as cl
from tests.images import busybox_oci_archive

IMAGE = "docker.io/library/busybox:latest"
NAMESPACE = "default"
CTR = shutil.which("ctr") or "ctr"
LINE = "x" * 99  # yes adds the newline: 100-byte lines
REPO = Path(__file__).resolve().parent.parent


def ctr(address: str, *args: str) -> None:
    res = subprocess.run([CTR, "--address", address, "--namespace", NAMESPACE, *args], capture_output=True,
                         text=True, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {res.stderr.strip()}")


def import_image(address: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(busybox_oci_archive(IMAGE))
        f.flush()
        ctr(address, "images", "import", f.name)


def writer(size: int) -> list[str]:
    return ["sh", "-c", f"yes {LINE} | head -c {size}"]


def run_case(address: str, size: int, opts: list[str], counter: list[int]) -> float:
    counter[0] += 1
    cid = f"logbench-{counter[0]}"
    start = time.perf_counter()
    ctr(address, "run", "--rm", *opts, IMAGE, cid, *writer(size))
    return time.perf_counter() - start


def tail_latency(address: str, cid: str, rounds: int) -> tuple[list[float], list[float]]:
    async def sdk() -> list[float]:
        out = []
        async with Client(address) as client:
            for _ in range(rounds):
                start = time.perf_counter()
                n = sum([1 async for _ in client.logs.read(cid, tail=100)])
                out.append(time.perf_counter() - start)
                assert n == 100, n
        return out

    sdk_times = asyncio.run(sdk())
    cli_times = []
    env = {"PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": address, "PATH": "/usr/bin:/bin"}
    for _ in range(rounds):
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "dock.cli", "logs", "--tail", "100", cid], capture_output=True,
                             env=env, cwd=REPO, check=True)
        cli_times.append(time.perf_counter() - start)
        assert res.stdout.count(b"\n") == 100
    return sdk_times, cli_times


async def sink_round(size: int, via_thread: bool) -> tuple[float, float]:
    """(CPU s, wall s) of this process draining `size` bytes of a busybox writer into a log."""
    from shim.logfile import LogConfig, LogSink
    from shim.stdio import LOG_CHUNK, LOG_PIPE_SIZE

    logdir = tempfile.mkdtemp(prefix="dylogs-")
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, LOG_PIPE_SIZE)
        os.set_blocking(r, False)
        sink = LogSink(LogConfig(logdir, 10 << 20, 3), streams=1)
        proc = subprocess.Popen(["sh", "-c", f"busybox yes {LINE} | busybox head -c {size}"], stdout=w)
        os.close(w)
        w = -1
        start, cpu = time.perf_counter(), time.process_time()
        if via_thread:
            sink.read_from(r, "stdout")
            sink.start()
            await sink.source_ended("stdout")
        else:
            sink.start()
            loop = asyncio.get_running_loop()
            while True:
                try:
                    data = os.read(r, LOG_CHUNK)
                except BlockingIOError:
                    ready = loop.create_future()
                    loop.add_reader(r, ready.set_result, None)
                    await ready
                    loop.remove_reader(r)
                    continue
                if not data:
                    break
                await sink.put("stdout", data)
            await sink.end("stdout")
        await sink.written()
        took, used = time.perf_counter() - start, time.process_time() - cpu
        proc.wait()
        return used, took
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        shutil.rmtree(logdir, ignore_errors=True)


def sink_cpu(size: int, rounds: int) -> dict[str, object]:
    walls: dict[str, list[float]] = {"thread": [], "loop": []}

    def case(name: str) -> float:  # the sample is the CPU time; the wall time is kept aside
        used, took = asyncio.run(sink_round(size, name == "thread"))
        walls[name].append(took)
        return used

    runs = take_turns({name: functools.partial(case, name) for name in walls}, rounds, flip=True)
    out: dict[str, object] = {"size": size, "rounds": rounds}
    for name, cpus in runs.items():
        cpu = statistics.median(cpus) * 2**30 / size
        wall = statistics.median(walls[name])
        out[name] = {"cpu_s_per_gib": cpu, "wall_s": wall, "cpu_runs": cpus}
        print(f"{name:7s} CPU {cpu:5.2f} s/GiB  wall median {wall:6.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1g")
    ap.add_argument("--json", default="")
    ap.add_argument("--sink-cpu", action="store_true", help="the shim's log path alone, in-process (see above)")
    args = ap.parse_args()
    size = cl.parse_size(args.size)
    if args.sink_cpu:
        summary = sink_cpu(size, args.rounds)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
        return
    results: dict[str, object] = {"size": size, "rounds": args.rounds}
    tmp = Path(tempfile.mkdtemp(prefix="dylogb-"))
    counter = [0]
    try:
        with dockyardd() as dy, containerd() as cd:
            import_image(dy)
            import_image(cd)
            log_label = ["--label", f"{cl.LABEL_DRIVER}={cl.DRIVER}", "--null-io"]
            cases = {
                "dy-null": lambda: run_case(dy, size, ["--null-io"], counter),
                "dy-log": lambda: run_case(dy, size, log_label, counter),
                "dy-file": lambda: run_case(dy, size, ["--log-uri", f"file://{tmp}/dy-{counter[0]}.log"], counter),
                "cd-file": lambda: run_case(cd, size, ["--log-uri", f"file://{tmp}/cd-{counter[0]}.log"], counter),
            }
            times = take_turns(cases, args.rounds, flip=True)
            for f in tmp.iterdir():
                f.unlink()
            for name, runs in times.items():
                med = statistics.median(runs)
                results[name] = {"median_s": med, "runs": runs, "mib_s": size / med / 2**20}
                print(f"{name:8s} median {med:7.2f} s  {size / med / 2**20:7.1f} MiB/s  "
                      f"({' '.join(f'{t:.2f}' for t in runs)})", flush=True)
            for name, ref in (("dy-log", "dy-null"), ("dy-log", "cd-file"), ("dy-file", "cd-file")):
                ratio = statistics.median(times[name]) / statistics.median(times[ref])
                results[f"{name}/{ref}"] = ratio
                print(f"{name} / {ref}: {ratio:.2f}x the time", flush=True)
            cid = "logbench-tail"
            ctr(dy, "run", *log_label, "--label", f"{cl.LABEL_MAX_SIZE}={max(size // 2, 1024 * 1024)}",
                IMAGE, cid, *writer(size))
            sdk_times, cli_times = tail_latency(dy, cid, 10)
            results["tail100_sdk_ms"] = statistics.median(sdk_times) * 1000
            results["tail100_cli_ms"] = statistics.median(cli_times) * 1000
            print(f"dock logs --tail 100 of {size / 2**20:.0f} MiB: SDK median {results['tail100_sdk_ms']:.1f} ms, "
                  f"CLI median {results['tail100_cli_ms']:.1f} ms", flush=True)
            ctr(dy, "containers", "rm", cid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
