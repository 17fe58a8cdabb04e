"""Attach (issue 15): `dock attach`, `dock run -it`, `dock start -ai` through the daemon's Attach RPC.

A real daemon, our shim, busybox containers. The terminal cases drive `dock` through a real pty
(the test holds the master; `dock` runs in its own session with the slave as its controlling
terminal, so a window-size change on the master sends it SIGWINCH as a terminal emulator would).
Typed commands compute what they print (`echo $((6*7))x` shows 42x), so the terminal's echo of
the typed line never passes for the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, uid
from tests.daemon import REPO, DaemonProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CTRL_P, CTRL_Q = b"\x10", b"\x11"
# Run by a new session's leader: opening the slave by name makes it the controlling terminal.
LAUNCH = ("import os, sys\n"
          "fd = os.open(sys.argv[1], os.O_RDWR)\n"
          "for n in (0, 1, 2): os.dup2(fd, n)\n"
          "os.close(fd)\n"
          "os.execv(sys.executable, [sys.executable, '-m', 'dock.cli', *sys.argv[2:]])\n")


def env_for(d: DaemonProcess) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}


def dock(d: DaemonProcess, *args: str, input: bytes | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env_for(d),
                          timeout=timeout, cwd=REPO, input=input)


def ok(d: DaemonProcess, *args: str) -> bytes:
    res = dock(d, *args)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


def running(d: DaemonProcess, cid: str) -> bool:
    rows = [r.split() for r in ctr(d, "tasks", "ls").stdout.splitlines()[1:]]
    return any(r[0] == cid and r[2] == "RUNNING" for r in rows)


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


class Terminal:
    """`dock ARGS` on a real pty of `rows` x `cols`; what it shows accumulates in `seen`."""

    def __init__(self, d: DaemonProcess, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, fd=slave)
        name = os.ttyname(slave)
        os.close(slave)
        # Non-blocking: `dock` making the terminal raw (TCSAFLUSH) may discard output between our
        # select and read, and a blocking read would then wait for ever.
        os.set_blocking(self.master, False)
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, name, *args], env=env_for(d), cwd=REPO,
                                     start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.seen = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self.master], [], 5)
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                continue

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:  # flushed away meanwhile: nothing to read after all
            return True
        except OSError:  # EIO: every slave fd is closed (dock exited)
            return False
        self.seen += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float = 30) -> re.Match[bytes]:
        """Until `pattern` shows (after what earlier expects consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.seen)
            if m is not None:
                self.seen = self.seen[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None):
                raise AssertionError(f"{pattern!r} never showed; the terminal has {self.seen[-500:]!r}")

    def shows_size(self, rows: int, cols: int, timeout: float = 30) -> None:
        """`stty size` typed until the shell reports `rows cols`: a size travels through dock and
        the shim (ResizePty) while what is typed goes its own way, so one try may come first."""
        deadline = time.monotonic() + timeout
        while True:
            self.type(b"stty size\r")
            got = self.expect(rb"\n(\d+) (\d+)\r", timeout=max(deadline - time.monotonic(), 0.1))
            if (int(got[1]), int(got[2])) == (rows, cols):
                return
            assert time.monotonic() < deadline, f"the shell's size stayed {got[0]!r}, not {rows} {cols}"

    def wait(self, timeout: float = 30) -> int:
        """dock's exit status (the terminal drained meanwhile, so it never blocks on output)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"dock did not exit; the terminal has {self.seen[-500:]!r}"
            self._read(0.1)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@contextlib.contextmanager
def terminal(d: DaemonProcess, *args: str, rows: int = 24, cols: int = 80) -> Iterator[Terminal]:
    t = Terminal(d, *args, rows=rows, cols=cols)
    try:
        yield t
    finally:
        t.close()


def attached_shell(t: Terminal, command: bytes = b"echo $((6*7))x", answer: bytes = rb"42x", tries: int = 15) -> None:
    """Until the shell answers through the attach: the attach is up (output only shows from then).
    Asked again while there is no answer: `dock` makes the terminal raw with TCSAFLUSH (as any
    terminal program), which drops keys typed before it was attached."""
    for _ in range(tries - 1):
        t.type(command + b"\r")
        with contextlib.suppress(AssertionError):
            t.expect(answer, timeout=2)
            return
    t.type(command + b"\r")
    t.expect(answer)


def test_attach_to_a_detached_tty_type_resize_detach_and_reattach(d: DaemonProcess) -> None:
    cid = uid("tty")
    ok(d, "run", "-d", "-it", "--net", "none", "--name", cid, IMAGE, "sh")
    with terminal(d, "attach", cid, rows=24, cols=80) as t:
        attached_shell(t)
        t.shows_size(24, 80)
        t.resize(40, 100)  # SIGWINCH to dock, which resizes the container's pty
        t.shows_size(40, 100)
        t.type(CTRL_P + CTRL_Q)
        assert t.wait() == 0
    assert running(d, cid), "the container must run on after a detach"
    with terminal(d, "attach", cid) as t:
        attached_shell(t, b"echo $((7*8))y", rb"56y")
        t.type(b"exit 3\r")
        assert t.wait() == 3  # the container's exit status
    wait_until(lambda: not running(d, cid), what="the container to stop")


def test_two_clients_attached_at_once_see_the_same_output(d: DaemonProcess) -> None:
    cid = uid("two")
    ok(d, "run", "-d", "-it", "--net", "none", "--name", cid, IMAGE, "sh")
    with terminal(d, "attach", cid) as a, terminal(d, "attach", cid) as b:
        attached_shell(a)
        attached_shell(b, b"echo $((11*11))w", rb"121w")  # b is attached once its own input is answered
        a.expect(rb"121w")
        a.type(b"echo $((3*4))z\r")
        a.expect(rb"12z")
        b.expect(rb"12z")
        b.type(CTRL_P + CTRL_Q)
        assert b.wait() == 0
        a.type(b"echo $((9*9))v\r")  # the other client stays attached
        a.expect(rb"81v")
        a.type(b"exit 0\r")
        assert a.wait() == 0


def test_custom_detach_keys(d: DaemonProcess) -> None:
    cid = uid("keys")
    ok(d, "run", "-d", "-it", "--net", "none", "--name", cid, IMAGE, "sh")
    with terminal(d, "attach", "--detach-keys", "ctrl-a,x", cid) as t:
        attached_shell(t)
        t.type(b"echo a" + CTRL_P + CTRL_Q + b"$((2*5))u\r")  # ctrl-p ctrl-q is plain input now
        t.expect(rb"10u")
        assert t.proc.poll() is None
        t.type(b"\x01x")
        assert t.wait() == 0
    assert running(d, cid)


def test_bad_detach_keys_are_refused_before_anything_runs(d: DaemonProcess) -> None:
    cid = uid("badkeys")
    res = dock(d, "run", "-it", "--detach-keys", "ctrl-pp", "--net", "none", "--name", cid, IMAGE, "sh")
    assert res.returncode != 0
    assert b"invalid detach keys" in res.stderr and b"Traceback" not in res.stderr
    assert cid not in ctr(d, "containers", "ls", "-q").stdout


def test_run_it_detaches_and_start_ai_comes_back(d: DaemonProcess) -> None:
    cid = uid("runit")
    with terminal(d, "run", "-it", "--net", "none", "--name", cid, IMAGE, "sh") as t:
        attached_shell(t)
        t.type(CTRL_P + CTRL_Q)
        assert t.wait() == 0
    assert running(d, cid)
    with terminal(d, "attach", cid) as t:
        attached_shell(t, b"echo $((5*5))q", rb"25q")
        t.type(b"exit 4\r")
        assert t.wait() == 4
    wait_until(lambda: not running(d, cid), what="the container to stop")
    with terminal(d, "start", "-ai", cid) as t:  # a new task of the same container, attached
        attached_shell(t)
        t.type(b"exit 6\r")
        assert t.wait() == 6


def test_run_i_pipes_stdin_and_keeps_streams_apart(d: DaemonProcess) -> None:
    script = "while read l; do echo out:$l; echo err:$l >&2; done; exit 5"
    res = dock(d, "run", "-i", "--net", "none", "--name", uid("pipe"), IMAGE, "sh", "-c", script,
               input=b"a\nb\n")
    assert (res.returncode, res.stdout, res.stderr) == (5, b"out:a\nout:b\n", b"err:a\nerr:b\n")


def test_attach_without_a_tty_keeps_stdout_and_stderr_apart(d: DaemonProcess) -> None:
    cid = uid("streams")
    script = "while read l; do [ $l = quit ] && exit 4; echo out:$l; echo err:$l >&2; done"
    ok(d, "run", "-d", "-i", "--net", "none", "--name", cid, IMAGE, "sh", "-c", script)
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "attach", cid], env=env_for(d), cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        # Input sent before the attach is up is taken too (the daemon buffers the call), so
        # every line shows; each is answered in order.
        proc.stdin.write(b"one\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"out:one\n"
        assert proc.stderr.readline() == b"err:one\n"
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 4
        assert proc.stdout.read() == b""
    finally:
        reap(proc)


def test_attach_to_a_container_without_open_stdin_gets_output_only(d: DaemonProcess) -> None:
    cid = uid("noin")
    # No -i: its stdin is /dev/null, so `read` ends at once; what we send must never arrive.
    script = "while :; do if read l; then echo got:$l; fi; echo tick; sleep 0.1; done"
    ok(d, "run", "-d", "--net", "none", "--name", cid, IMAGE, "sh", "-c", script)
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "attach", "--sig-proxy=false", cid],
                            env=env_for(d), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == b"tick\n"
        proc.stdin.write(b"hello\n")
        proc.stdin.close()
        for _ in range(5):
            assert proc.stdout.readline() == b"tick\n"
        ok(d, "kill", cid)
        assert proc.wait(timeout=30) == 137  # the container's SIGKILL status
        assert b"got:" not in proc.stdout.read()
    finally:
        reap(proc)


def test_attach_to_a_stopped_or_unknown_container_says_so(d: DaemonProcess) -> None:
    cid = uid("stopped")
    ok(d, "run", "--net", "none", "--name", cid, IMAGE, "true")
    res = dock(d, "attach", cid)
    assert res.returncode == 1
    assert b"is not running" in res.stderr and b"Traceback" not in res.stderr, res.stderr
    res = dock(d, "attach", "no-such-container")
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert b"no-such-container" in res.stderr


def test_a_container_made_by_ctr_keeps_its_fifo_stdio_and_is_not_attachable(d: DaemonProcess) -> None:
    cid = uid("ctr")
    res = ctr(d, "run", "-d", IMAGE, cid, "sleep", "60")
    assert res.returncode == 0, res.stderr
    res = dock(d, "attach", cid)
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    assert b"cannot attach" in res.stderr, res.stderr
    ctr(d, "tasks", "kill", "-s", "SIGKILL", cid)
    wait_until(lambda: not running(d, cid), what="the ctr task to stop")
