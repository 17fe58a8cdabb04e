"""The real `ctr` running containers through dockyardd: run, exit codes, detached tasks, exec,
pause/resume, a terminal, stdin, events.

Parametrized over the shim that serves io.containerd.runc.v2: "dockyard" is the daemon's
default config (our `python -m shim`), "runc-go" is containerd's Go shim, the reference — the
same ctr session must behave the same on both. After each test nothing of it is left: no shim
or container process (checked by PID), no mount under the daemon's dirs, no container cgroup.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything, uid
from tests.ctr import exec_output
from tests.daemon import DaemonProcess, alive, shim_pids, stopping_new_zygotes
from tests.eventlog import EventLog

pytestmark = [pytest.mark.compat, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CGROUP_ROOT = Path("/sys/fs/cgroup")
# "dockyard" is dockyardd's default config (our shim); "runc-go" configures containerd's.
RUNTIMES = ["dockyard", "runc-go"]


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def task_pid(d: DaemonProcess, cid: str) -> int:
    rows = [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()[1:]]
    return next(int(r[1]) for r in rows if r[0] == cid)


class Session:
    """A daemon with the busybox image, and what the test started in it."""

    def __init__(self, d: DaemonProcess, runtime: str) -> None:
        self.d = d
        self.runtime = runtime
        self.ids: list[str] = []
        self.pids: set[int] = set()
        self.shims: set[int] = set()

    def new_id(self, name: str) -> str:
        cid = uid(name)
        self.ids.append(cid)
        return cid

    def cgroup_dirs(self, cid: str) -> list[Path]:
        rel = f"dockyard/default/{cid}" if self.runtime == "dockyard" else f"default/{cid}"
        return [CGROUP_ROOT / c / rel for c in ("memory", "pids", "freezer")]

    def watch(self, cid: str) -> None:
        """Remember the task's and the shims' PIDs, to check they are gone at the end."""
        self.pids.add(task_pid(self.d, cid))
        self.shims |= shim_pids(self.d)
        # Ours records its PID in the bundle (forked by the zygote, its command line is not its own).
        with contextlib.suppress(OSError, ValueError):
            self.shims.add(int((self.d.state / "tasks" / "default" / cid / "shim.pid").read_text()))


@pytest.fixture(params=RUNTIMES)
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    with daemon_with_runtime(request.param) as d:
        import_busybox(d)
        s = Session(d, request.param)
        try:
            yield s
        finally:
            remove_everything(d)
            s.shims |= shim_pids(d)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in s.pids | s.shims) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [p for p in s.pids | s.shims if alive(p)]
            for p in left:
                os.kill(p, signal.SIGKILL)
            assert not left, f"processes outlived the test: {left}"
            assert mounts_under(d.base) == []
            for cid in s.ids:
                for cg in s.cgroup_dirs(cid):
                    assert not cg.exists(), f"cgroup {cg} left behind"
            snapshots = ctr(d, "snapshots", "ls").stdout
            assert not [cid for cid in s.ids if cid in snapshots]
            for ns_dir in [*CGROUP_ROOT.glob("*/dockyard/default"), *CGROUP_ROOT.glob("*/default")]:
                with contextlib.suppress(OSError):  # the namespace level, kept while other tasks use it
                    ns_dir.rmdir()


@pytest.fixture(scope="module", autouse=True)
def stop_our_zygotes() -> Iterator[None]:
    with stopping_new_zygotes():
        yield


def test_run_rm_prints_and_exits(session: Session) -> None:
    d = session.d
    res = ctr(d, "run", "--rm", IMAGE, session.new_id("hello"), "echo", "hello")
    assert (res.returncode, res.stdout) == (0, "hello\n"), res.stderr
    res = ctr(d, "run", "--rm", IMAGE, session.new_id("three"), "sh", "-c", "exit 3")
    assert res.returncode == 3, res.stderr
    assert ctr(d, "containers", "ls", "-q").stdout == ""
    assert ctr(d, "tasks", "ls", "-q").stdout == ""


def test_detached_task_lifecycle(session: Session) -> None:
    d = session.d
    cid = session.new_id("bg")
    res = ctr(d, "run", "-d", IMAGE, cid, "sleep", "300")
    assert res.returncode == 0, res.stderr
    session.watch(cid)
    pid = task_pid(d, cid)
    rows = [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()]
    assert rows[0] == ["TASK", "PID", "STATUS"] and [cid, str(pid), "RUNNING"] in rows
    ps = ctr(d, "tasks", "ps", cid)
    assert ps.returncode == 0 and [str(pid), "-"] in [r.split() for r in ps.stdout.splitlines()]
    metrics = ctr(d, "tasks", "metrics", cid)
    assert metrics.returncode == 0, metrics.stderr
    assert re.search(r"^pids\.current\s+1\s*$", metrics.stdout, re.M)
    assert re.search(r"^memory\.usage_in_bytes\s+\d+", metrics.stdout, re.M)
    res = exec_output(partial(ctr, d), cid, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
    res = ctr(d, "tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "exit 4")
    assert res.returncode == 4, res.stderr
    assert ctr(d, "tasks", "pause", cid).returncode == 0
    assert [cid, str(pid), "PAUSED"] in [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()]
    assert ctr(d, "tasks", "resume", cid).returncode == 0
    assert [cid, str(pid), "RUNNING"] in [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()]
    # ctr refuses to remove a running task (client-side, from Tasks/Get's status).
    assert ctr(d, "tasks", "rm", cid).returncode == 1
    assert ctr(d, "tasks", "kill", "-s", "SIGKILL", cid).returncode == 0
    deadline = time.monotonic() + 10
    while "STOPPED" not in ctr(d, "tasks", "ls").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    res = ctr(d, "tasks", "rm", cid)
    assert res.returncode == 0, res.stderr
    assert "137" in res.stderr  # "task ... exit with non-zero exit code 137"
    assert ctr(d, "containers", "rm", cid).returncode == 0
    assert ctr(d, "containers", "ls", "-q").stdout == ""


def test_run_with_a_terminal(session: Session) -> None:
    d = session.d
    cid = session.new_id("tty")
    command = f"ctr --address {d.address} run --rm -t {IMAGE} {cid} sh -c 'tty; echo done'"
    res = subprocess.run(["script", "-qc", command, "/dev/null"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "/dev/pts/0" in res.stdout and "done" in res.stdout


def test_run_with_piped_stdin(session: Session) -> None:
    d = session.d
    cid = session.new_id("cat")
    # Input only once the task runs: ctr sets its CloseIO hook after Tasks/Create returns, and
    # with an EOF before that it never sends CloseIO, against containerd too (ctr-calls.md,
    # surprise 9). Running means Start was sent, so the hook is there.
    address = shlex.quote(d.address)
    running = f"until ctr --address {address} tasks ls | grep -q '^{cid} .*RUNNING'; do sleep 0.05; done"
    command = f"({running}; echo data; echo more) | ctr --address {address} run --rm {IMAGE} {cid} cat"
    res = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, "data\nmore\n"), res.stderr


def test_events_of_a_run(session: Session) -> None:
    d = session.d
    cid = session.new_id("ev")
    with EventLog(["ctr", "--address", d.address, "events"], d.address) as events:
        res = ctr(d, "run", "--rm", IMAGE, cid, "true")
        assert res.returncode == 0, res.stderr
        topics = events.task_topics(cid, until="/tasks/delete")
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], events.seen
