"""A stock containerd runs Dockyard's shim: runtime `io.containerd.dockyard.v2`, no wrapper.

containerd finds `containerd-shim-dockyard-v2` (the console script `pip install -e .` installs)
in its PATH and drives it through the runtime v2 contract. Every test runs the same ctr session
twice on one private containerd: with our shim and with containerd's own runc shim (the
reference), and the observable results must agree: exit codes, output, task states, events, a
containerd restart that reattaches to the running shims.

Nothing is left behind: the test's containerd, its shims, containers, zygote, mounts and the
namespace's cgroups are gone afterwards (checked by PID and path).

`PrivateContainerd` / `private_containerd()` (over tests/containerd.py's config, with our shim in
containerd's PATH, restarts, and a cleanup that checks) serve test_ctr_task_update.py too.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from tests.compat.conftest import ctr, ok
from tests.containerd import CONTAINERD_CONFIG, stop
from tests.daemon import REPO, processes_in
from tests.images import busybox_oci_archive
from tests.waiting import wait_until

pytestmark = [pytest.mark.compat, pytest.mark.root]

IMAGE = "docker.io/library/busybox:latest"
OURS = "io.containerd.dockyard.v2"
RUNC = "io.containerd.runc.v2"
SHIM_BINARY = "containerd-shim-dockyard-v2"
TASK_DIR = "io.containerd.runtime.v2.task"  # containerd's runtime v2 state dir, under its state
CGROUP_ROOT = Path("/sys/fs/cgroup")

# containerd's /opt plugin would make /opt/containerd on the host: keep it in the test's dir too
OPT_PLUGIN = """[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


# ----- a private containerd ------------------------------------------------------------------------


def shim_scripts_dir() -> str:
    """Where `pip install -e .` put the console scripts of this interpreter (containerd-shim-dockyard-v2)."""
    scripts = sysconfig.get_path("scripts")
    if not os.access(os.path.join(scripts, SHIM_BINARY), os.X_OK):
        pytest.fail(f"{SHIM_BINARY} is not installed in {scripts}: run scripts/install (pip install -e .)",
                    pytrace=False)
    return scripts


@dataclass
class PrivateContainerd:
    """Debian's containerd on private dirs, with our shim in its PATH; one namespace of its own."""

    base: Path
    namespace: str = field(default_factory=lambda: f"dyc-{secrets.token_hex(3)}")
    proc: subprocess.Popen[bytes] | None = None
    shims: set[int] = field(default_factory=set)  # every shim PID seen, checked gone at the end

    @property
    def address(self) -> str:
        return str(self.base / "containerd.sock")  # as tests.containerd's config says

    @property
    def task_root(self) -> Path:
        """containerd's runtime v2 state dir: bundles are <task_root>/<namespace>/<id>."""
        return self.base / "state" / TASK_DIR

    @property
    def log_path(self) -> Path:
        return self.base / "containerd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        binary = shutil.which("containerd")
        if binary is None:
            pytest.fail("containerd is not installed: run scripts/install (Debian package containerd)", pytrace=False)
        (self.base / "config.toml").write_text((CONTAINERD_CONFIG + OPT_PLUGIN).format(base=self.base))
        env = {**os.environ, "PATH": f"{shim_scripts_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "--config", str(self.base / "config.toml")], stdout=log,
                                         stderr=log, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while ctr(self.address, "version", namespace=self.namespace, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"containerd did not come up:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if sig == signal.SIGKILL:
            self.proc.kill()
            self.proc.wait()
        stop(self.proc)

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return ctr(self.address, *args, namespace=self.namespace, timeout=timeout)

    def import_busybox(self) -> None:
        with tempfile.NamedTemporaryFile(suffix=".tar", dir=self.base) as f:
            f.write(busybox_oci_archive(IMAGE))
            f.flush()
            ok(self.ctr("images", "import", f.name))

    def bundle(self, cid: str) -> Path:
        return self.task_root / self.namespace / cid

    def shim_pid(self, cid: str) -> int:
        """The PID of the shim serving `cid` (ours writes it to the bundle; runc's is found by -id)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.bundle(cid) / "shim.pid").read_text())
            self.shims.add(pid)
            return pid
        for pid in _pids_whose_cmdline_has(self.address):
            if cid.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                self.shims.add(pid)
                return pid
        raise AssertionError(f"no shim found for {cid}")

    def removed(self, cid: str) -> bool:
        return self.ctr("tasks", "rm", cid).returncode == 0

    def remove_everything(self) -> None:
        """Kill and delete every task of the namespace, then its containers."""
        for cid in self.ctr("tasks", "ls", "-q").stdout.split():
            self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", cid)
        for cid in self.ctr("tasks", "ls", "-q").stdout.split():
            with contextlib.suppress(AssertionError):  # what is left is reaped by PID at the end
                wait_until(partial(self.removed, cid), 10, what=f"task {cid} to be deleted")
        for cid in self.ctr("containers", "ls", "-q").stdout.split():
            self.ctr("containers", "rm", cid)


def _pids_whose_cmdline_has(text: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
    return found


def zygotes_of(c: PrivateContainerd) -> set[int]:
    """Our zygotes serving this containerd: their command line names their socket in its state."""
    found = set()
    for pid in _pids_whose_cmdline_has(str(c.task_root)):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dockyard-zygote":
                found.add(pid)
    return found


def alive(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def cgroup_file(pid: int, controller: str, name: str) -> Path:
    """A file of the v1 `controller` cgroup the process is in, wherever its runtime put it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return CGROUP_ROOT / controllers / path.lstrip("/") / name
    raise AssertionError(f"process {pid} is in no {controller} cgroup")


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(f"{path}/")]


@contextlib.contextmanager
def private_containerd() -> Iterator[PrivateContainerd]:
    """A running private containerd with busybox imported in its namespace; everything it and its
    shims made is removed (and checked gone) at the end."""
    c = PrivateContainerd(Path(tempfile.mkdtemp(prefix="ctrd-")))
    try:
        c.start()
        c.import_busybox()
        yield c
        c.remove_everything()
    finally:
        c.shims |= _pids_whose_cmdline_has(c.address) | processes_in(c.task_root)
        c.stop()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not any(alive(p) for p in c.shims), 10, what="the shims to exit")
        outlived = [p for p in c.shims if alive(p)]
        for pid in c.shims | _pids_whose_cmdline_has(str(c.base)) | processes_in(c.task_root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for target in reversed(mounts_under(c.base)):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        # the namespace level of the cgroups (runc: /<ns>, ours: /dockyard/<ns>): only ours, by name
        for d in [*CGROUP_ROOT.glob(f"*/{c.namespace}"), *CGROUP_ROOT.glob(f"*/dockyard/{c.namespace}")]:
            with contextlib.suppress(OSError):
                d.rmdir()
        shutil.rmtree(c.base, ignore_errors=True)
        assert not outlived, f"shims outlived their tasks: {outlived}"


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
        deadline = time.monotonic() + 20
        for n in range(10_000):
            ok(self.c.ctr("namespaces", "label", self.c.namespace, f"probe={n}"))
            with contextlib.suppress(queue.Empty):
                while True:
                    if "/namespaces/update" in self.lines.get(timeout=0.2):
                        return
            assert time.monotonic() < deadline, "ctr events never saw an event"

    def topics(self, cid: str, until: str, timeout: float = 20) -> list[str]:
        """The /tasks/ topics of `cid`, in order, up to and including `until`."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while until not in out:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            self.seen.append(line)
            fields = line.split()
            if len(fields) > 5 and fields[5].startswith("/tasks/") and cid in line:
                out.append(fields[5])
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


def uid(name: str) -> str:
    """Unique on the host: runc's shim keeps its runc state in a host-wide /run/containerd/runc."""
    return f"{name}-{secrets.token_hex(3)}"


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
