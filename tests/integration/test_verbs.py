"""Docker's everyday verbs on `dock` (issue 15): names and id prefixes, ps, inspect, stop, start,
restart, kill, rm, wait; against a real daemon (our shim) with busybox containers on `--net none`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, remove_everything
from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

HEX64 = re.compile(r"[0-9a-f]{64}")
# PID 1 ignores signals it has no handler for: these trap TERM, say so in their log, then idle.
TRAPS_TERM = "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done"
IGNORES_TERM = "trap '' TERM; echo ready; while true; do sleep 0.1; done"


@pytest.fixture
def cli(busybox_daemon: DaemonProcess, tmp_path: Path) -> Iterator[DockCLI]:
    yield DockCLI(busybox_daemon.address, tmp_path)
    remove_everything(busybox_daemon)
    assert list(tmp_path.iterdir()) == [], "dock left temp files behind"


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def run_d(cli: DockCLI, *args: str, cmd: list[str] | None = None) -> str:
    """`dock run -d --net none ...`: the id it prints."""
    out = cli.ok("run", "-d", "--net", "none", *args, IMAGE, *(cmd if cmd is not None else ["sleep", "600"]))
    return out.strip()


def ready(cli: DockCLI, cid: str) -> None:
    """Until the container's log says `ready` (its trap is set)."""
    wait_until(lambda: "ready" in cli.ok("logs", cid), what=f"{cid} to be ready")


def ps_json(cli: DockCLI, *args: str) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in cli.json("ps", *args)}


def state(cli: DockCLI, cid: str) -> dict[str, Any]:
    found = cli.json("inspect", cid)
    assert len(found) == 1
    state: dict[str, Any] = found[0]["state"]
    return state


# -- names and references -------------------------------------------------------------------------


def test_names_are_ids_and_unnamed_ones_get_64_hex(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    web = name("web")
    assert run_d(cli, "--name", web) == web
    assert web in ctr(busybox_daemon, "containers", "ls", "-q").stdout.split()  # ctr sees the name as the id
    anon = run_d(cli)
    assert HEX64.fullmatch(anon), anon
    [record] = cli.json("inspect", anon[:10])
    assert record["id"] == anon and record["name"] == anon[:12]
    assert record["spec"]["hostname"] == anon[:12]  # the default hostname: the short id
    created = cli.ok("containers", "create", "--net", "none", IMAGE, "true").strip()
    assert HEX64.fullmatch(created) and created != anon
    for bad in ("bad/name", "_under", "a b"):
        cli.fails("run", "--name", bad, IMAGE, "true", words=f"invalid container name {bad!r}")
        cli.fails("containers", "create", "--name", bad, IMAGE, "true", words="invalid container name")
    taken = cli.fails("run", "-d", "--net", "none", "--name", web, IMAGE, "true", words=web)
    assert "exists" in taken


def test_references_exact_then_unique_prefix(cli: DockCLI) -> None:
    base = name("pfx")
    for suffix in ("a1", "a2", "b"):
        cli.ok("containers", "create", "--net", "none", "--name", f"{base}-{suffix}", IMAGE, "true")
    cli.ok("containers", "create", "--net", "none", "--name", base, IMAGE, "true")
    assert cli.json("inspect", base)[0]["id"] == base  # exact, though four ids start with it
    assert cli.json("inspect", f"{base}-b")[0]["id"] == f"{base}-b"
    assert cli.json("inspect", f"{base}-a2")[0]["id"] == f"{base}-a2"
    assert cli.ok("start", f"{base}-b") == f"{base}-b\n"  # a unique prefix: the verb acts on it
    cli.fails("inspect", f"{base}-a", words=f"ambiguous: 2 containers start with '{base}-a'")
    cli.fails("stop", f"{base}-", words=f"ambiguous: 3 containers start with '{base}-'")
    cli.fails("rm", f"nosuch{secrets.token_hex(3)}", words="not found")
    cli.fails("kill", "not a name", words="container 'not a name': not found")
    cli.fails("logs", f"{base}-a", words="ambiguous")
    cli.fails("port", f"{base}-", words="ambiguous")
    # several references: the good ones act and print, the bad one is reported, rc 1
    res = cli.dock("inspect", f"{base}-a1", "nosuchthing")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [r["id"] for r in json.loads(res.stdout)] == [f"{base}-a1"]
    assert res.stderr.startswith("dock: ") and "nosuchthing" in res.stderr


def test_a_generated_id_by_its_prefix(cli: DockCLI) -> None:
    cid = run_d(cli, cmd=["sh", "-c", "echo hello from $(hostname)"])
    assert cli.ok("wait", cid[:6]) == "0\n"
    assert cli.ok("logs", cid[:6]) == f"hello from {cid[:12]}\n"
    assert cli.ok("rm", cid[:6]) == f"{cid[:6]}\n"
    assert cid not in cli.ok("ps", "-a", "-q", "--no-trunc").split()


# -- ps -------------------------------------------------------------------------------------------


def test_ps_lists_filters_and_speaks_json(cli: DockCLI) -> None:
    running = run_d(cli, "--name", name("up"), "--label", "tier=web")
    exited = run_d(cli, "--name", name("ex"), "--label", "tier=batch", cmd=["sh", "-c", "exit 3"])
    created = cli.ok("containers", "create", "--net", "none", "--name", name("new"), "--label", "solo",
                     IMAGE, "true").strip()
    assert cli.ok("wait", exited) == "3\n"

    table = cli.ok("ps").splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS",
                                             "NAMES"]
    assert len(table) == 2 and table[1].startswith(running[:12])
    assert "busybox:latest" in table[1] and '"sleep 600"' in table[1] and "ago" in table[1]
    assert re.search(r"\bUp (Less than a second|\d+ seconds?|About a minute)\b", table[1]), table[1]
    assert table[1].rstrip().endswith(running)

    everything = cli.ok("ps", "-a").splitlines()[1:]
    assert len(everything) == 3
    row = {line.split()[0]: line for line in everything}
    assert re.search(r"Exited \(3\) (Less than a second|\d+ seconds?|About a minute) ago", row[exited[:12]])
    assert "Created" in row[created[:12]]

    assert sorted(cli.ok("ps", "-a", "-q").split()) == sorted(c[:12] for c in (running, exited, created))
    assert cli.ok("ps", "-q") == f"{running[:12]}\n"
    assert cli.ok("ps", "-q", "--no-trunc") == f"{running}\n"

    def ids(*filters: str) -> set[str]:
        return set(cli.ok("ps", "-q", "--no-trunc", *(a for f in filters for a in ("--filter", f))).split())

    assert ids("status=exited") == {exited}  # a state filter shows stopped ones without -a
    assert ids("status=created") == {created}
    assert ids("status=running", "status=exited") == {running, exited}  # one key: either
    assert ids("exited=3") == {exited} and ids("exited=0") == set()
    assert ids("status=exited", "label=tier=batch") == {exited}  # keys: all
    assert set(cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", "label=tier").split()) == {running, exited}
    assert set(cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", "label=solo").split()) == {created}
    assert set(cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", "ancestor=busybox").split()) == \
        {running, exited, created}
    assert cli.ok("ps", "-a", "-q", "--filter", "ancestor=busybox:1.0") == ""
    assert cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", f"name={exited[3:]}") == f"{exited}\n"
    assert cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", f"id={created[:7]}") == f"{created}\n"
    for bad, words in (("nokey", "want KEY=VALUE"), ("color=red", "want KEY=VALUE"),
                       ("status=sleeping", "status is one of"), ("exited=x", "exit code")):
        cli.fails("ps", "--filter", bad, words=words)

    rows = ps_json(cli, "-a")
    assert set(rows) == {running, exited, created}
    assert rows[running]["state"] == "running" and rows[running]["pid"] > 0
    assert rows[running]["command"] == ["sleep", "600"] and rows[running]["labels"]["tier"] == "web"
    assert rows[exited]["state"] == "exited" and rows[exited]["exit_code"] == 3
    assert rows[created]["state"] == "created" and rows[created]["status"] == "Created"
    assert rows[running]["image"] == IMAGE and rows[running]["created_at"]
    assert set(ps_json(cli)) == {running}


# -- stop, start, restart, kill -------------------------------------------------------------------


def test_stop_sends_the_stop_signal_the_container_traps(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("trap"), cmd=["sh", "-c", TRAPS_TERM])
    ready(cli, cid)
    assert cli.ok("stop", "-t", "60", cid) == f"{cid}\n"  # returns once exited, with its own code
    st = state(cli, cid)
    assert (st["status"], st["exit_code"], st["running"]) == ("exited", 42, False)
    assert "got TERM" in cli.ok("logs", cid)
    assert cli.ok("stop", cid) == f"{cid}\n"  # not running: nothing to do, as Docker


def test_stop_kills_after_the_timeout(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("stubborn"), cmd=["sh", "-c", IGNORES_TERM])
    ready(cli, cid)
    assert cli.ok("stop", "-t", "1", cid) == f"{cid}\n"
    assert state(cli, cid)["exit_code"] == 137  # SIGKILL
    again = run_d(cli, "--name", name("zero"), cmd=["sh", "-c", IGNORES_TERM])
    ready(cli, again)
    assert cli.ok("stop", "--time", "0", again) == f"{again}\n"  # 0: SIGKILL at once
    assert state(cli, again)["exit_code"] == 137


def test_start_and_restart_exited_containers(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("cycle"), cmd=["sh", "-c", TRAPS_TERM])
    ready(cli, cid)
    first = state(cli, cid)["pid"]
    cli.ok("stop", cid)
    assert cli.ok("start", cid) == f"{cid}\n"
    st = state(cli, cid)
    assert st["status"] == "running" and st["pid"] not in (0, first)
    assert cli.ok("start", cid) == f"{cid}\n" and state(cli, cid)["pid"] == st["pid"]  # running: a no-op
    wait_until(lambda: cli.ok("logs", cid).count("ready") == 2, what="the second run's trap")
    assert cli.ok("restart", "-t", "30", cid) == f"{cid}\n"
    after = state(cli, cid)
    assert after["status"] == "running" and after["pid"] not in (0, st["pid"])
    assert cli.ok("logs", cid).count("got TERM") == 2  # restart stopped it with its stop signal
    # a container that never ran: start makes its task
    fresh = cli.ok("containers", "create", "--net", "none", "--name", name("fresh"), IMAGE, "sleep", "600").strip()
    assert state(cli, fresh)["status"] == "created"
    assert cli.ok("start", fresh) == f"{fresh}\n"
    assert state(cli, fresh)["status"] == "running"
    # restart of an exited one starts it
    done = run_d(cli, "--name", name("done"), cmd=["sh", "-c", "echo ran"])
    assert cli.ok("wait", done) == "0\n"
    cli.ok("restart", done)
    assert cli.ok("wait", done) == "0\n"
    assert cli.ok("logs", done) == "ran\nran\n"


def test_kill_signals(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("kill"), cmd=["sh", "-c", TRAPS_TERM])
    ready(cli, cid)
    assert cli.ok("kill", "-s", "TERM", cid) == f"{cid}\n"
    assert cli.ok("wait", cid) == "42\n"
    cli.fails("kill", cid, words=f"cannot kill container {cid}: it is not running")
    other = run_d(cli, "--name", name("kill9"))
    cli.fails("kill", "-s", "NOPE", other, words="invalid signal 'NOPE'", rc=1)
    assert cli.ok("kill", other) == f"{other}\n"  # SIGKILL by default
    assert cli.ok("wait", other) == "137\n"


# -- rm, wait ---------------------------------------------------------------------------------------


def snapshot_exists(busybox_daemon: DaemonProcess, key: str) -> bool:
    return ctr(busybox_daemon, "snapshots", "info", key).returncode == 0


def test_rm_refuses_a_running_container_unless_forced(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    cid = run_d(cli, "--name", name("rm"))
    cli.fails("rm", cid, words=f"cannot remove container {cid}: it is running; stop it first, or use dock rm -f")
    assert state(cli, cid)["status"] == "running" and snapshot_exists(busybox_daemon, cid)
    assert cli.ok("rm", "-f", "-v", cid) == f"{cid}\n"
    assert cid not in cli.ok("ps", "-a", "-q", "--no-trunc").split()
    assert cid not in ctr(busybox_daemon, "tasks", "ls", "-q").stdout.split()
    assert not snapshot_exists(busybox_daemon, cid)
    exited = run_d(cli, "--name", name("rmx"), cmd=["true"])
    cli.ok("wait", exited)
    created = cli.ok("containers", "create", "--net", "none", "--name", name("rmc"), IMAGE, "true").strip()
    assert cli.ok("rm", exited, created) == f"{exited}\n{created}\n"  # stopped ones need no -f
    assert not snapshot_exists(busybox_daemon, exited) and not snapshot_exists(busybox_daemon, created)
    assert cli.ok("ps", "-a", "-q") == ""


def test_wait_on_exited_and_running_containers(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    exited = run_d(cli, "--name", name("w1"), cmd=["sh", "-c", "exit 5"])
    running = run_d(cli, "--name", name("w2"), cmd=["sh", "-c", TRAPS_TERM])
    ready(cli, running)
    assert cli.ok("wait", exited) == "5\n"
    assert cli.ok("wait", exited) == "5\n"  # and again: an exited task keeps its status
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": busybox_daemon.address}
    waiter = subprocess.Popen([sys.executable, "-m", "dock.cli", "wait", running, exited], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cli.ok("kill", "-s", "TERM", running)
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert (waiter.returncode, out, err) == (0, "42\n5\n", "")
    never = cli.ok("containers", "create", "--net", "none", "--name", name("w3"), IMAGE, "true").strip()
    cli.fails("wait", never, words=f"container {never} has no task to wait for")


# -- inspect ----------------------------------------------------------------------------------------


def test_inspect_shows_record_state_mounts_and_restart_labels(cli: DockCLI) -> None:
    with tempfile.TemporaryDirectory(prefix="dy-verbs-") as host:
        cid = run_d(cli, "--name", name("insp"), "--label", "app=x", "--label", "containerd.io/restart.policy=no",
                    "--label", "containerd.io/restart.count=2",
                    "--mount", f"type=bind,src={host},dst=/data,options=rbind:ro")
        [rec] = cli.json("inspect", cid)
        assert rec["id"] == rec["name"] == cid and rec["image"] == IMAGE
        assert rec["labels"]["app"] == "x" and rec["runtime"] == "io.containerd.runc.v2"
        assert rec["created_at"] and rec["updated_at"] and rec["spec"]["process"]["args"] == ["sleep", "600"]
        st = rec["state"]
        assert st["status"] == "running" and st["running"] and not st["paused"] and st["pid"] > 0
        assert st["exit_code"] is None and st["started_at"] and st["task"]["status"] == "RUNNING"
        assert [(m["source"], m["destination"]) for m in rec["mounts"]] == [(host, "/data")]
        # shown as they are (the daemon's restart monitor keeps the count: a user's start resets it)
        assert rec["RestartPolicy"] == "no" and rec["RestartCount"].isdigit()
        assert rec["restart"]["containerd.io/restart.policy"] == "no"
        assert rec["ports"] == [] and "network" in rec
        cli.ok("kill", cid)
        cli.ok("wait", cid)
        [rec] = cli.json("inspect", cid)
        assert rec["state"]["status"] == "exited" and rec["state"]["exit_code"] == 137
        assert rec["state"]["exited_at"] and rec["state"]["pid"] == 0
        assert cli.ok("rm", cid) == f"{cid}\n"
