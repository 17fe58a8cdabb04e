"""The warm `dock` (dock/launch.py, dock/warm.py): a command run in a child of the dock zygote must
be the command a cold `dock` runs: the same output, exit status, stdin, working directory,
environment, terminal and signals; the zygote refuses what it cannot be, survives hostile peers,
and goes away with its daemon.

A real daemon, our shim, busybox containers. DOCK_WARM=require makes a command fail rather than run
cold (and waits for a zygote to start), DOCK_WARM=0 runs it cold."""

from __future__ import annotations

import array
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock import launch
from tests.daemon import REPO, DaemonProcess, alive
from tests.integration.test_attach import terminal
from tests.waiting import wait_until

IMAGE = "docker.io/library/busybox:latest"


def env_for(d: DaemonProcess, mode: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address, launch.SWITCH: mode, **extra}
    env.pop("DOCK_DEBUG", None)
    return env


def dock(d: DaemonProcess, mode: str, *args: str, input: bytes | None = None, cwd: Path = REPO,
         **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, input=input,
                          env=env_for(d, mode, **extra), cwd=cwd, timeout=90)


def spawn(d: DaemonProcess, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "dock.cli", *args], env=env_for(d, "require"), cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def zygotes_of(d: DaemonProcess) -> set[int]:
    """The dock zygotes serving this daemon's socket (their command line names its directory)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "dock-zygote" and \
                    str(d.state).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.add(int(entry))
        except OSError:
            continue
    return {pid for pid in found if alive(pid)}


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def new_child(zygote: int, known: set[int]) -> int:
    """The command the zygote forks next (not one before it, which may not be reaped yet)."""
    found: list[int] = []

    def forked() -> bool:
        found[:] = [c for c in children(zygote) if c not in known and alive(c)]
        return bool(found)
    wait_until(forked, timeout=30, what="the zygote forked the command")
    known.add(found[0])
    return found[0]


@pytest.fixture
def zygote(d: DaemonProcess) -> Iterator[int]:
    """The daemon's zygote, started (and waited for) by a first warm command."""
    res = dock(d, "require", "version")
    assert res.returncode == 0, res.stderr.decode()
    wait_until(lambda: len(zygotes_of(d)) == 1, timeout=30, what="one zygote")  # a retired one may still be leaving
    (pid,) = zygotes_of(d)
    yield pid


@pytest.mark.parametrize("args", [
    ("version",),
    ("ps", "-a"),
    ("images", "ls"),
    ("no-such-command",),
    ("run", "--rm", "--net", "none", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3"),
    ("run", "--rm", "--net", "none", "no.such/image:1", "true"),
    ("--format", "json", "ps", "-a"),
])
def test_warm_and_cold_say_the_same(d: DaemonProcess, zygote: int, args: tuple[str, ...]) -> None:
    cold = dock(d, "0", *args)
    warm = dock(d, "require", *args)
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert b"Traceback" not in warm.stderr


def test_the_child_has_the_launchers_stdin_directory_and_environment(d: DaemonProcess, zygote: int,
                                                                     tmp_path: Path) -> None:
    res = dock(d, "require", "run", "--rm", "--net", "none", "--env-file", "rel.env", IMAGE, "true", cwd=tmp_path)
    assert res.returncode == 1 and b"rel.env" in res.stderr, res.stderr  # no such file yet: checked first
    (tmp_path / "rel.env").write_text("FROM_FILE=from-file\n")
    res = dock(d, "require", "run", "--rm", "-i", "--net", "none", "--env-file", "rel.env", "-e", "PASSED", IMAGE,
               "sh", "-c", "cat; echo $FROM_FILE $PASSED", input=b"from stdin\n", cwd=tmp_path, PASSED="from-env")
    assert (res.returncode, res.stdout) == (0, b"from stdin\nfrom-file from-env\n"), res.stderr
    # another namespace, from the environment only
    other = dock(d, "require", "run", "--rm", "--net", "none", IMAGE, "true", DOCKYARD_NAMESPACE="warm-other")
    assert other.returncode == 1 and b"not found" in other.stderr, other.stderr


def test_a_terminal_with_resize_and_exit_status(d: DaemonProcess, zygote: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(launch.SWITCH, "require")
    with terminal(d, "run", "--rm", "-it", "--net", "none", IMAGE, "sh") as t:
        t.expect(rb"# ")
        t.resize(33, 91)  # SIGWINCH to the launcher, passed on to the child, which resizes the pty
        t.shows_size(33, 91)
        t.type(b"exit 5\r")
        assert t.wait() == 5


def test_signals_reach_the_command_and_a_killed_launcher_takes_it_along(d: DaemonProcess, zygote: int) -> None:
    known = set(children(zygote))
    # SIGINT: the command stops as a cold dock does on ^C (130)
    proc = spawn(d, "events")
    child = new_child(zygote, known)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130, proc.stderr.read() if proc.stderr else b""
    wait_until(lambda: not alive(child), timeout=30, what="the child ended")
    proc.communicate()
    # SIGTERM: the command dies of it, and so does the launcher
    proc = spawn(d, "events")
    new_child(zygote, known)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    proc.communicate()
    # SIGKILL cannot be passed on: the zygote sees the launcher gone and kills the command
    proc = spawn(d, "events")
    child = new_child(zygote, known)
    proc.kill()
    proc.communicate()
    wait_until(lambda: not alive(child), timeout=30, what="the orphaned command was killed")
    assert zygotes_of(d) == {zygote}


def _request(sock: socket.socket, payload: bytes, fds: list[int]) -> bytes:
    assert sock.recv(64) == launch.HELLO
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])
    return sock.recv(256)


def test_hostile_and_foreign_peers_are_refused_and_the_zygote_carries_on(d: DaemonProcess, zygote: int) -> None:
    path = launch.zygote_path(d.address)
    assert path is not None
    null = os.open(os.devnull, os.O_RDWR)
    try:
        cases = [(b"garbage", []), (b"garbage", [null] * 4), (launch.MAGIC + b"\0x", [null] * 4),
                 (launch.request(["version"]), [null] * 2), (launch.request(["version"]), [null] * 4)]
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        idle.connect(path)  # greeted, and then silent: must not hold the zygote up
        answers = []
        for payload, fds in cases:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.settimeout(30)
                s.connect(path)
                answers.append(_request(s, payload, fds))
    finally:
        os.close(null)
    assert answers == [b"cold a malformed request"] * 5, answers  # the last: its "cwd" is no directory
    # a launcher in another UTS namespace has another key; asked at our socket, the zygote refuses
    script = ("import socket, sys, os, array\n"
              "from dock import launch\n"
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.settimeout(30); s.connect(sys.argv[1])\n"
              "assert s.recv(64) == launch.HELLO\n"
              "cwd = os.open('.', os.O_PATH)\n"
              "s.sendmsg([launch.request(['version'])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, "
              "array.array('i', [0, 1, 2, cwd]))])\n"
              "sys.stderr.write(s.recv(256).decode())\n")
    res = subprocess.run(["unshare", "--uts", sys.executable, "-c", script, path], capture_output=True,
                         env=env_for(d, "0"), cwd=REPO, timeout=60)
    assert res.stderr.decode() == "cold another uts namespace", res.stderr
    idle.close()
    ok = dock(d, "require", "version")
    assert ok.returncode == 0, ok.stderr
    assert zygotes_of(d) == {zygote}


def test_changed_code_retires_the_zygote(d: DaemonProcess, zygote: int) -> None:
    source = Path(launch.__file__)
    before = source.stat()
    try:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        res = dock(d, "require", "version")
        assert res.returncode == 1 and b"code changed" in res.stderr, res.stderr
        wait_until(lambda: not alive(zygote), timeout=30, what="the old zygote left")
        res = dock(d, "require", "version")  # starts a new one, which loads the code as it is now
        assert res.returncode == 0, res.stderr
        assert zygotes_of(d) and zygote not in zygotes_of(d)
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert dock(d, "1", "version").returncode == 0  # retires that one too, and runs cold meanwhile


def test_the_zygote_leaves_with_its_daemons_socket(daemon: DaemonProcess) -> None:
    res = dock(daemon, "require", "version")
    assert res.returncode == 0, res.stderr
    (pid,) = zygotes_of(daemon)
    daemon.stop()
    Path(daemon.address).unlink(missing_ok=True)
    wait_until(lambda: not alive(pid), timeout=30, what="the zygote left with its daemon")


def test_the_installed_launcher_starts_without_site_and_runs_either_way(d: DaemonProcess, zygote: int,
                                                                         tmp_path: Path) -> None:
    """scripts/install's `dock`: `python3 -S`; `site` runs only for a cold command (grpc lives in
    site-packages)."""
    script = tmp_path / "dock"
    subprocess.run([sys.executable, str(REPO / "scripts" / "dock-launcher"), str(script)], check=True)
    assert script.read_text().startswith(f"#!{os.path.realpath(sys.executable)} -S\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds the code itself
    for mode in ("0", "require"):
        res = subprocess.run([str(script), "ps", "-a"], capture_output=True, timeout=90,
                             env={**env, "DOCKYARD_ADDRESS": d.address, launch.SWITCH: mode})
        assert res.returncode == 0 and res.stdout.startswith(b"CONTAINER ID"), (mode, res.stderr)


def test_a_second_cold_command_starts_the_zygote_and_the_next_runs_warm(daemon: DaemonProcess) -> None:
    assert dock(daemon, "1", "version").returncode == 0
    assert not zygotes_of(daemon)  # one command is not worth a warm process
    assert dock(daemon, "1", "version").returncode == 0  # the second starts one in the background
    wait_until(lambda: zygotes_of(daemon), timeout=30, what="a zygote")
    (zygote,) = zygotes_of(daemon)
    path = launch.zygote_path(daemon.address)
    assert path is not None
    # it listens once it has preloaded
    wait_until(lambda: os.path.exists(path), timeout=30, what="the zygote listening")
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "events"], env=env_for(daemon, "1"), cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        new_child(zygote, set())  # the command runs in a child of the zygote
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        proc.communicate()
