"""A private containerd (the Debian package) on temp paths, for compat tests and benchmarks.

`PrivateContainerd` runs it on private dirs with our shim in its PATH (runtime
`io.containerd.dockyard.v2`) and one namespace of its own; `private_containerd()` adds busybox
and removes every task at the end; `containerd()` yields just its socket. Either way nothing is
left behind: its shims are killed by PID (and checked gone), mounts undone, the namespace's
cgroups and the temp dir removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from tests.conformance.mounts import mounts_under
from tests.ctr import ctr, ok
from tests.daemon import REPO, alive, processes_in, processes_mentioning
from tests.images import busybox_oci_archive
from tests.waiting import wait_until

CONTAINERD_CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
# containerd's /opt plugin would make /opt/containerd on the host: keep it in the private dir too
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""
SHIM_BINARY = "containerd-shim-dockyard-v2"
TASK_DIR = "io.containerd.runtime.v2.task"  # containerd's runtime v2 state dir, under its state
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _program(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return os.fsdecode(args[0] if isinstance(args, (list, tuple)) else args)  # type: ignore[arg-type]


def wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Wait until `proc` answers `ctr version` on the socket `path` (a socket file exists before
    its server accepts calls); RuntimeError with its log if it exits first."""

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{_program(proc)} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        return path.exists() and ctr(str(path), "version", timeout=10).returncode == 0

    try:
        wait_until(answers, timeout, what=f"{_program(proc)} to answer on {path}", interval=0.05)
    except AssertionError as exc:
        raise RuntimeError(f"{exc}:\n{log.read_text(errors='replace')}") from None


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after 30 s, to the one process we started; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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
        return str(self.base / "containerd.sock")  # as CONTAINERD_CONFIG says

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
        (self.base / "config.toml").write_text(CONTAINERD_CONFIG.format(base=self.base))
        env = {**os.environ, "PATH": f"{shim_scripts_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "PYTHONPATH": str(REPO)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([binary, "--config", str(self.base / "config.toml")], stdout=log,
                                         stderr=log, env=env, start_new_session=True)
        wait_socket(Path(self.address), self.proc, self.log_path)

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
            f.write(busybox_oci_archive())
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
        for pid in processes_mentioning(self.address):
            with contextlib.suppress(OSError):
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

    def remove(self) -> None:
        """Stop containerd and remove all it and its shims made; AssertionError if a shim
        outlived containerd's stop (a shim exits once its tasks are deleted)."""
        self.shims |= processes_mentioning(self.address) | processes_in(self.task_root)
        self.stop()
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not any(alive(p) for p in self.shims), 10, what="the shims to exit")
        outlived = [p for p in self.shims if alive(p)]
        for pid in self.shims | processes_mentioning(str(self.base)) | processes_in(self.task_root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for target in reversed(mounts_under(str(self.base))):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        # the namespace level of the cgroups (runc: /<ns>, ours: /dockyard/<ns>): only ours, by name
        for d in [*CGROUP_ROOT.glob(f"*/{self.namespace}"), *CGROUP_ROOT.glob(f"*/dockyard/{self.namespace}")]:
            with contextlib.suppress(OSError):
                d.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
        assert not outlived, f"shims outlived their tasks: {outlived}"


@contextlib.contextmanager
def running_containerd() -> Iterator[PrivateContainerd]:
    """A started PrivateContainerd, removed (and checked) at the end."""
    c = PrivateContainerd(Path(tempfile.mkdtemp(prefix="ctrd-")))
    try:
        c.start()
        yield c
    finally:
        c.remove()


@contextlib.contextmanager
def private_containerd() -> Iterator[PrivateContainerd]:
    """A running private containerd with busybox imported in its namespace; every task and
    container of that namespace is deleted at the end, then everything else removed."""
    with running_containerd() as c:
        c.import_busybox()
        yield c
        c.remove_everything()


@contextlib.contextmanager
def containerd() -> Iterator[str]:
    """A private containerd; yields its socket path."""
    with running_containerd() as c:
        yield c.address
