"""A fuzz driver for dock's streaming and interactive commands (logs, attach, events, build, exec,
cp, stats) against a private daemon: each case runs as a user would (a shell line, stdin from
/dev/null unless it says), under a deadline, and is judged on what a user must never see.

    python3 -m tests.streaming_fuzz            # warm client on and off; a report, exit 1 on a fault
    python3 -m tests.streaming_fuzz -k cp      # only the cases whose name has "cp"

A fault is: a Python traceback, exception name or "unexpected error" on stderr; a command still
running at its deadline (a hang); an "internal" status for what is the caller's input, or a
traceback in the daemon's log; a temp file left in dock's TMPDIR; a container left behind by a
command that made one. The regressions it found are tests in
tests/integration/test_streaming_inputs.py; this stays as the tool to look for the next ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.compat.runtimes import import_busybox, remove_everything
from tests.daemon import REPO, remove_base, start_daemon

BAD_WORDS = ("Traceback", "Error:", "Exception", "unexpected error", "RuntimeWarning", ": internal")
LOOP = "while true; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done"


@dataclass
class Case:
    name: str
    line: str  # a bash line; $D is dock, $W a scratch directory with a build context in $W/ctx
    deadline: float = 30


CASES = [
    # logs
    Case("logs-unknown", "$D logs nosuch"),
    Case("logs-never-started", "$D logs created"),
    Case("logs-follow-never-started", "$D logs -f created"),
    Case("logs-tail-odd", "$D logs --tail -1 running; $D logs --tail 99999999999999999999 stopped"),
    Case("logs-times-odd", "$D logs --since nan stopped; $D logs --since 99999999999999h --until 1e10 stopped"),
    Case("logs-follow-closed-pipe", "$D logs -f running | head -c1"),
    Case("logs-follow-removed", "($D logs -f doomed >/dev/null & p=$!; $D rm -f doomed >/dev/null; wait $p)"),
    # attach
    Case("attach-unknown", "$D attach nosuch"),
    Case("attach-stopped", "$D attach stopped"),
    Case("attach-detach-keys",
         "for k in , ctrl- ctrl-@@ $'\\xff' a,b,,c; do $D attach --detach-keys=\"$k\" running; done"),
    Case("attach-closed-pipe", "$D attach --sig-proxy=false running | head -c1"),
    Case("attach-stdin-zero", "$D attach --sig-proxy=false running </dev/zero | head -c1"),
    # events
    Case("events-malformed", "for f in 'topic==' '\"' ',,,' '!x' '~' 'a[0]==1'; do $D events \"$f\"; done"),
    Case("events-closed-pipe", "($D events | head -c1) & $D run --rm busybox true >/dev/null; wait"),
    # build
    Case("build-context-file", "$D build $W/ctx/Dockerfile"),
    Case("build-context-fifo", "$D build $W/fifo"),
    Case("build-huge-line", "$D build -f $W/huge.Dockerfile $W/ctx"),
    Case("build-nul", "$D build -f $W/nul.Dockerfile $W/ctx"),
    Case("build-unknown-instruction", "printf 'FROM busybox\\nFROB x\\n' | $D build -f - $W/ctx"),
    Case("build-bad-heredoc", "printf 'FROM busybox\\nRUN <<EOF\\necho\\n' | $D build -f - $W/ctx"),
    Case("build-copy-dotdot", "printf 'FROM busybox\\nCOPY ../../etc/passwd /x\\n' | $D build -f - $W/ctx"),
    Case("build-copy-symlink-out", "printf 'FROM busybox\\nCOPY out /x\\n' | $D build -f - $W/ctx"),
    Case("build-dev-zero", "$D build -f /dev/zero $W/ctx; $D build - </dev/zero; $D build -f - $W/ctx </dev/zero"),
    Case("build-stdin-garbage", "head -c 5000 /dev/urandom | $D build -"),
    # exec
    Case("exec-closed-pipe", f"$D exec running sh -c '{LOOP}' | head -c1"),
    Case("exec-i-stdin-zero", "$D exec -i running head -c 100000 </dev/zero | head -c1"),
    Case("exec-it-no-tty", "$D exec -it running true"),
    # run
    Case("run-closed-pipe", f"$D run --rm busybox sh -c '{LOOP}' | head -c1"),
    Case("run-i-closed-pipe", f"$D run -i --rm busybox sh -c '{LOOP}' | head -c1"),
    # cp
    Case("cp-dotdot", "$D cp running:/../../../etc/hostname $W/out1; $D cp $W/ctx/Dockerfile running:/../../../tmp/"),
    Case("cp-proc", "$D cp running:/proc/self/environ $W/out2; "
                    "$D cp $W/ctx/Dockerfile running:/proc/sys/kernel/hostname"),
    Case("cp-fifo-source", "$D cp $W/fifo running:/tmp/"),
    Case("cp-dest-file", "$D cp running:/etc $W/ctx/Dockerfile"),
    # stats
    Case("stats-unknown", "$D stats --no-stream nosuch"),
]


def run_case(case: Case, env: dict[str, str], log_at: int, log: Path) -> list[str]:
    proc = subprocess.Popen(["timeout", "-s", "KILL", str(case.deadline), "bash", "-c", case.line], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    faults = []
    if proc.returncode == 137:
        faults.append(f"hang: still running after {case.deadline} s")
    for word in BAD_WORDS:
        if word in err:
            faults.append(f"stderr has {word!r}: {err.strip()[-300:]}")
    daemon = log.read_text(errors="replace")[log_at:]
    if "Traceback" in daemon or "failed unexpectedly" in daemon:
        faults.append("daemon log: " + daemon[-600:])
    return faults


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    opts = ap.parse_args()
    d = start_daemon()
    work = Path(tempfile.mkdtemp(prefix="dy-fuzz-"))
    found = 0
    try:
        import_busybox(d)
        (work / "ctx").mkdir()
        (work / "ctx" / "Dockerfile").write_text("FROM busybox\n")
        (work / "ctx" / "out").symlink_to("/etc/shadow")
        (work / "huge.Dockerfile").write_text("FROM busybox\nRUN echo " + "a" * 2_000_000 + "\n")
        (work / "nul.Dockerfile").write_bytes(b"FROM busybox\nRUN echo \0\n")
        os.mkfifo(work / "fifo")
        for warm in ("0", "1"):
            tmp = work / f"tmp-{warm}"
            tmp.mkdir()
            env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address, "DOCK_WARM": warm,
                   "TMPDIR": str(tmp), "W": str(work), "D": f"{sys.executable} -m dock.cli"}
            env.pop("DOCK_DEBUG", None)
            for case in CASES:
                if opts.k not in case.name:
                    continue
                remove_everything(d)
                dock = [sys.executable, "-m", "dock.cli"]
                for args in (["run", "-d", "--name", "running", "busybox", "sh", "-c", f"{LOOP} >/dev/null"],
                             ["run", "-d", "--name", "doomed", "busybox", "sleep", "600"],
                             ["run", "--name", "stopped", "busybox", "true"],
                             ["containers", "create", "--name", "created", "busybox", "true"]):
                    subprocess.run([*dock, *args], env=env, capture_output=True, check=True)
                before = set(subprocess.run([*dock, "ps", "-a", "-q"], env=env, capture_output=True,
                                            text=True).stdout.split())
                at = d.log_path.stat().st_size
                faults = run_case(case, env, at, d.log_path)
                after = set(subprocess.run([*dock, "ps", "-a", "-q"], env=env, capture_output=True,
                                           text=True).stdout.split())
                if after - before:
                    faults.append(f"containers left behind: {sorted(after - before)}")
                if left := sorted(p.name for p in tmp.iterdir()):
                    faults.append(f"temp files left behind: {left}")
                    for p in tmp.iterdir():
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
                status = "FAULT" if faults else "ok"
                print(f"[warm={warm}] {status:5} {case.name}")
                for f in faults:
                    print(f"        {f}")
                found += bool(faults)
    finally:
        remove_everything(d)
        d.stop()
        remove_base(d)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{found} faulty case runs")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
