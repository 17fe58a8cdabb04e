"""Docker's health checks, run by the daemon (supervisor/runtime/health.py): a real dockyardd, our
shim and busybox containers on `--net none`, checks every second or less so the tests are quick.

What happened is read where users read it: `dock inspect` (State.Health, Config.Healthcheck),
`dock ps` (STATUS, --filter health=), `dock events` (/containers/health_status), `ctr c info` (the
labels any gRPC client sees). Every wait is on a state, with a deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import REPO, DaemonProcess, start_daemon
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

FAST = ["--health-interval", "300ms", "--health-timeout", "5s"]


@pytest.fixture
def cli(busybox_daemon: DaemonProcess, tmp_path: Path) -> Iterator[DockCLI]:
    yield DockCLI(busybox_daemon.address, tmp_path)
    remove_everything(busybox_daemon)
    nothing_left(busybox_daemon)
    assert "Traceback" not in busybox_daemon.log(), busybox_daemon.log()[-5000:]


def nothing_left(d: DaemonProcess) -> None:
    """No probe FIFO dir stays once the containers are gone; no shim of them either."""
    health = d.state / "health"
    wait_until(lambda: not health.exists() or not any(health.iterdir()), what="probe FIFO dirs to go")


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def run_d(cli: DockCLI, cid: str, *flags: str, script: str = "touch /tmp/ok; exec sleep 600") -> None:
    cli.ok("run", "-d", "--net", "none", "--name", cid, *flags, IMAGE, "sh", "-c", script)


def inspect(cli: DockCLI, cid: str) -> dict[str, Any]:
    [record] = cli.json("inspect", cid)
    assert isinstance(record, dict)
    return record


def health(cli: DockCLI, cid: str) -> dict[str, Any]:
    found: dict[str, Any] = inspect(cli, cid)["state"].get("Health") or {}
    return found


def wait_status(cli: DockCLI, cid: str, status: str, timeout: float = 30) -> dict[str, Any]:
    return wait_until(lambda: (h := health(cli, cid)).get("Status") == status and h, timeout=timeout,
                      what=f"{cid} to be {status}")


def ps_status(cli: DockCLI, cid: str) -> str:
    rows = [r for r in cli.json("ps", "-a") if r["id"] == cid]
    return str(rows[0]["status"]) if rows else ""


def ps_ids(cli: DockCLI, *filters: str) -> list[str]:
    return cli.ok("ps", "-q", "--no-trunc", *(f"--filter={f}" for f in filters)).split()


def labels(d: DaemonProcess, cid: str) -> dict[str, str]:
    res = ctr(d, "containers", "info", cid)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout)["Labels"])


class Events:
    """`dock events` in the background, its lines collected."""

    def __init__(self, d: DaemonProcess) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
        self.proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "--format", "json", "events",
                                      'topic=="/containers/health_status"', 'topic=="/containers/create"'],
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.lines: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def statuses(self, cid: str) -> list[str]:
        return [e["event"].get("status", "") for e in self.lines
                if e["topic"] == "/containers/health_status" and e["event"].get("container_id") == cid]

    def ready(self, cli: DockCLI) -> None:
        """Until the subscription is in place: a container made now is seen."""
        made: list[str] = []

        def seen() -> bool:
            if any(e["topic"] == "/containers/create" and e["event"].get("id") in made for e in self.lines):
                return True
            made.append(name("probe-events"))
            cli.ok("containers", "create", "--net", "none", "--name", made[-1], IMAGE, "true")
            return False

        wait_until(seen, interval=0.2, what="the events subscription")
        cli.ok("rm", *made)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.thread.join(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# -- transitions -----------------------------------------------------------------------------------


def test_healthy_then_unhealthy(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    events = Events(busybox_daemon)
    try:
        events.ready(cli)
        cid = name("hc")
        run_d(cli, cid, "--health-cmd", "test -f /tmp/ok && echo fine", "--health-retries", "2", *FAST)
        assert health(cli, cid).get("Status") in (None, "starting", "healthy")
        h = wait_status(cli, cid, "healthy")
        assert h["FailingStreak"] == 0
        last = h["Log"][-1]
        assert last["ExitCode"] == 0 and last["Output"] == "fine\n"
        assert last["Start"].endswith("Z") and last["End"] >= last["Start"]
        assert set(last) == {"Start", "End", "ExitCode", "Output"}
        assert "(healthy)" in ps_status(cli, cid) and ps_status(cli, cid).startswith("Up ")
        assert cid in ps_ids(cli, "health=healthy") and cid not in ps_ids(cli, "health=unhealthy")
        assert labels(busybox_daemon, cid)["dockyard.health.status"] == "healthy"  # any client's view
        cli.ok("exec", cid, "rm", "/tmp/ok")
        h = wait_status(cli, cid, "unhealthy")
        assert h["FailingStreak"] >= 2 and h["Log"][-1]["ExitCode"] == 1
        assert "(unhealthy)" in ps_status(cli, cid)
        assert cid in ps_ids(cli, "health=unhealthy")
        wait_until(lambda: events.statuses(cid)[:2] == ["healthy", "unhealthy"], what="the health_status events")
        # at most 5 results are kept
        wait_until(lambda: len(health(cli, cid)["Log"]) == 5, what="five results")
        cli.ok("exec", cid, "touch", "/tmp/ok")
        wait_status(cli, cid, "healthy")
        wait_until(lambda: events.statuses(cid)[:3] == ["healthy", "unhealthy", "healthy"], what="healthy again")
        # no probe process stays behind in the container: only its init (sleep)
        pids = ctr(busybox_daemon, "tasks", "ps", cid).stdout.split("\n")[1:]
        assert len([p for p in pids if p.strip()]) <= 2  # the init, at most one probe under way
        cli.ok("stop", "-t", "1", cid)
        h = wait_status(cli, cid, "unhealthy")  # Docker: a stopped monitor reports unhealthy
        assert ps_status(cli, cid).startswith("Exited")
    finally:
        events.close()


def test_start_period_and_retries(cli: DockCLI) -> None:
    cid = name("sp")
    # Failing from the start: inside the start period (3 s, probes every 200 ms) nothing counts.
    run_d(cli, cid, "--health-cmd", "exit 3", "--health-start-period", "3s", "--health-start-interval", "200ms",
          "--health-interval", "500ms", "--health-retries", "4")
    def three_probes() -> dict[str, Any] | None:
        h = health(cli, cid)
        return h if len(h.get("Log", [])) >= 3 else None

    h = wait_until(three_probes, what="probes in the start period")
    assert h["Status"] == "starting" and h["FailingStreak"] == 0, h
    assert "(health: starting)" in ps_status(cli, cid)
    assert cid in ps_ids(cli, "health=starting")
    h = wait_status(cli, cid, "unhealthy")
    assert h["FailingStreak"] >= 4, h  # retries counted after the period
    assert all(r["ExitCode"] == 3 for r in h["Log"])


def test_default_retries_are_three(cli: DockCLI) -> None:
    cid = name("r3")
    run_d(cli, cid, "--health-cmd", "false", *FAST)
    h = wait_until(lambda: (h := health(cli, cid)).get("FailingStreak", 0) >= 1 and h, what="a first failure")
    assert h["Status"] == "starting"
    h = wait_status(cli, cid, "unhealthy")
    assert h["FailingStreak"] >= 3
    streaks = [r for r in h["Log"] if r["ExitCode"] == 1]
    assert streaks


def test_hanging_check_is_killed_at_its_timeout(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    cid = name("hang")
    # The first probe hangs in a child of its shell (and marks that it ran), the next ones pass.
    check = "if [ -f /tmp/hung ]; then exit 0; fi; touch /tmp/hung; sleep 1000; echo late"
    run_d(cli, cid, "--health-cmd", check, "--health-timeout", "1s", "--health-interval", "500ms",
          "--health-retries", "1", script="exec sleep 600")
    h = wait_status(cli, cid, "unhealthy")
    assert h["Log"][0]["ExitCode"] == -1 and h["Log"][0]["Output"] == "Health check exceeded timeout (1s)", h
    wait_status(cli, cid, "healthy")
    # the hung probe was killed with its child: no `sleep 1000` stays in the container
    top = cli.ok("top", cid)
    assert "sleep 1000" not in top, top


# -- configuration -----------------------------------------------------------------------------------


def build(cli: DockCLI, tmp: Path, tag: str, dockerfile: str) -> None:
    ctx = tmp / f"ctx-{secrets.token_hex(3)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    cli.ok("build", "-t", tag, str(ctx), timeout=180)


def test_image_healthcheck_used_and_overridden(cli: DockCLI, tmp_path: Path) -> None:
    tag = f"hc-image-{secrets.token_hex(3)}:1"
    build(cli, tmp_path, tag, f"FROM {IMAGE}\n"
          "HEALTHCHECK --interval=300ms --timeout=5s --retries=1 CMD test -f /tmp/ok || exit 7\n"
          'CMD ["sleep", "600"]\n')
    try:
        plain = name("img")
        cli.ok("run", "-d", "--net", "none", "--name", plain, tag)
        record = inspect(cli, plain)
        assert record["Config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /tmp/ok || exit 7"],
                                                   "Interval": 300_000_000, "Timeout": 5_000_000_000, "Retries": 1}
        h = wait_status(cli, plain, "unhealthy")
        assert h["Log"][-1]["ExitCode"] == 7
        # a flag overrides its own field; the image's others stay
        over = name("over")
        cli.ok("run", "-d", "--net", "none", "--name", over, "--health-cmd", "true", tag)
        assert inspect(cli, over)["Config"]["Healthcheck"] == {
            "Test": ["CMD-SHELL", "true"], "Interval": 300_000_000, "Timeout": 5_000_000_000, "Retries": 1}
        wait_status(cli, over, "healthy")
        # --no-healthcheck switches the image's off
        off = name("off")
        cli.ok("run", "-d", "--net", "none", "--name", off, "--no-healthcheck", tag)
        record = inspect(cli, off)
        assert "Config" not in record and "Health" not in record["state"]
        assert off in ps_ids(cli, "health=none")
        assert ps_status(cli, off).startswith("Up") and "health" not in ps_status(cli, off)
    finally:
        remove_everything_of(cli)
        cli.dock("images", "rm", tag)


def test_cmd_shell_runs_under_the_image_shell(cli: DockCLI, tmp_path: Path) -> None:
    """Docker's getShell: a CMD-SHELL check (the image's, or --health-cmd's) runs under the image's
    SHELL; here one that sets a variable first, so the output tells which shell ran it."""
    tag = f"hc-shell-{secrets.token_hex(3)}:1"
    build(cli, tmp_path, tag, f"FROM {IMAGE}\n"
          'SHELL ["/bin/busybox", "env", "VIA=image-shell", "/bin/busybox", "sh", "-c"]\n'
          'HEALTHCHECK --interval=300ms --timeout=5s --retries=1 CMD echo "ran by $VIA"\n'
          'CMD ["sleep", "600"]\n')
    try:
        plain = name("shell")
        cli.ok("run", "-d", "--net", "none", "--name", plain, tag)
        assert inspect(cli, plain)["labels"]["dockyard.healthcheck.shell"] == \
            '["/bin/busybox","env","VIA=image-shell","/bin/busybox","sh","-c"]'
        assert wait_status(cli, plain, "healthy")["Log"][-1]["Output"] == "ran by image-shell\n"
        over = name("shell-over")
        cli.ok("run", "-d", "--net", "none", "--name", over, "--health-cmd", 'echo "over by $VIA"', tag)
        assert wait_status(cli, over, "healthy")["Log"][-1]["Output"] == "over by image-shell\n"
        # an image without SHELL: /bin/sh -c, and no label
        default = name("shell-default")
        run_d(cli, default, "--health-cmd", 'echo "ran by ${VIA:-sh}"', *FAST)
        assert wait_status(cli, default, "healthy")["Log"][-1]["Output"] == "ran by sh\n"
        assert "dockyard.healthcheck.shell" not in inspect(cli, default)["labels"]
    finally:
        remove_everything_of(cli)
        cli.dock("images", "rm", tag)


def remove_everything_of(cli: DockCLI) -> None:
    ids = cli.ok("ps", "-aq", "--no-trunc").split()
    if ids:
        cli.dock("rm", "-f", *ids)


def test_flag_errors(cli: DockCLI) -> None:
    cli.fails("run", "--no-healthcheck", "--health-cmd", "true", IMAGE, "true", words="conflicts")
    err = cli.dock("run", "--health-interval", "5", IMAGE, "true")
    assert err.returncode == 2 and "invalid duration" in err.stderr, err.stderr
    cli.fails("run", "--health-interval=-1s", IMAGE, "true", words="cannot be negative")
    cli.fails("ps", "--filter", "health=sick", words="health is one of")


# -- the daemon's restart and restart policies --------------------------------------------------------


def test_state_survives_a_daemon_restart_and_follows_restart_policy() -> None:
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        cli = DockCLI(d.address)
        cid = name("keep")
        run_d(cli, cid, "--health-cmd", "test -f /tmp/ok", "--restart", "always", *FAST)
        wait_status(cli, cid, "healthy")
        d.stop(signal.SIGTERM)
        again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
        d.proc, d.log_start = again.proc, again.log_start
        h = health(cli, cid)
        assert h["Status"] == "healthy", h  # the same run: its state is kept
        seen = h["Log"][-1]["End"]
        wait_until(lambda: health(cli, cid)["Log"][-1]["End"] > seen, what="probes to go on after the restart")
        # a restart policy's new run starts at `starting` again and is watched (the init killed
        # from the host: not a user's stop through the API, so the policy restarts it)
        [pid] = [int(row.split()[1]) for row in ctr(d, "tasks", "ls").stdout.splitlines()[1:]
                 if row.split()[0] == cid]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: labels(d, cid).get("containerd.io/restart.count") == "1", what="the restart")
        wait_status(cli, cid, "healthy")
        assert "Traceback" not in d.log()
        remove_everything(d)
        nothing_left(d)


def test_exit_during_a_probe_ends_it_and_many_probes_do_not_wedge_the_daemon(
        cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    # Six containers whose probes hang until their timeout, all at once.
    ids = [name("many") for _ in range(6)]
    for cid in ids:
        run_d(cli, cid, "--health-cmd", "sleep 1000", "--health-timeout", "20s", "--health-interval", "100ms",
              script="exec sleep 600")
    probes = busybox_daemon.state / "health"
    wait_until(lambda: probes.exists() and len(list(probes.iterdir())) == len(ids), what="every probe under way")
    # the daemon answers meanwhile
    started = time.monotonic()
    assert set(ids) <= set(cli.ok("ps", "-q", "--no-trunc").split())
    assert time.monotonic() - started < 10
    # the init exits under a hanging probe: the probe ends with it, nothing stays
    cli.ok("kill", ids[0])
    wait_until(lambda: ps_status(cli, ids[0]).startswith("Exited"), what="the first container to exit")
    wait_status(cli, ids[0], "unhealthy")  # its watch ended
    wait_until(lambda: len(list(probes.iterdir())) == len(ids) - 1, what="the exited container's probe to go")
    for cid in ids:
        assert health(cli, cid)["Log"] == [] or cid == ids[0]  # no probe finished: they all hang
