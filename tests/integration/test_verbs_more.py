"""More of Docker's verbs on `dock`: pause/unpause, update, diff, export, history; against a real
daemon (our shim) with busybox containers on `--net none`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cgroupfs import cgroup_dir
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE
from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI
from tests.integration.test_verbs import name, run_d
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

COUNTS = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"


@pytest.fixture
def cli(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> Iterator[DockCLI]:
    yield dock_cli
    # nothing of diff's or export's left in the daemon: no lease, no view snapshot
    assert ctr(busybox_daemon, "leases", "ls", "-q").stdout.split() == []
    assert "dock-view-" not in ctr(busybox_daemon, "snapshots", "ls").stdout


def inspect(cli: DockCLI, cid: str) -> dict[str, Any]:
    [record] = cli.json("inspect", cid)
    return record  # type: ignore[no-any-return]


def pid_of(cli: DockCLI, cid: str) -> int:
    pid = inspect(cli, cid)["state"]["pid"]
    assert pid > 0
    return int(pid)


def proc_state(pid: int) -> str:
    """The State letter of /proc/PID/status (R, S, D, T, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    raise AssertionError(f"no State in /proc/{pid}/status")


def frozen(pid: int) -> bool:
    """Is the process's cgroup frozen (v1's freezer, or v2's cgroup.events)?"""
    where = cgroup_dir(pid, "freezer")
    if (where / "freezer.state").exists():
        return (where / "freezer.state").read_text().strip() == "FROZEN"
    return "frozen 1" in (where / "cgroup.events").read_text().splitlines()


def cgroup_value(pid: int, controller: str, file: str) -> str:
    return (cgroup_dir(pid, controller) / file).read_text().strip()


def dock_raw(cli: DockCLI, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """`dock` with binary stdout (a tar), or stdout to a given file or descriptor."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address, "TMPDIR": str(cli.tmp)}
    env.pop("DOCK_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], stdout=stdout, stderr=subprocess.PIPE, env=env,
                          timeout=90, cwd=REPO)


# -- pause, unpause ---------------------------------------------------------------------------------


def test_pause_freezes_the_processes_and_unpause_thaws_them(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("pz"), cmd=["sh", "-c", COUNTS])
    other = run_d(cli, "--name", name("pz2"))
    pid = pid_of(cli, cid)
    wait_until(lambda: len(cli.ok("logs", cid).split()) > 2, what="the counter to count")
    assert cli.ok("pause", cid, other) == f"{cid}\n{other}\n"
    st = inspect(cli, cid)["state"]
    assert (st["status"], st["paused"], st["running"]) == ("paused", True, False)
    assert frozen(pid)
    if (cgroup_dir(pid, "freezer") / "freezer.state").exists():  # v1: a frozen task waits uninterruptibly
        assert proc_state(pid) == "D"
    counted = cli.ok("logs", cid)
    assert set(cli.ok("ps", "--filter", "status=paused", "-q", "--no-trunc").split()) == {cid, other}
    cli.fails("pause", cid, words=f"cannot pause container {cid}: it is already paused")

    assert cli.ok("unpause", cid[:len(cid) - 2]) == f"{cid[:len(cid) - 2]}\n"  # a unique prefix
    assert inspect(cli, cid)["state"]["status"] == "running"
    assert not frozen(pid)
    wait_until(lambda: len(cli.ok("logs", cid).split()) > len(counted.split()) + 2, what="the counter to go on")
    numbers = [int(n) for n in cli.ok("logs", cid).split()]
    assert numbers == list(range(len(numbers)))  # it carried on where it stopped: the same process
    cli.fails("unpause", cid, words=f"cannot unpause container {cid}: it is not paused")

    # several: the one that can is done, the others each say why; rc 1
    exited = run_d(cli, "--name", name("pzx"), cmd=["true"])
    assert cli.ok("wait", exited) == "0\n"
    missing = f"nosuch{secrets.token_hex(3)}"
    res = cli.dock("unpause", exited, other, missing)
    assert res.returncode == 1 and res.stdout == f"{other}\n", res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert f"dock: cannot unpause container {exited}: it is not paused: failed precondition" in lines
    assert any(line.startswith("dock: container ") and missing in line and line.endswith("not found")
               for line in lines), lines
    cli.fails("pause", exited, words=f"cannot pause container {exited}: it is not running")
    # a paused container stops (dock stop thaws it so it sees the signal), and is removed by rm -f
    cli.ok("pause", cid)
    assert cli.ok("stop", "-t", "1", cid) == f"{cid}\n"
    assert inspect(cli, cid)["state"]["status"] == "exited"


# -- update -----------------------------------------------------------------------------------------


def test_update_changes_a_running_containers_cgroup_and_its_spec(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("up"), "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50")
    pid = pid_of(cli, cid)
    assert cgroup_value(pid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cli.ok("update", "--memory", "96m", "--memory-swap", "192m", "--cpus", "1.5", "--cpu-shares", "512",
                  "--cpuset-cpus", "0", "--pids-limit", "77", cid) == f"{cid}\n"
    expected = {("memory", "memory.limit_in_bytes"): str(96 << 20),
                ("memory", "memory.memsw.limit_in_bytes"): str(192 << 20),
                ("cpu", "cpu.cfs_quota_us"): "150000", ("cpu", "cpu.cfs_period_us"): "100000",
                ("cpu", "cpu.shares"): "512", ("cpuset", "cpuset.cpus"): "0", ("pids", "pids.max"): "77"}
    if not (cgroup_dir(pid, "memory") / "memory.memsw.limit_in_bytes").exists():  # swap not accounted
        del expected[("memory", "memory.memsw.limit_in_bytes")]
    for (controller, file), value in expected.items():
        assert cgroup_value(pid, controller, file) == value, file
    resources = inspect(cli, cid)["spec"]["linux"]["resources"]
    assert resources["memory"] == {"limit": 96 << 20, "swap": 192 << 20}
    assert resources["cpu"] == {"quota": 150000, "period": 100000, "shares": 512, "cpus": "0"}
    assert resources["pids"] == {"limit": 77}

    # the record keeps them: a restart's new task has them from its start
    cli.ok("restart", "-t", "0", cid)
    again = pid_of(cli, cid)
    assert again != pid
    for (controller, file), value in expected.items():
        assert cgroup_value(again, controller, file) == value, file
    # one at a time leaves the others; memory alone keeps the swap limit it must stay under
    cli.ok("update", "--memory", "128m", cid)
    assert cgroup_value(again, "memory", "memory.limit_in_bytes") == str(128 << 20)
    assert cgroup_value(again, "cpu", "cpu.shares") == "512"
    cli.fails("update", "--memory", "256m", cid, words="above the container's memory+swap limit")
    cli.fails("update", "--memory-swap", "64m", cid, words="is below --memory")
    assert cgroup_value(again, "memory", "memory.limit_in_bytes") == str(128 << 20)  # nothing changed
    cli.ok("update", "--memory-swap", "-1", "--pids-limit", "-1", cid)
    assert cgroup_value(again, "pids", "pids.max") == "max"
    assert inspect(cli, cid)["spec"]["linux"]["resources"]["memory"]["swap"] == -1


def test_update_restart_policy_stopped_containers_and_errors(cli: DockCLI) -> None:
    cid = run_d(cli, "--name", name("upr"), cmd=["true"])
    assert cli.ok("wait", cid) == "0\n"
    assert "RestartPolicy" not in inspect(cli, cid)
    assert cli.ok("update", "--restart", "on-failure:3", "--cpu-shares", "300", cid) == f"{cid}\n"
    record = inspect(cli, cid)
    assert record["RestartPolicy"] == "on-failure:3"
    assert record["labels"]["containerd.io/restart.status"] == "running"
    assert record["spec"]["linux"]["resources"]["cpu"]["shares"] == 300  # a stopped one: its record alone
    cli.ok("update", "--restart", "no", cid)
    record = inspect(cli, cid)
    assert "RestartPolicy" not in record and "containerd.io/restart.status" not in record["labels"]
    cli.ok("start", cid)
    assert cli.ok("wait", cid) == "0\n"

    rm = run_d(cli, "--rm", "--name", name("uprm"))
    cli.fails("update", "--restart", "always", rm, words="it is removed when it exits (--rm)")
    cli.fails("update", cid, words="give at least one of")
    cli.fails("update", "--memory", "lots", cid, words="invalid size 'lots'")
    cli.fails("update", "--restart", "sometimes", cid, words="invalid restart policy 'sometimes'")
    cli.fails("update", "--cpuset-cpus", "3-1", cid, words="range 3-1 goes down")
    res = cli.dock("update", "--cpu-shares", "1", cid)  # past the wire's range: argparse's usage error
    assert res.returncode == 2 and "argument --cpu-shares: 1 is out of range (2 to 262144)" in res.stderr, res
    cli.fails("update", "--memory", "64m", f"nosuch{secrets.token_hex(3)}", words="not found")


# -- diff -------------------------------------------------------------------------------------------


CHANGES = ("echo new > /new; echo more >> /etc/passwd; rm /etc/group; mkdir -p /tmp/d/e; "
           "ln -s /new /tmp/d/link; rm -r /home; echo ready; sleep 600")


def test_diff_lists_adds_changes_and_deletions(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    fresh = cli.ok("containers", "create", "--net", "none", "--name", name("df0"), IMAGE, "true").strip()
    assert cli.ok("diff", fresh) == ""  # never ran: nothing changed
    assert cli.json("diff", fresh) == []
    # the mount points the runtime made (/run, a tmpfs's directory) are not the container's changes
    ran = run_d(cli, "--name", name("df1"), "--tmpfs", "/srv/x/y", cmd=["true"])
    assert cli.ok("wait", ran) == "0\n"
    assert cli.ok("diff", ran) == ""
    cid = run_d(cli, "--name", name("df"), cmd=["sh", "-c", CHANGES])
    wait_until(lambda: "ready" in cli.ok("logs", cid), what="the changes")
    lines = cli.ok("diff", cid[:8]).splitlines()
    for want in ("A /new", "C /etc", "C /etc/passwd", "D /etc/group", "C /tmp", "A /tmp/d", "A /tmp/d/e",
                 "A /tmp/d/link", "D /home"):
        assert want in lines, (want, lines)
    assert not any(line.startswith("A /etc/passwd") or line.startswith("/home/") for line in lines)
    paths = [line[2:] for line in lines]
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    assert all(line[:2] in ("A ", "C ", "D ") for line in lines)
    assert {(c["kind"], c["path"]) for c in cli.json("diff", cid)} == {tuple(line.split(" ", 1)) for line in lines}
    cli.fails("diff", f"nosuch{secrets.token_hex(3)}", words="not found")


# -- export -----------------------------------------------------------------------------------------


MAKES = ("echo hello > /data.txt; chown 1000:2000 /data.txt; chmod 640 /data.txt; ln /data.txt /hard.txt; "
         "ln -s data.txt /soft; mknod /dev-null c 1 3; rm /etc/group; echo ready; sleep 600")


def test_export_writes_the_whole_filesystem(cli: DockCLI, tmp_path: Path) -> None:
    cid = run_d(cli, "--name", name("ex"), cmd=["sh", "-c", MAKES])
    wait_until(lambda: "ready" in cli.ok("logs", cid), what="the files")
    out = tmp_path / "out" / "fs.tar"
    out.parent.mkdir()
    assert cli.ok("export", "-o", str(out), cid) == ""
    assert os.listdir(out.parent) == ["fs.tar"]  # no temp file beside it
    piped = dock_raw(cli, "export", cid)
    assert piped.returncode == 0 and piped.stderr == b"", piped.stderr
    for data in (out.read_bytes(), piped.stdout):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert "bin/busybox" in members and "etc/passwd" in members and "etc/group" not in members
            assert not any(n.startswith(("/", "./")) for n in members)
            f = members["data.txt"]
            assert (f.uid, f.gid, f.mode, f.uname, f.isfile()) == (1000, 2000, 0o640, "", True)
            assert tar.extractfile(f).read() == b"hello\n"  # type: ignore[union-attr]
            assert members["hard.txt"].islnk() and members["hard.txt"].linkname == "data.txt"
            assert members["soft"].issym() and members["soft"].linkname == "data.txt"
            dev = members["dev-null"]
            assert dev.ischr() and (dev.devmajor, dev.devminor) == (1, 3)
            assert members["bin"].isdir()

    # a terminal gets no tar; a bad reference one clean line
    primary, secondary = pty.openpty()
    try:
        res = dock_raw(cli, "export", cid, stdout=secondary)
    finally:
        os.close(secondary)
        os.close(primary)
    assert res.returncode == 1 and b"refusing to write a tar archive to a terminal" in res.stderr, res.stderr
    cli.fails("export", "-o", str(tmp_path / "x.tar"), f"nosuch{secrets.token_hex(3)}", words="not found")
    assert not (tmp_path / "x.tar").exists()


# -- history ----------------------------------------------------------------------------------------


def test_history_newest_first(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    [base] = cli.json("history", "busybox")
    assert base["created_by"] == "tests/images.py" and base["size"] > 0 and not base["empty_layer"]
    cid = run_d(cli, "--name", name("hi"), cmd=["sh", "-c", "echo x > /x; echo ready; sleep 600"])
    wait_until(lambda: "ready" in cli.ok("logs", cid), what="the file")
    ref = f"hist-{secrets.token_hex(3)}:1"
    try:
        cli.ok("commit", "-m", "added x", "-c", "CMD [\"sh\", \"-c\", \"echo a very long command line to cut\"]",
               cid, ref)
        entries = cli.json("history", ref)
        assert [e["created_by"] for e in entries][-1] == "tests/images.py"
        top = entries[0]
        assert top["comment"] == "added x" and top["created"] and top["id"].startswith("sha256:")
        assert all(e["id"] == "<missing>" for e in entries[1:])
        table = cli.ok("history", ref).splitlines()
        assert table[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
        assert len(table) == len(entries) + 1
        assert table[1].startswith(top["id"].removeprefix("sha256:")[:12]) and "ago" in table[1]
        assert "added x" in table[1] and table[-1].startswith("<missing>")
        long_by = max((e["created_by"] for e in entries), key=len)
        if len(long_by) > 45:
            assert long_by not in cli.ok("history", ref) and long_by in cli.ok("history", "--no-trunc", ref)
        cli.fails("history", "nosuch:image", words="not found")
    finally:
        cli.dock("images", "rm", ref)


@pytest.mark.parametrize("tty", [False, True], ids=["fifos", "attach"])
def test_a_foreground_run_that_exited_shows_as_exited(dock_cli: DockCLI, tty: bool) -> None:
    """As `docker ps -a` after `docker run`: the run deletes its task, its exit stays in view."""
    cid = name("fg")
    if tty:  # through the daemon's attach (a pty), from a real terminal
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(sys.executable, [sys.executable, "-m", "dock.cli", "run", "-t", "--net", "none", "--name",
                                       cid, IMAGE, "sh", "-c", "exit 3"], dock_cli_env(dock_cli))
        with os.fdopen(fd, "rb", buffering=0) as out:
            with contextlib.suppress(OSError):  # EIO once dock exited
                while out.read(4096):
                    pass
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
    else:
        assert dock_cli.dock("run", "--net", "none", "--name", cid, IMAGE, "sh", "-c", "exit 3").returncode == 3
    (row,) = dock_cli.json("ps", "-a", "--filter", f"name={cid}")
    assert (row["state"], row["exit_code"]) == ("exited", 3) and row["status"].startswith("Exited (3) "), row
    assert cid in dock_cli.ok("ps", "-a", "-q", "--no-trunc", "--filter", "exited=3")
    assert dock_cli.json("inspect", cid)[0]["state"]["exit_code"] == 3
    dock_cli.ok("rm", cid)


def dock_cli_env(cli: DockCLI) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address}
