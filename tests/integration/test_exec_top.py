"""dock exec and dock top (issue 15), with a real daemon, our shim and busybox containers.

exec: the process's exit status is dock's; the container's env, user and working directory are
the defaults and -e/-u/-w change them; -t gives a real terminal the size of ours; -d detaches.
top: the rows are the container's processes, by the PIDs its shim lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import secrets
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE
from tests.daemon import REPO, DaemonProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]


def env_of(d: DaemonProcess) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}


def dock(d: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env_of(d),
                          timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL)


def ok(d: DaemonProcess, *args: str) -> str:
    res = dock(d, *args)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def running(d: DaemonProcess, *opts: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
    cid = f"ex-{secrets.token_hex(3)}"
    ok(d, "run", "-d", "--net", "none", *opts, "--name", cid, IMAGE, *cmd)
    return cid


def test_exit_status_is_docks(d: DaemonProcess) -> None:
    cid = running(d)
    assert dock(d, "exec", cid, "sh", "-c", "exit 42").returncode == 42
    assert dock(d, "exec", cid, "true").returncode == 0
    res = dock(d, "exec", cid, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    # The exec processes are gone once they exited: only the init is left.
    assert ok(d, "exec", cid, "sh", "-c", "ps -o pid,comm | grep -c sleep").strip() == "1"


def test_container_defaults_and_overrides(d: DaemonProcess) -> None:
    cid = running(d, "-e", "FOO=bar", "--cwd", "/tmp", "--user", "1000:1000")
    script = 'echo "$FOO"; pwd; id -u; id -g'
    assert ok(d, "exec", cid, "sh", "-c", script) == "bar\n/tmp\n1000\n1000\n"
    assert ok(d, "exec", "-e", "FOO=baz", "-e", "NEW=1", "-w", "/etc", "-u", "root", cid,
              "sh", "-c", script + '; echo "$NEW"') == "baz\n/etc\n0\n0\n1\n"
    # A name is looked up in the container's /etc/passwd, with its groups from /etc/group.
    assert ok(d, "exec", "-u", "nobody", cid, "id") == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    assert ok(d, "exec", "-u", "65534:0", cid, "sh", "-c", "id -u; id -g") == "65534\n0\n"
    res = dock(d, "exec", "-u", "nosuchuser", cid, "true")
    assert res.returncode != 0 and b"nosuchuser" in res.stderr and b"Traceback" not in res.stderr


def test_exec_by_id_prefix(d: DaemonProcess) -> None:
    cid = running(d)
    assert ok(d, "exec", cid[:-2], "echo", "found") == "found\n"


def _read_until_exit(master: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                piece = os.read(master, 65536)
            except BlockingIOError:  # flushed away meanwhile
                continue
            except OSError:  # EIO: every slave end is closed
                break
            if not piece:
                break
            out += piece
        elif proc.poll() is not None:
            break
    return out


def test_tty_is_a_real_terminal_the_size_of_ours(d: DaemonProcess) -> None:
    cid = running(d)
    master, slave = pty.openpty()
    # Non-blocking: dock making the terminal raw (TCSAFLUSH) may discard output between a select
    # and the read that follows, and a blocking read would then wait for ever.
    os.set_blocking(master, False)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "exec", "-i", "-t", cid,
                                 "sh", "-c", "tty; stty size; test -t 0 && echo stdin-is-a-tty; read line; "
                                             "echo got:$line; exit 5"],
                                stdin=slave, stdout=slave, stderr=slave, env=env_of(d), cwd=REPO,
                                start_new_session=True)
        os.close(slave)
        slave = -1
        got = b""
        deadline = time.monotonic() + 60
        while b"stdin-is-a-tty" not in got and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                with contextlib.suppress(BlockingIOError):
                    got += os.read(master, 65536)
        os.write(master, b"hello\r")
        got += _read_until_exit(master, proc)
        assert proc.wait(timeout=60) == 5
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = got.decode(errors="replace")
    assert "/dev/pts/" in text and "33 101" in text and "stdin-is-a-tty" in text, text
    assert "got:hello" in text, text


def test_detached_exec_runs_on(d: DaemonProcess) -> None:
    cid = running(d)
    out = ok(d, "exec", "-d", cid, "sh", "-c", "sleep 0.2; echo done > /tmp/detached")
    assert out.strip()  # its exec id
    wait_until(lambda: dock(d, "exec", cid, "cat", "/tmp/detached").stdout == b"done\n", what="the detached exec")


def test_exec_needs_a_running_container(d: DaemonProcess) -> None:
    cid = running(d)
    ok(d, "tasks", "kill", "-s", "SIGKILL", cid)
    wait_until(lambda: dock(d, "tasks", "rm", cid).returncode == 0, what="task deleted")
    res = dock(d, "exec", cid, "true")
    assert res.returncode != 0 and b"is not running" in res.stderr and b"Traceback" not in res.stderr
    res = dock(d, "top", cid)
    assert res.returncode != 0 and b"Traceback" not in res.stderr and b"unexpected" not in res.stderr


def _pids(d: DaemonProcess, cid: str) -> set[int]:
    rows = ctr(d, "tasks", "ps", cid).stdout.splitlines()[1:]
    return {int(r.split()[0]) for r in rows if r.strip()}


def test_top_lists_the_containers_processes(d: DaemonProcess) -> None:
    cid = running(d, cmd=("sh", "-c", "sleep 600 & sleep 700 & wait"))
    wait_until(lambda: len(_pids(d, cid)) == 3, what="three processes in the container")
    other = running(d)  # another container's processes are not listed
    text = ok(d, "top", cid)
    lines = text.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    pids = {int(line.split()[1]) for line in lines[1:]}
    assert pids == _pids(d, cid)
    assert pids.isdisjoint(_pids(d, other)) and os.getpid() not in pids
    assert any(line.endswith("sleep 600") for line in lines[1:]), text
    assert any(line.endswith("sleep 700") for line in lines[1:]), text
    # ps options, and JSON
    custom = ok(d, "top", cid, "-o", "pid,comm").splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert {int(line.split()[0]) for line in custom[1:]} == pids
    import json

    doc = json.loads(ok(d, "--format", "json", "top", cid))
    assert doc["titles"][1] == "PID" and {int(r[1]) for r in doc["processes"]} == pids
    res = dock(d, "top", cid, "-o", "comm")  # no PID column: said so
    assert res.returncode != 0 and b"PID" in res.stderr
