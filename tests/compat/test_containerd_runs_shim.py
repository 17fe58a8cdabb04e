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
import itertools
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE, uid
from tests.containerd import CGROUP_ROOT, PrivateContainerd, private_containerd
from tests.ctr import ok
from tests.daemon import alive, processes_mentioning
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


# ----- ctr events, read in the background -----------------------------------------------------------


class EventLog:
    """`ctr events` of one containerd: lines arrive in a thread; `wait_for` takes them in order."""

    def __init__(self, c: PrivateContainerd) -> None:
        self.c = c
        self.proc = subprocess.Popen(["ctr", "--address", c.address, "events"], stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._subscribed()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _subscribed(self) -> None:
        """Until the subscription is live: label the namespace (an /namespaces/update event)
        until one of those arrives."""
        probes = itertools.count()

        def an_update_arrived() -> bool:
            ok(self.c.ctr("namespaces", "label", self.c.namespace, f"probe={next(probes)}"))
            with contextlib.suppress(queue.Empty):
                while True:
                    if "/namespaces/update" in self.lines.get(timeout=0.2):
                        return True
            return False

        wait_until(an_update_arrived, 20, what="ctr events to see an event", interval=0)

    def topics(self, cid: str, until: str, timeout: float = 20) -> list[str]:
        """The /tasks/ topics of `cid`, in order, up to and including `until`."""
        out: list[str] = []

        def reached() -> bool:
            with contextlib.suppress(queue.Empty):
                line = self.lines.get(timeout=0.1)
                self.seen.append(line)
                fields = line.split()
                if len(fields) > 5 and fields[5].startswith("/tasks/") and cid in line:
                    out.append(fields[5])
            return until in out

        wait_until(reached, timeout, what=f"{until} of {cid}", interval=0)
        return out

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)  # EOF once ctr is gone
        assert self.proc.stdout is not None
        self.proc.stdout.close()


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
    assert ok(c.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo in; exit 0")) == "in\n"
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
    events = EventLog(c)
    try:
        ok(c.ctr("run", "-d", "--runtime", runtime, IMAGE, cid, "sleep", "300"))
        ok(c.ctr("tasks", "exec", "--exec-id", "x1", cid, "true"))
        ok(c.ctr("tasks", "pause", cid))
        ok(c.ctr("tasks", "resume", cid))
        ok(c.ctr("tasks", "kill", "-s", "SIGKILL", cid))
        wait_until(lambda: tasks(c)[cid][1] == "STOPPED", what=f"{cid} to stop")
        c.ctr("tasks", "rm", cid)
        topics = events.topics(cid, until="/tasks/delete")
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
    assert ok(c.ctr("tasks", "exec", "--exec-id", "after", keep, "echo", "still-here")) == "still-here\n"
    res = c.ctr("tasks", "rm", ends)
    assert res.returncode == 0 and "exit code 5" in res.stderr, res.stderr
    events = EventLog(c)  # the shim publishes to the new containerd
    try:
        ok(c.ctr("tasks", "kill", "-s", "SIGKILL", keep))
        assert events.topics(keep, until="/tasks/exit") == ["/tasks/exit"]
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
