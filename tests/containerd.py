"""A private containerd (the Debian package) on temp paths, for compat tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
"""


def _program(proc: subprocess.Popen[bytes]) -> str:
    args = proc.args
    return os.fsdecode(args[0] if isinstance(args, (list, tuple)) else args)  # type: ignore[arg-type]


def wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Wait until `proc` has created the socket `path`; RuntimeError with its log if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{_program(proc)} exited early:\n{log.read_text()}")
        if path.exists():
            time.sleep(0.2)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{_program(proc)} did not create {path}:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s, to the one process we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def containerd() -> Iterator[str]:
    """A private containerd (Debian package); yields its socket path."""
    binary = shutil.which("containerd")
    if binary is None:
        raise RuntimeError("containerd is not installed (apt-get install containerd)")
    base = Path(tempfile.mkdtemp(prefix="ctrd-"))
    (base / "config.toml").write_text(CONTAINERD_CONFIG.format(base=base))
    log = base / "containerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "--config", str(base / "config.toml")], stdout=out, stderr=out,
                                start_new_session=True)
    try:
        wait_socket(base / "containerd.sock", proc, log)
        yield str(base / "containerd.sock")
    finally:
        stop(proc)
        subprocess.run(["umount", "-R", str(base / "state")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
