"""`dock run` at the edges Docker users reach (issue 15): `--restart` in the foreground, and `--rm`
done by the daemon (attached, detached, after ctrl-p ctrl-q, across a daemon restart).

A real daemon (`--default-network none`), our shim, busybox. Every wait is on a state the
daemon reports (tasks, containers, labels, volumes) with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from dockyard_common import autoremove
from dockyard_common import restartpolicy as rp
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything, shim_available, uid
from tests.daemon import DaemonProcess, start_daemon
from tests.dockcli import DockCLI
from tests.integration.test_attach import CTRL_P, CTRL_Q, Terminal
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with daemon_with_runtime("dockyard") as d:  # --default-network none (tests/daemon.py)
        import_busybox(d)
        yield d


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield daemon
    if daemon.proc.poll() is None:
        for cid in ctr(daemon, "containers", "ls", "-q").stdout.split():
            ctr(daemon, "tasks", "kill", "-s", "SIGKILL", cid)  # an explicit stop: no restart follows
        remove_everything(daemon)
        for name in DockCLI(daemon.address).ok("volume", "ls", "-q").split():
            DockCLI(daemon.address).ok("volume", "rm", name)
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


def cli(d: DaemonProcess) -> DockCLI:
    return DockCLI(d.address)


def containers(d: DaemonProcess) -> list[str]:
    return ctr(d, "containers", "ls", "-q").stdout.split()


def labels(d: DaemonProcess, cid: str) -> dict[str, str]:
    res = ctr(d, "containers", "info", cid)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout)["Labels"])


def task(d: DaemonProcess, cid: str) -> tuple[int, str] | None:
    for row in ctr(d, "tasks", "ls").stdout.splitlines()[1:]:
        fields = row.split()
        if fields[0] == cid:
            return int(fields[1]), fields[2]
    return None


def gone(d: DaemonProcess, cid: str) -> bool:
    return cid not in containers(d)


def anonymous_of(d: DaemonProcess, cid: str) -> list[str]:
    return cli(d).ok("volume", "ls", "-q", "--filter", f'labels."dockyard.volume/container"=="{cid}"').split()


# -- --restart in the foreground ---------------------------------------------------------------------


def test_foreground_restart_returns_the_first_runs_status_and_output(d: DaemonProcess) -> None:
    """Docker's `docker run --restart=always busybox false` returns 1 and the container keeps
    restarting: the client shows the first run only, the daemon does the rest."""
    cid = uid("fg-always")
    res = cli(d).dock("run", "--net", "none", "--restart", "always", "--name", cid, IMAGE,
                      "sh", "-c", "echo run-out; echo run-err >&2; exit 3")
    assert res.returncode == 3, res.stderr
    assert res.stdout == "run-out\n" and res.stderr == "run-err\n", (res.stdout, res.stderr)
    # The daemon restarts it (the count in its labels grows), the container stays.
    wait_until(lambda: int(labels(d, cid).get(rp.COUNT_LABEL, "0")) >= 2, timeout=60,
               what=f"{cid} restarted twice by the daemon")
    assert cid in containers(d)


def test_foreground_on_failure_stops_after_its_retries_and_keeps_the_container(d: DaemonProcess) -> None:
    cid = uid("fg-onfail")
    res = cli(d).dock("run", "--net", "none", "--restart", "on-failure:2", "--name", cid, IMAGE,
                      "sh", "-c", "echo once; exit 4")
    assert (res.returncode, res.stdout) == (4, "once\n"), res.stderr
    wait_until(lambda: labels(d, cid).get(rp.COUNT_LABEL) == "2" and (task(d, cid) or (0, ""))[1] == "STOPPED"
               and f"container default/{cid} exited (4): not restarted" in d.log()[d.log_start:],
               timeout=60, what=f"{cid} to stop after two restarts")
    # `dock logs` has every run's output: the first through the client's attach, the others the daemon's.
    assert cli(d).ok("logs", cid).splitlines() == ["once"] * 3


def test_foreground_restart_of_a_fast_exit_is_never_mistaken_for_a_restarted_run(d: DaemonProcess) -> None:
    """The status comes from the first task's own end, so a restart 100 ms later cannot be what
    the client waited for (several runs, each exiting at once)."""
    for n in range(3):
        cid = uid(f"fg-fast{n}")
        res = cli(d).dock("run", "--net", "none", "--restart", "unless-stopped", "--name", cid, IMAGE,
                          "sh", "-c", f"echo {n}; exit {10 + n}")
        assert (res.returncode, res.stdout) == (10 + n, f"{n}\n"), res.stderr


def test_restart_with_rm_is_refused_in_words_before_anything_is_made(d: DaemonProcess) -> None:
    cid = uid("rm-restart")
    for args in (["--rm", "--restart", "always"], ["-d", "--rm", "--restart", "on-failure:1"]):
        cli(d).fails("run", "--net", "none", *args, "--name", cid, IMAGE, "true",
                     words="conflicting options: --restart and --rm")
    assert gone(d, cid)


# -- --rm done by the daemon ---------------------------------------------------------------------------


def test_plain_foreground_rm_returns_status_and_output_and_nothing_stays(d: DaemonProcess) -> None:
    """Through FIFOs (any shim): the status from the task's exit event, the daemon removes it all
    (more in test_run_rm_foreground.py)."""
    cid = uid("fg-rm")
    res = cli(d).dock("run", "--rm", "--net", "none", "-v", "/scratch", "--name", cid, IMAGE,
                      "sh", "-c", "echo out; echo err >&2; echo kept > /scratch/f; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    assert gone(d, cid) and not anonymous_of(d, cid)  # when the command returns
    assert cid not in ctr(d, "snapshots", "ls").stdout


def test_terminal_rm_is_removed_by_the_daemon_and_returns_the_status(d: DaemonProcess) -> None:
    """-t with a log goes through the daemon's attach: the daemon removes it, the client waits."""
    cid = uid("tty-rm")
    term = Terminal(d, "run", "-t", "--rm", "--net", "none", "-v", "/scratch", "--name", cid, IMAGE,
                    "sh", "-c", "echo $((6*7))x; exit 5")
    try:
        term.expect(rb"42x")
        assert term.wait() == 5
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
        os.close(term.master)
    assert gone(d, cid)  # the client waited for the daemon's removal
    assert cid not in ctr(d, "snapshots", "ls").stdout
    assert not anonymous_of(d, cid)
    assert f"container default/{cid} exited and was removed (--rm), with 1 anonymous volume(s)" in d.log()


def test_detached_rm_container_is_removed_when_it_exits(d: DaemonProcess) -> None:
    cid = uid("d-rm")
    cli(d).ok("run", "-d", "--rm", "--net", "none", "-v", "/scratch", "--name", cid, IMAGE, "sleep", "100000")
    assert labels(d, cid).get(autoremove.LABEL) == "true"
    volume = wait_until(lambda: anonymous_of(d, cid), timeout=30, what="its anonymous volume")
    assert len(volume) == 1
    wait_until(lambda: (task(d, cid) or (0, ""))[1] == "RUNNING", timeout=30, what=f"{cid} running")
    cli(d).ok("kill", cid)
    wait_until(lambda: gone(d, cid) and not anonymous_of(d, cid), timeout=30,
               what=f"{cid} and its anonymous volume removed by the daemon")
    assert volume[0] not in cli(d).ok("volume", "ls", "-q").split()


def test_restart_keeps_an_rm_container_and_a_later_stop_removes_it(d: DaemonProcess) -> None:
    """Docker's restart of an --rm container restarts it; its stop inside the restart is no exit
    to remove it for. A plain stop afterwards is."""
    cid = uid("rs-rm")
    cli(d).ok("run", "-d", "--rm", "--net", "none", "--name", cid, IMAGE, "sleep", "100000")
    def running() -> int | None:
        found = task(d, cid)
        return found[0] if found is not None and found[1] == "RUNNING" else None

    first = wait_until(running, timeout=30, what=f"{cid} running")
    cli(d).ok("restart", "-t", "1", cid)
    again = wait_until(running, timeout=30, what=f"{cid} running again")
    assert again != first, "a new init after the restart"
    assert not gone(d, cid)
    assert autoremove.HELD not in labels(d, cid) and labels(d, cid).get(autoremove.LABEL) == "true"
    cli(d).ok("stop", "-t", "1", cid)
    wait_until(lambda: gone(d, cid), timeout=30, what=f"{cid} removed by the daemon after it stopped")


def test_it_rm_detached_with_the_keys_is_removed_when_it_later_exits(d: DaemonProcess) -> None:
    cid = uid("it-rm")
    term = Terminal(d, "run", "-it", "--rm", "--net", "none", "--name", cid, IMAGE, "sh")
    try:
        term.expect(rb"[#$] ")
        term.type(b"echo $((6*7))x\r")
        term.expect(rb"42x")
        term.type(CTRL_P + CTRL_Q)
        assert term.wait() == 0  # detached: dock returns, the container runs on
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
        os.close(term.master)
    assert (task(d, cid) or (0, ""))[1] == "RUNNING"
    cli(d).ok("stop", "-t", "1", cid)
    wait_until(lambda: gone(d, cid), timeout=30, what=f"{cid} removed by the daemon after it stopped")


def test_rm_container_that_exited_while_the_daemon_was_down_is_removed_at_its_start(d: DaemonProcess) -> None:
    cid = uid("down-rm")
    cli(d).ok("run", "-d", "--rm", "--net", "none", "--name", cid, IMAGE, "sleep", "100000")
    pid = wait_until(lambda: (t := task(d, cid)) is not None and t[1] == "RUNNING" and t[0], timeout=30,
                     what=f"{cid} running")
    d.stop(signal.SIGKILL)  # no daemon watches the exit
    os.kill(pid, signal.SIGKILL)
    again = start_daemon(base=d.base)
    d.proc, d.log_start = again.proc, again.log_start
    wait_until(lambda: gone(d, cid), timeout=60, what=f"{cid} removed by the starting daemon")


# -- another runtime's shim (containerd's runc shim: no attach socket) ----------------------------------


@pytest.fixture(scope="module")
def runc_daemon() -> Iterator[DaemonProcess]:
    if not shim_available("runc-go"):
        pytest.skip("containerd-shim-runc-v2 is not installed")
    with daemon_with_runtime("runc-go") as d:
        import_busybox(d)
        yield d


def test_with_runcs_shim_foreground_restart_is_refused_and_detached_rm_still_removed(
        runc_daemon: DaemonProcess) -> None:
    d = runc_daemon
    try:
        cid = uid("runc-fg")
        cli(d).fails("run", "--net", "none", "--restart", "always", "--name", cid, IMAGE, "true",
                     words="its shim does not serve attach, so a restart policy needs the container detached (-d)")
        assert gone(d, cid)
        # The exit monitor follows any shim's exits: the daemon's --rm works with it too.
        cid = uid("runc-drm")
        cli(d).ok("run", "-d", "--rm", "--net", "none", "--name", cid, IMAGE, "sh", "-c", "exit 2")
        wait_until(lambda: gone(d, cid), timeout=30, what=f"{cid} removed by the daemon")
        # And a plain foreground --rm still returns its status; the daemon removes it.
        cid = uid("runc-rm")
        res = cli(d).dock("run", "--rm", "--net", "none", "--name", cid, IMAGE, "sh", "-c", "echo hi; exit 6")
        assert (res.returncode, res.stdout) == (6, "hi\n"), res.stderr
        assert gone(d, cid)
        assert "Traceback" not in d.log()
    finally:
        remove_everything(d)
