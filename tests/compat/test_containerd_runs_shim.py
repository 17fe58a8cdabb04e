"""A stock containerd runs Dockyard's shim: runtime `io.containerd.dockyard.v2`, no wrapper.

containerd finds `containerd-shim-dockyard-v2` (the console script `pip install -e .` installs)
in its PATH and drives it through the runtime v2 contract. Every test runs the same ctr session
twice on one private containerd: with our shim and with containerd's own runc shim (the
reference), and the observable results must agree: exit codes, output, task states, events, a
containerd restart that reattaches to the running shims.

Nothing is left behind: the test's containerd, its shims, containers, zygote, mounts and the
namespace's cgroups are gone afterwards (checked by PID and path).

The private containerd (with our shim in its PATH, restarts, and a cleanup that checks) is
tests/containerd.py's `PrivateContainerd`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE, uid
from tests.containerd import CGROUP_ROOT, PrivateContainerd, private_containerd
from tests.ctr import exec_output, ok
from tests.daemon import alive, processes_mentioning
from tests.eventlog import EventLog
from tests.waiting import wait_until

pytestmark = [pytest.mark.compat, pytest.mark.root]

OURS = "io.containerd.dockyard.v2"
RUNC = "io.containerd.runc.v2"


def zygotes_of(c: PrivateContainerd) -> set[int]:
    """Our zygotes serving this containerd: their command line names their socket in its state."""
    found = set()
    for pid in processes_mentioning(str(c.task_root)):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dockyard-zygote":
                found.add(pid)
    return found


def cgroup_file(pid: int, controller: str, name: str) -> Path:
    """A file of the v1 `controller` cgroup the process is in, wherever its runtime put it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controllers / path.lstrip("/") / name
    raise AssertionError(f"process {pid} is in no {controller} cgroup")


# ----- the tests ---------------------------------------------------------------------------------------


@pytest.fixture
def containerd() -> Iterator[PrivateContainerd]:
    with private_containerd() as c:
        yield c


RUNTIMES = [pytest.param(OURS, id="dockyard-shim"), pytest.param(RUNC, id="runc-shim")]


def tasks(c: PrivateContainerd) -> dict[str, tuple[int, str]]:
    """`ctr tasks ls`: id → (pid, status)."""
    rows = [line.split() for line in c.ctr("tasks", "ls").stdout.splitlines()[1:]]
    return {r[0]: (int(r[1]), r[2]) for r in rows}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_output_and_exit_code(containerd: PrivateContainerd, runtime: str) -> None:
    c, cid = containerd, uid("run")
    res = c.ctr("run", "--rm", "--runtime", runtime, IMAGE, cid, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout) == (3, "out\n"), res.stderr + c.log()
    assert "err\n" in res.stderr
    assert c.ctr("containers", "ls", "-q").stdout == ""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_pause_resume_kill_delete(containerd: PrivateContainerd, runtime: str) -> None:
    c, cid = containerd, uid("life")
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "300"))
    pid, status = tasks(c)[cid]
    assert status == "RUNNING" and alive(pid)
    shim = c.shim_pid(cid)
    assert ok(exec_output(c.ctr, cid, "sh", "-c", "echo in; exit 0")) == "in\n"
    res = c.ctr("tasks", "exec", "--exec-id", "e2", cid, "sh", "-c", "exit 4")
    assert res.returncode == 4, res.stderr
    assert ok(c.ctr("tasks", "ps", cid)).split()[2] == str(pid)
    ok(c.ctr("tasks", "pause", cid))
    assert tasks(c)[cid][1] == "PAUSED"
    assert cgroup_file(pid, "freezer", "freezer.state").read_text().strip() == "FROZEN"
    ok(c.ctr("tasks", "resume", cid))
    assert tasks(c)[cid][1] == "RUNNING"
    res = c.ctr("tasks", "rm", cid)  # refused while it runs (client side, as in containerd)
    assert res.returncode == 1 and "must be stopped" in res.stderr
    ok(c.ctr("tasks", "kill", "-s", "SIGKILL", cid))
    wait_until(lambda: tasks(c)[cid][1] == "STOPPED", what=f"{cid} to stop")
    res = c.ctr("tasks", "rm", cid)
    assert res.returncode == 0 and "137" in res.stderr, res.stderr
    wait_until(lambda: not alive(shim), what="the shim to exit after its task")
    assert not c.bundle(cid).exists()
    ok(c.ctr("containers", "rm", cid))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_events(containerd: PrivateContainerd, runtime: str) -> None:
    c, cid = containerd, uid("ev")
    events = EventLog(["ctr", "--address", c.address, "events"], c.address, c.namespace)
    try:
        ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "300"))
        ok(c.ctr("tasks", "exec", "--exec-id", "x1", cid, "true"))
        ok(c.ctr("tasks", "pause", cid))
        ok(c.ctr("tasks", "resume", cid))
        ok(c.ctr("tasks", "kill", "-s", "SIGKILL", cid))
        wait_until(lambda: tasks(c)[cid][1] == "STOPPED", what=f"{cid} to stop")
        c.ctr("tasks", "rm", cid)
        topics = events.task_topics(cid, until="/tasks/delete")
    finally:
        events.close()
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
                      "/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete"], events.seen


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_containerd_restart_reattaches(containerd: PrivateContainerd, runtime: str) -> None:
    """kill -9 containerd: the shims keep their containers; a new containerd finds them again
    from the bundles (`address`), talks to them, and learns an exit that happened while it was down."""
    c = containerd
    keep, ends = uid("keep"), uid("ends")
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, keep, "sleep", "300"))
    # PID 1 of a PID namespace ignores signals it has no handler for: this one has one
    ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, ends, "sh", "-c",
             "trap 'exit 5' TERM; touch /trapped; sleep 300 & wait"))
    keep_pid, ends_pid = tasks(c)[keep][0], tasks(c)[ends][0]
    # Start returns before the shell has run a line: a SIGTERM before its trap would be ignored
    wait_until(lambda: os.path.exists(f"/proc/{ends_pid}/root/trapped"), what="the shell's trap")
    shims = {c.shim_pid(keep), c.shim_pid(ends)}
    c.stop(signal.SIGKILL)
    os.kill(ends_pid, signal.SIGTERM)  # the task exits while nobody listens to its shim
    wait_until(lambda: not alive(ends_pid), what="the task to exit on SIGTERM")
    c.start()
    assert all(alive(p) for p in shims), "a shim died with containerd"
    listed = tasks(c)
    assert listed[keep] == (keep_pid, "RUNNING") and listed[ends] == (ends_pid, "STOPPED"), c.log()
    assert ok(exec_output(c.ctr, keep, "echo", "still-here")) == "still-here\n"
    res = c.ctr("tasks", "rm", ends)
    assert res.returncode == 0 and "exit code 5" in res.stderr, res.stderr
    events = EventLog(["ctr", "--address", c.address, "events"], c.address, c.namespace)  # the new containerd
    try:
        ok(c.ctr("tasks", "kill", "-s", "SIGKILL", keep))
        assert events.task_topics(keep, until="/tasks/exit") == ["/tasks/exit"]
    finally:
        events.close()
    assert c.ctr("tasks", "rm", keep).returncode == 0


def test_zygote_lives_in_containerds_state(containerd: PrivateContainerd) -> None:
    """Our shims are forked by a zygote of this containerd's own, whose socket is in containerd's
    runtime state dir (not a host-wide one), and which goes when that dir does."""
    c = containerd
    first, second = uid("z1"), uid("z2")
    ok(c.ctr("run", "-d", "--runtime", OURS, IMAGE, first, "sleep", "300"))
    zdir = c.task_root / ".dockyard-shim"
    wait_until(lambda: zdir.is_dir() and any(zdir.glob("zygote-*.sock")), what=f"a zygote socket in {zdir}")
    (zygote,) = zygotes_of(c)
    ok(c.ctr("run", "-d", "--runtime", OURS, IMAGE, second, "sleep", "300"))
    shim = c.shim_pid(second)
    parent = int(Path(f"/proc/{shim}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == zygote
    # containerd's restart scan skips the hidden dir: both tasks are found, nothing else
    c.stop(signal.SIGKILL)
    c.start()
    assert sorted(tasks(c)) == sorted([first, second]), c.log()
    c.remove_everything()
    shutil.rmtree(zdir)  # the runtime state dir goes away: so does its zygote
    wait_until(lambda: not alive(zygote), 10, what="the zygote to exit with its state dir")
