"""Restart policies (issue 15): the daemon's restart monitor, with a real daemon, our shim and busybox.

Containers are made by `dock run -d --restart ...`; what happened is read where users read it: the
container's labels (`ctr c info`), the task list (`ctr t ls`), the events (`ctr events`). Every wait
is on a state or on the daemon's own account of a decision (its log), with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from datetime import datetime
from pathlib import Path

import pytest

from dockyard_common import restartpolicy as rp
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox
from tests.ctr import CTR, ctr, ok
from tests.daemon import REPO, DaemonProcess, alive, shims_in_bundles, start_daemon
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

FOREVER = "sleep 100000"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield daemon
    if daemon.proc.poll() is None:
        remove_all(daemon)
    assert "Traceback" not in daemon.log(), daemon.log()[-5000:]


def remove_all(d: DaemonProcess) -> None:
    """An explicit stop first (it also cancels a pending restart), then the task, then the container."""
    for cid in ctr(d, "containers", "ls", "-q").stdout.split():
        remove(d, cid)


def remove(d: DaemonProcess, cid: str) -> None:
    ctr(d, "tasks", "kill", "-s", "SIGKILL", cid)
    wait_until(lambda: status(d, cid) in ("", "STOPPED"), timeout=30, what=f"task {cid} to stop")
    if task(d, cid) is not None:
        ok(ctr(d, "tasks", "rm", cid))
    ok(ctr(d, "containers", "rm", cid))


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def dock(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=REPO)


def run(d: DaemonProcess, cid: str, policy: str, script: str) -> None:
    ok(dock(d, "run", "-d", "--net", "none", "--restart", policy, "--name", cid, IMAGE, "sh", "-c", script))


def task(d: DaemonProcess, cid: str) -> tuple[int, str] | None:
    """(pid, status) of the container's task, None when it has none."""
    for row in ok(ctr(d, "tasks", "ls")).splitlines()[1:]:
        fields = row.split()
        if fields[0] == cid:
            return int(fields[1]), fields[2]
    return None


def running_pid(d: DaemonProcess, cid: str, not_in: AbstractSet[int] = frozenset()) -> int:
    def check() -> int | None:
        found = task(d, cid)
        return found[0] if found is not None and found[1] == "RUNNING" and found[0] not in not_in else None

    return wait_until(check, timeout=60, what=f"task {cid} running (not as {sorted(not_in)})")


def status(d: DaemonProcess, cid: str) -> str:
    found = task(d, cid)
    return "" if found is None else found[1]


def labels(d: DaemonProcess, cid: str) -> dict[str, str]:
    return dict(json.loads(ok(ctr(d, "containers", "info", cid)))["Labels"])


def log_since_start(d: DaemonProcess) -> str:
    return d.log()[d.log_start:]


def wait_logged(d: DaemonProcess, text: str, timeout: float = 60) -> None:
    wait_until(lambda: text in log_since_start(d), timeout=timeout, what=f"the daemon to log {text!r}")


def restart_daemon(d: DaemonProcess, sig: int = signal.SIGTERM) -> None:
    d.stop(sig)
    again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
    d.proc, d.log_start = again.proc, again.log_start


# -- on-failure ----------------------------------------------------------------------------------

EVENT = re.compile(r"^(\S+ \S+) \S+ \S+ (\S+) (/tasks/\w+) (\{.*\})$")


def task_events(lines: list[str], cid: str) -> list[tuple[float, str]]:
    """(time, topic) of the container's /tasks/start and /tasks/exit events, as ctr printed them."""
    out = []
    for line in lines:
        m = EVENT.match(line.strip())
        if m is None or m.group(3) not in ("/tasks/start", "/tasks/exit"):
            continue
        if json.loads(m.group(4)).get("container_id") != cid:
            continue
        stamp = m.group(1)
        day, clock = stamp.split(" ")
        whole, _, frac = clock.partition(".")
        when = datetime.fromisoformat(f"{day}T{whole}+00:00").timestamp() + float(f"0.{frac or '0'}")
        out.append((when, m.group(3)))
    return out


def wait_events_subscribed(d: DaemonProcess, printed: Path) -> None:
    """Until `ctr events` prints: publish probes (a namespace made and removed) until one shows.
    (The real `ctr` prints only events, not the daemon's subscribed header: probing is all we have.)"""
    probes: list[str] = []
    last = [0.0]

    def seen() -> bool:
        if any(p in printed.read_text() for p in probes):
            return True
        if time.monotonic() - last[0] > 0.5:  # a probe sent before the subscription is lost: another
            probes.append(f"probe-{secrets.token_hex(4)}")
            ok(ctr(d, "namespaces", "create", probes[-1]))
            last[0] = time.monotonic()
        return False

    try:
        wait_until(seen, timeout=30, what="ctr events to subscribe")
    finally:
        for name in probes:
            ctr(d, "namespaces", "remove", name)


def test_on_failure_stops_after_its_retries_with_a_growing_delay(d: DaemonProcess, tmp_path: Path) -> None:
    assert CTR is not None
    cid = uid("onfail")
    events_file = tmp_path / "events"
    with open(events_file, "w") as out:
        watcher = subprocess.Popen([CTR, "--address", d.address, "events"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_events_subscribed(d, events_file)
        run(d, cid, "on-failure:3", "echo run; exit 3")
        wait_logged(d, f"container default/{cid} exited (3): not restarted (policy on-failure:3)")
        found = labels(d, cid)
        assert found[rp.POLICY_LABEL] == "on-failure:3"
        assert found[rp.COUNT_LABEL] == "3"
        assert found[rp.EXIT_STATUS_LABEL] == "3"
        assert found[rp.EXITED_AT_LABEL] >= found[rp.STARTED_AT_LABEL]
        assert status(d, cid) == "STOPPED"
        wait_until(lambda: len(task_events(events_file.read_text().splitlines(), cid)) >= 8, timeout=30,
                   what="ctr events to print the 4 starts and 4 exits")
    finally:
        watcher.terminate()
        watcher.wait(10)
    # Each run kept the container's log: `dock logs` has the output of all four.
    assert ok(dock(d, "logs", cid)) == "run\n" * 4
    seen = task_events(events_file.read_text().splitlines(), cid)
    assert [topic for _, topic in seen] == ["/tasks/start", "/tasks/exit"] * 4, seen
    exits = [t for t, topic in seen if topic == "/tasks/exit"]
    starts = [t for t, topic in seen if topic == "/tasks/start"]
    gaps = [starts[i + 1] - exits[i] for i in range(3)]
    # Docker's back-off: 100 ms, then doubling; each gap is at least its delay (load only adds).
    print("gaps between an exit and the restart's start:", [f"{g:.3f}" for g in gaps])
    for i, gap in enumerate(gaps):
        assert gap >= 0.1 * 2 ** i - 0.005, gaps


# -- always ----------------------------------------------------------------------------------------


def test_always_comes_back_after_a_kill_from_outside_the_api_and_after_a_reboot(d: DaemonProcess) -> None:
    cid = uid("always")
    run(d, cid, "always", FOREVER)
    first = running_pid(d, cid)
    os.kill(first, signal.SIGKILL)  # not through the API: the container died, nobody stopped it
    second = running_pid(d, cid, not_in={first})
    found = labels(d, cid)
    assert (found[rp.COUNT_LABEL], found[rp.EXIT_STATUS_LABEL]) == ("1", "137")
    assert found.get(rp.EXPLICITLY_STOPPED_LABEL, "false") == "false"

    # A reboot, as far as the daemon can tell: it dies (SIGKILL), so do its shims and the container.
    shims = shims_in_bundles(d)
    assert shims
    d.stop(signal.SIGKILL)
    for pid in [*shims, second]:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in [*shims, second]), timeout=30, what="shims and container gone")
    restart_daemon(d)
    third = running_pid(d, cid, not_in={first, second})
    found = labels(d, cid)
    assert (found[rp.COUNT_LABEL], found[rp.EXIT_STATUS_LABEL]) == ("2", "255")  # lost: containerd's 255
    assert found[rp.STARTED_AT_LABEL] > found[rp.EXITED_AT_LABEL]
    assert third not in (first, second)


# -- explicit stops --------------------------------------------------------------------------------


def test_unless_stopped_stays_stopped_after_an_explicit_stop_across_a_daemon_restart(d: DaemonProcess) -> None:
    unless, always = uid("unless"), uid("always")
    run(d, unless, "unless-stopped", FOREVER)
    run(d, always, "always", FOREVER)
    for cid in (unless, always):
        running_pid(d, cid)
        ok(ctr(d, "tasks", "kill", "-s", "SIGKILL", cid))  # a user's stop, through the API
    for cid, policy in ((unless, "unless-stopped"), (always, "always")):
        wait_logged(d, f"container default/{cid} exited (137): not restarted (policy {policy}, stopped by a user)")
        assert status(d, cid) == "STOPPED"
        assert labels(d, cid)[rp.EXPLICITLY_STOPPED_LABEL] == "true"

    restart_daemon(d, signal.SIGKILL)
    wait_logged(d, "restart monitor: start-up reconcile done")
    # Docker's rule: a manual stop holds `always` only until the daemon restarts.
    running_pid(d, always)
    assert labels(d, always)[rp.EXPLICITLY_STOPPED_LABEL] == "false"
    assert status(d, unless) == "STOPPED"
    assert labels(d, unless)[rp.EXPLICITLY_STOPPED_LABEL] == "true"

    # A user's start (Tasks/Create) ends the stop: the policy holds again.
    ok(ctr(d, "tasks", "rm", unless))
    ok(ctr(d, "tasks", "start", "--null-io", "-d", unless))
    started = running_pid(d, unless)
    assert labels(d, unless)[rp.EXPLICITLY_STOPPED_LABEL] == "false"
    os.kill(started, signal.SIGKILL)
    running_pid(d, unless, not_in={started})
    assert labels(d, unless)[rp.COUNT_LABEL] == "1"  # counted afresh from the user's start


# -- delete ----------------------------------------------------------------------------------------


def test_no_restart_after_the_container_is_deleted(d: DaemonProcess) -> None:
    cid = uid("gone")
    run(d, cid, "always", "exit 1")
    # The back-off grows restart by restart; at 3.2 s there is time to delete while it waits.
    marker = f"container default/{cid} exited (1): restarting in 3.2 s"
    wait_logged(d, marker)
    seen = time.monotonic()
    ok(ctr(d, "tasks", "rm", cid))
    ok(ctr(d, "containers", "rm", cid))
    wait_logged(d, f"container default/{cid} deleted: its pending restart is cancelled")

    def no_task_until_past_the_restart_time() -> bool:
        assert task(d, cid) is None, "a task came back for a deleted container"
        assert not (d.state / "tasks" / "default" / cid).exists()
        return time.monotonic() > seen + 3.2 + 1.0

    wait_until(no_task_until_past_the_restart_time, timeout=30, what="the cancelled restart's time to pass")
    assert f"container default/{cid} restarted (restart 6)" not in log_since_start(d)


# -- dock's option ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["-d", "--restart", "sometimes"], "invalid restart policy 'sometimes'"),
    (["-d", "--restart", "always:2"], "only on-failure takes a maximum retry count"),
    (["-d", "--rm", "--restart", "on-failure"], "conflicting options: --restart and --rm"),
    (["--rm", "--restart", "always"], "conflicting options: --restart and --rm"),  # in the foreground too
])
def test_dock_run_refuses_a_bad_restart_option_in_words(d: DaemonProcess, args: list[str], words: str) -> None:
    cid = uid("bad")
    res = dock(d, "run", "--net", "none", *args, "--name", cid, IMAGE, "true")
    assert res.returncode != 0
    assert words in res.stderr and res.stderr.startswith("dock: "), res.stderr
    assert "Traceback" not in res.stderr
    assert cid not in ok(ctr(d, "containers", "ls", "-q")).split()  # nothing made


# -- any client: ctr with the labels ---------------------------------------------------------------


def test_ctr_made_container_restarts_by_its_labels_to_its_log_uri(d: DaemonProcess, tmp_path: Path) -> None:
    """The policy lives in the daemon: `ctr run` with containerd's restart labels gets it too, and a
    restarted task writes to the `containerd.io/restart.loguri` label's file."""
    cid = uid("ctr")
    out = tmp_path / "restarted.log"
    ok(ctr(d, "run", "-d", "--null-io", "--label", f"{rp.POLICY_LABEL}=on-failure:1",
           "--label", f"{rp.LOG_URI_LABEL}=file://{out}", IMAGE, cid, "sh", "-c", "echo run $$; exit 5"))
    wait_logged(d, f"container default/{cid} exited (5): not restarted (policy on-failure:1)")
    found = labels(d, cid)
    assert (found[rp.COUNT_LABEL], found[rp.EXIT_STATUS_LABEL]) == ("1", "5")
    assert out.read_text() == "run 1\n"  # only the restarted run had somewhere to write to
