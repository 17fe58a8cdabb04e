"""Containers outlive the daemon: kill -9 dockyardd, they keep running, and it finds them again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, RUNTIMES, daemon_with_runtime, import_busybox, remove_everything, uid
from tests.ctr import exec_output
from tests.daemon import DaemonProcess, start_daemon
from tests.waiting import wait_until

pytestmark = [pytest.mark.compat, pytest.mark.root]


@pytest.fixture(params=RUNTIMES)
def daemon_rt(request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    with daemon_with_runtime(request.param) as d:
        import_busybox(d)
        yield d
        remove_everything(d)


def restart(d: DaemonProcess) -> DaemonProcess:
    """kill -9 the daemon, start a new one on the same dirs (and config)."""
    d.stop(signal.SIGKILL)
    extra = ["--config", str(d.base / "config.toml")] if (d.base / "config.toml").exists() else []
    new = start_daemon(base=d.base, extra=extra)
    d.proc = new.proc
    return d


def pid_of(d: DaemonProcess, cid: str) -> int:
    rows = [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()[1:]]
    return next(int(r[1]) for r in rows if r[0] == cid)


def test_tasks_survive_daemon_kill(daemon_rt: DaemonProcess) -> None:
    d = daemon_rt
    keep, ends = uid("keep"), uid("ends")
    assert ctr(d, "run", "-d", IMAGE, keep, "sleep", "300").returncode == 0
    assert ctr(d, "run", "-d", IMAGE, ends, "sh", "-c", "sleep 2; exit 7").returncode == 0
    keep_pid = pid_of(d, keep)
    restart(d)
    assert os.path.exists(f"/proc/{keep_pid}"), "the container died with the daemon"

    def task_rows() -> dict[str, list[str]]:
        return {r.split()[0]: r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()[1:]}

    # "ends" exits after the restart (its sleep outlasts it): the new daemon must see that exit.
    wait_until(lambda: task_rows()[ends][2] == "STOPPED", 30, what=f"{ends} to exit")
    rows = task_rows()
    assert rows[keep][2] == "RUNNING" and int(rows[keep][1]) == keep_pid
    assert rows[ends][2] == "STOPPED"
    res = ctr(d, "tasks", "rm", ends)
    assert res.returncode == 0, res.stderr
    assert exec_output(partial(ctr, d), keep, "echo", "still-here").stdout.strip() == "still-here"


def test_exit_while_daemon_down_keeps_status(daemon_rt: DaemonProcess) -> None:
    d = daemon_rt
    quick = uid("quick")
    assert ctr(d, "run", "-d", IMAGE, quick, "sh", "-c", "sleep 1; exit 5").returncode == 0
    quick_pid = pid_of(d, quick)
    d.stop(signal.SIGKILL)
    # the container exits (its shim reaps it) while no daemon runs
    wait_until(lambda: not os.path.exists(f"/proc/{quick_pid}"), 30, what=f"{quick} to exit")
    extra = ["--config", str(d.base / "config.toml")] if (d.base / "config.toml").exists() else []
    d.proc = start_daemon(base=d.base, extra=extra).proc
    rows = {r.split()[0]: r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()[1:]}
    assert quick in rows, d.log()
    assert rows[quick][2] == "STOPPED", d.log()
    res = ctr(d, "tasks", "rm", quick)
    assert res.returncode == 0, res.stderr
    assert "exit code 5" in res.stderr or res.stderr == ""  # ctr warns about non-zero exit codes


def test_dead_shim_is_cleaned_up_with_exit_event(daemon_rt: DaemonProcess) -> None:
    d = daemon_rt
    victim = uid("victim")
    assert ctr(d, "run", "-d", IMAGE, victim, "sleep", "300").returncode == 0
    pid_file = d.state / "tasks" / "default" / victim / "shim.pid"  # ours writes it; runc's Go shim does not
    shim_pids = [int(pid_file.read_text())] if pid_file.exists() else [
        int(p) for p in os.listdir("/proc") if p.isdigit() and _is_shim_of(int(p), victim)]
    assert shim_pids, "no shim process found"
    for pid in shim_pids:
        os.kill(pid, signal.SIGKILL)
    bundle = d.state / "tasks" / "default" / victim
    for _ in range(100):  # the daemon notices the dropped connection and cleans up
        if victim not in ctr(d, "tasks", "ls", "-q").stdout.split() and not bundle.exists():
            break
        time.sleep(0.1)
    assert victim not in ctr(d, "tasks", "ls", "-q").stdout.split()
    assert not (d.state / "tasks" / "default" / victim).exists()



def _is_shim_of(pid: int, cid: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-id" in argv and cid.encode() in argv and any(b"shim" in a for a in argv[:3])
