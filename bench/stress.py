"""Long mixed-load run: supervisor/grpcserver vs grpcio's aio server, the same handlers.

    python3 bench/stress.py [--minutes 5] [--rounds 2] [--seed N] [--json out.json]

The load of tests/integration/grpc_stress.py (unary, client-, server- and bidi-streaming calls
with deadlines, cancellations and raw RST_STREAMs on 3 long-lived connections x 8 callers),
against each server in its own process, alternating round by round. The point is that every
call ends (no hang); reported per server: calls answered, calls/s, the outcome counts, the
server's RSS after each round. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration import grpc_stress


async def serve(kind: str, path: str) -> None:
    if kind == "dockyard":
        from supervisor.grpcserver import Server
        server: Any = Server()
    else:
        import grpc
        server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc_stress.HANDLERS,))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    await asyncio.Event().wait()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_round(kind: str, seconds: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dy-stress-") as tmp:
        path = f"{tmp}/s.sock"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--path", path])
        try:
            while not os.path.exists(path):
                if proc.poll() is not None:
                    raise RuntimeError(f"{kind} server exited with {proc.returncode}")
                time.sleep(0.05)
            start = time.perf_counter()
            tally = uvloop.run(grpc_stress.run(path, seconds, seed))
            elapsed = time.perf_counter() - start
            rss = _rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    return {"server": kind, "seed": seed, "calls": tally.calls, "calls_per_s": tally.calls / elapsed,
            "hung": len(tally.hung), "unexpected": tally.unexpected[:5], "raw_resets": tally.resets,
            "outcomes": dict(tally.outcomes), "server_rss_mib": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="rounds per server, alternating")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve", choices=("dockyard", "grpcio"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        uvloop.run(serve(args.serve, args.path))
        return
    seconds = args.minutes * 60 / args.rounds
    results = []
    for i in range(args.rounds):
        for kind in ("dockyard", "grpcio") if i % 2 == 0 else ("grpcio", "dockyard"):
            r = one_round(kind, seconds, args.seed + i)
            results.append(r)
            print(f"{kind:9} seed {r['seed']}: {r['calls']} calls ({r['calls_per_s']:.0f}/s), hung {r['hung']}, "
                  f"unexpected {len(r['unexpected'])}, rss {r['server_rss_mib']:.0f} MiB, {r['outcomes']}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
