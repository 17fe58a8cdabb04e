"""Container logs (issue 15): the shim captures, the daemon's Logs service and `dock logs` read.

A real daemon, our shim, busybox containers printing numbered lines; the log is checked through
`dock logs` (and the files on disk where the layout is the point: rotation).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_common import containerlog as cl
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import REPO, DaemonProcess, start_daemon
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def dock(d: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env,
                          timeout=timeout, cwd=REPO)


def ok(d: DaemonProcess, *args: str) -> bytes:
    res = dock(d, *args)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def run_detached(d: DaemonProcess, cid: str, script: str, *opts: str) -> None:
    ok(d, "run", "-d", "--net", "none", *opts, "--name", cid, IMAGE, "sh", "-c", script)


def task_gone(d: DaemonProcess, cid: str) -> bool:
    rows = ctr(d, "tasks", "ls").stdout.splitlines()[1:]
    return not any(r.split()[0] == cid and r.split()[2] == "RUNNING" for r in rows)


def log_dir(d: DaemonProcess, cid: str) -> Path:
    return d.root / "logs" / "default" / cid


def seq_lines(text: bytes) -> list[int]:
    return [int(x) for x in re.findall(rb"^line (\d+)$", text, re.MULTILINE)]


def test_stdout_and_stderr_in_order_with_streams_and_times(d: DaemonProcess) -> None:
    cid = uid("both")
    run_detached(d, cid, "for i in 1 2 3; do echo out $i; echo err $i >&2; done")
    wait_until(lambda: task_gone(d, cid), timeout=30)
    res = dock(d, "logs", cid)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"out 1\nout 2\nout 3\n"
    assert res.stderr == b"err 1\nerr 2\nerr 3\n"
    timed = dock(d, "logs", "-t", cid)
    lines = timed.stdout.decode().splitlines()
    assert all(TS.match(line) for line in lines), lines
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert stamps == sorted(stamps)
    # The file interleaves both streams in the order the shim read them (two pipes: the order
    # between streams is the reading order, as with Docker), each stream in its own order.
    records = [r for r in map(cl.parse_record, (log_dir(d, cid) / cl.CURRENT).read_bytes().splitlines()) if r]
    assert [r.time_ns for r in records] == sorted(r.time_ns for r in records)
    for stream, word in (("stdout", "out"), ("stderr", "err")):
        assert [r.content for r in records if r.stream == stream] == [f"{word} {i}".encode() for i in (1, 2, 3)]
    assert all(not r.partial for r in records)


def test_tail_across_rotated_files_and_rotation_limits(d: DaemonProcess) -> None:
    cid = uid("rot")
    run_detached(d, cid, "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done",
                 "--log-opt", "max-size=8k", "--log-opt", "max-file=4")
    wait_until(lambda: task_gone(d, cid), timeout=30)
    files = sorted(p.name for p in log_dir(d, cid).iterdir() if p.name.startswith(cl.CURRENT))
    assert files == [cl.CURRENT, f"{cl.CURRENT}.1", f"{cl.CURRENT}.2", f"{cl.CURRENT}.3"]
    for p in log_dir(d, cid).glob(f"{cl.CURRENT}*"):
        assert p.stat().st_size <= 8 * 1024
    everything = seq_lines(ok(d, "logs", cid))
    assert everything == list(range(everything[0], 3000))  # the oldest rotated away, nothing else
    for n in (1, 150, 400):  # 400 lines span three files
        assert seq_lines(ok(d, "logs", "--tail", str(n), cid)) == list(range(3000 - n, 3000))
    assert ok(d, "logs", "--tail", "0", cid) == b""


def test_follow_sees_new_lines_and_ends_with_the_container(d: DaemonProcess) -> None:
    cid = uid("follow")
    gate = Path(f"/tmp/dy-logs-gate-{secrets.token_hex(4)}")
    ok(d, "run", "-d", "--net", "none", "--mount", "type=bind,src=/tmp,dst=/host,options=rbind",
       "--name", cid, IMAGE, "sh", "-c",
       f"echo line 0; while [ ! -e /host/{gate.name} ]; do sleep 0.05; done; echo line 1; echo line 2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    follower = subprocess.Popen([sys.executable, "-m", "dock.cli", "logs", "-f", cid], stdout=subprocess.PIPE,
                                env=env, cwd=REPO)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"line 0\n"
        gate.touch()
        assert follower.stdout.readline() == b"line 1\n"
        assert follower.stdout.readline() == b"line 2\n"
        assert follower.wait(timeout=30) == 0  # the container exited: the follow ends
    finally:
        gate.unlink(missing_ok=True)
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        assert follower.stdout is not None
        follower.stdout.close()


def test_since_and_until(d: DaemonProcess) -> None:
    cid = uid("since")
    run_detached(d, cid, "echo line 0; sleep 0.3; echo line 1; sleep 0.3; echo line 2")
    wait_until(lambda: task_gone(d, cid), timeout=30)
    stamps = [line.split(b" ", 1)[0].decode() for line in ok(d, "logs", "-t", cid).splitlines()]
    assert len(stamps) == 3
    assert seq_lines(ok(d, "logs", "--since", stamps[1], cid)) == [1, 2]
    assert seq_lines(ok(d, "logs", "--until", stamps[1], cid)) == [0, 1]
    assert seq_lines(ok(d, "logs", "--since", stamps[1], "--until", stamps[1], cid)) == [1]
    assert seq_lines(ok(d, "logs", "--since", "1h", cid)) == [0, 1, 2]
    bad = dock(d, "logs", "--since", "yesterday", cid)
    assert bad.returncode != 0 and b"invalid time" in bad.stderr and b"Traceback" not in bad.stderr


def test_daemon_kill_and_restart_loses_and_duplicates_nothing(busybox_daemon: DaemonProcess) -> None:
    gate = Path(f"/tmp/dy-logs-gate-{secrets.token_hex(4)}")
    with daemon_with_runtime("dockyard") as d:
        try:
            import_busybox(d)
            cid = uid("restart")
            # Half the lines before and while the daemon dies, the other half once it is back.
            run_detached(d, cid, "i=0; while [ $i -lt 40000 ]; do echo line $i; i=$((i+1)); "
                         f"if [ $i = 20000 ]; then while [ ! -e /host/{gate.name} ]; do sleep 0.05; done; fi; done",
                         "--mount", "type=bind,src=/tmp,dst=/host,options=rbind",
                         "--log-opt", "max-size=64k", "--log-opt", "max-file=40")
            wait_until(lambda: (log_dir(d, cid) / cl.CURRENT).exists(), timeout=30)
            d.stop(signal.SIGKILL)
            d.proc = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")]).proc
            assert not task_gone(d, cid)
            gate.touch()
            wait_until(lambda: task_gone(d, cid), timeout=60)
            assert seq_lines(ok(d, "logs", cid)) == list(range(40000))
            remove_everything(d)
        finally:
            gate.unlink(missing_ok=True)


def test_slow_reader_does_not_stall_the_container(d: DaemonProcess) -> None:
    cid = uid("slow")
    run_detached(d, cid, "i=0; while [ $i -lt 200000 ]; do echo line $i; i=$((i+1)); done; echo done")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    # A follower that never reads its pipe: the daemon blocks on it, the container must not.
    reader = subprocess.Popen([sys.executable, "-m", "dock.cli", "logs", "-f", cid], stdout=subprocess.PIPE,
                              env=env, cwd=REPO)
    try:
        wait_until(lambda: task_gone(d, cid), timeout=60)
        assert ok(d, "logs", "--tail", "1", cid) == b"done\n"
    finally:
        reader.kill()
        reader.wait()
        assert reader.stdout is not None
        reader.stdout.close()


def daemon_pid(d: DaemonProcess) -> int:
    return d.proc.pid


def open_log_fds(pid: int, cid: str) -> list[str]:
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if f"/logs/default/{cid}/" in target:
            out.append(target)
    return out


def test_killed_follower_leaks_nothing(d: DaemonProcess) -> None:
    cid = uid("leak")
    run_detached(d, cid, "while true; do echo line; sleep 0.05; done")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    followers = [subprocess.Popen([sys.executable, "-m", "dock.cli", "logs", "-f", cid], stdout=subprocess.PIPE,
                                  env=env, cwd=REPO) for _ in range(3)]
    for f in followers:
        assert f.stdout is not None and f.stdout.readline() == b"line\n"
    assert open_log_fds(daemon_pid(d), cid)  # they are being read now
    shim = int((d.state / "tasks" / "default" / cid / "shim.pid").read_text())
    writer = sorted(open_log_fds(shim, cid))  # the shim's side: its log file and writer lock only
    assert writer == sorted([str(log_dir(d, cid) / cl.CURRENT), str(log_dir(d, cid) / cl.WRITER_LOCK)])
    for f in followers:
        f.kill()
        f.wait()
        assert f.stdout is not None
        f.stdout.close()
    wait_until(lambda: not open_log_fds(daemon_pid(d), cid), timeout=10)
    assert sorted(open_log_fds(shim, cid)) == writer


def test_stopped_container_readable_and_logs_go_with_the_container(d: DaemonProcess) -> None:
    cid = uid("gone")
    run_detached(d, cid, "echo hello; echo bye >&2")
    wait_until(lambda: task_gone(d, cid), timeout=30)
    res = dock(d, "logs", cid)
    assert (res.stdout, res.stderr) == (b"hello\n", b"bye\n")
    assert ctr(d, "tasks", "rm", cid).returncode == 0
    res = dock(d, "logs", cid)  # no task any more: the log stays with the container
    assert (res.stdout, res.stderr) == (b"hello\n", b"bye\n")
    assert log_dir(d, cid).exists()
    assert ctr(d, "containers", "rm", cid).returncode == 0
    assert not log_dir(d, cid).exists()
    gone = dock(d, "logs", cid)
    assert gone.returncode != 0 and b"not found" in gone.stderr.lower() and b"Traceback" not in gone.stderr


def test_container_without_a_log_is_refused_clearly(d: DaemonProcess) -> None:
    cid = uid("nolog")
    assert ctr(d, "run", "-d", IMAGE, cid, "true").returncode == 0
    res = dock(d, "logs", cid)
    assert res.returncode != 0 and b"without a log" in res.stderr and b"Traceback" not in res.stderr
    bad = dock(d, "run", "-d", "--log-opt", "max-size=lots", "--name", uid("bad"), IMAGE, "true")
    assert bad.returncode != 0 and b"max-size" in bad.stderr and b"Traceback" not in bad.stderr
    # Another client's bad label: the task is refused and leaves no bundle behind.
    other = uid("badlabel")
    refused = ctr(d, "run", "-d", "--label", f"{cl.LABEL_DRIVER}={cl.DRIVER}", "--label",
                  f"{cl.LABEL_MAX_SIZE}=lots", IMAGE, other, "true")
    assert refused.returncode != 0 and "max-size" in refused.stderr
    assert not (d.state / "tasks" / "default" / other).exists()


def test_ctr_log_uri_file_writes_plain_output(d: DaemonProcess, tmp_path: Path) -> None:
    cid = uid("file")
    target = tmp_path / "sub" / "out.log"  # containerd's shim makes the directory too
    res = ctr(d, "run", "--log-uri", f"file://{target}", IMAGE, cid, "sh", "-c", "echo to-out; echo to-err >&2")
    assert res.returncode == 0, res.stderr
    assert sorted(target.read_bytes().splitlines()) == [b"to-err", b"to-out"]


def test_ctr_log_uri_binary_follows_containerds_contract(d: DaemonProcess, tmp_path: Path) -> None:
    cid = uid("bin")
    out = tmp_path / "got"
    logger = tmp_path / "logger.py"
    logger.write_text(
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "os.close(5)  # ready\n"
        "so, se = os.fdopen(3, 'rb').read(), os.fdopen(4, 'rb').read()\n"
        f"open({str(out)!r} + '.part', 'wb').write(repr((os.environ['CONTAINER_ID'], "
        "os.environ['CONTAINER_NAMESPACE'], args, so, se)).encode())\n"
        f"os.rename({str(out)!r} + '.part', {str(out)!r})  # whole once it exists\n")
    wrapper = tmp_path / "logger"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {logger} \"$@\"\n")
    wrapper.chmod(0o755)
    res = ctr(d, "run", "--log-uri", f"binary://{wrapper}?--flag=value", IMAGE, cid, "sh", "-c",
              "echo to-out; echo to-err >&2")
    assert res.returncode == 0, res.stderr
    wait_until(out.exists, timeout=10)
    assert eval(out.read_text()) == (cid, "default", ["--flag", "value"], b"to-out\n", b"to-err\n")


def test_foreground_run_prints_and_logs_the_same_lines(d: DaemonProcess) -> None:
    cid = uid("fg")
    res = dock(d, "run", "--net", "none", "--name", cid, IMAGE, "sh", "-c", "echo line 0; echo line 1 >&2; echo line 2")
    assert res.returncode == 0, res.stderr
    assert (res.stdout, res.stderr) == (b"line 0\nline 2\n", b"line 1\n")
    logged = dock(d, "logs", cid)
    assert (logged.stdout, logged.stderr) == (res.stdout, res.stderr)


def test_a_terminals_output_is_logged_as_stdout(d: DaemonProcess) -> None:
    cid = uid("tty")
    shown = dock(d, "run", "-t", "--net", "none", "--name", cid, IMAGE, "sh", "-c", "echo line 0; echo line 1 >&2")
    assert shown.returncode == 0, shown.stderr
    res = dock(d, "logs", cid)
    assert res.stderr == b""
    assert res.stdout.replace(b"\r\n", b"\n") == b"line 0\nline 1\n"  # the pty's line discipline adds \r
