"""A stuck shim does not stall `ctr tasks ls`: it is listed as UNKNOWN, the others as they are.

The shim is stopped with SIGSTOP (it cannot answer anything), and continued after; listing
must answer within the per-shim deadline (2 s) rather than wait for it. Then listing comes from
cached states that events invalidate: a task killed outside any call of ours (its process gets
a signal straight from the kernel) is seen STOPPED by the next listing that follows its exit.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import DaemonProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]


@pytest.fixture(scope="module")
def d() -> Iterator[DaemonProcess]:
    with daemon_with_runtime("dockyard") as daemon:
        import_busybox(daemon)
        try:
            yield daemon
        finally:
            remove_everything(daemon)


def listed(d: DaemonProcess) -> dict[str, tuple[int, str]]:
    """`ctr tasks ls` as {id: (pid, status)}; the call may take a while on a loaded host, but
    must not hang on a shim that does not answer (it did before: no deadline at all)."""
    res = ctr(d, "tasks", "ls", timeout=30)
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()[1:]]
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def run(d: DaemonProcess, cid: str) -> None:
    res = ctr(d, "run", "-d", IMAGE, cid, "sleep", "600")
    assert res.returncode == 0, res.stderr


def test_a_stopped_shim_is_listed_as_unknown_without_stalling(d: DaemonProcess) -> None:
    ok_id, stuck_id = f"ok-{secrets.token_hex(3)}", f"stuck-{secrets.token_hex(3)}"
    run(d, ok_id)
    run(d, stuck_id)
    # the states are read now, and cached; the stuck task's next event must make us ask again
    before = listed(d)
    assert before[ok_id][1] == before[stuck_id][1] == "RUNNING"
    task_pid = before[stuck_id][0]
    shim = parent_of(task_pid)
    # pause it (an event, and our call, invalidate its cached state), then stop its shim
    assert ctr(d, "tasks", "pause", stuck_id).returncode == 0
    os.kill(shim, signal.SIGSTOP)
    try:
        during = listed(d)
        assert during[stuck_id] == (task_pid, "UNKNOWN"), during
        assert during[ok_id][1] == "RUNNING"
        # and again: a shim that did not answer is asked again, not remembered as UNKNOWN
        assert listed(d)[stuck_id] == (task_pid, "UNKNOWN")
    finally:
        os.kill(shim, signal.SIGCONT)
    wait_until(lambda: listed(d)[stuck_id][1] == "PAUSED", timeout=30, interval=0.2,
               what="the shim answering again")
    res = ctr(d, "tasks", "resume", stuck_id)
    assert res.returncode == 0, res.stderr
    assert listed(d)[stuck_id][1] == "RUNNING"


def test_an_exit_nobody_asked_for_is_listed(d: DaemonProcess) -> None:
    cid = f"exit-{secrets.token_hex(3)}"
    run(d, cid)
    pid, status = listed(d)[cid]
    assert status == "RUNNING"
    listed(d)  # served from the cache now
    os.kill(pid, signal.SIGKILL)  # from outside: no call of ours changes the task
    wait_until(lambda: listed(d)[cid][1] == "STOPPED", timeout=30, interval=0.2, what="the exit seen by tasks ls")
