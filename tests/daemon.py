"""A real dockyardd in private temp dirs, for integration and compat tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dock.client import Client

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DaemonProcess:
    base: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def address(self) -> str:
        return str(self.state / "dockyard.sock")

    def client(self, namespace: str = "default") -> Client:
        return Client(self.address, namespace)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def dockyardd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", *args]


def start_daemon(base: Path | None = None, extra: list[str] | None = None,
                 wait: bool = True) -> DaemonProcess:
    """Start dockyardd on private dirs (short paths: unix socket paths max out at 107 bytes)."""
    base = base or Path(tempfile.mkdtemp(prefix="dy-"))
    log_path = base / "dockyardd.log"
    args = ["--root", str(base / "root"), "--state", str(base / "state"), "--log-level", "debug",
            *(extra or [])]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(dockyardd_command(*args), stdout=log, stderr=log, env=env, cwd=REPO,
                                start_new_session=True)
    d = DaemonProcess(base, proc, log_path)
    if wait:
        wait_ready(d)
    return d


def wait_ready(d: DaemonProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"dockyardd exited with {d.proc.returncode}:\n{d.log()}")
        if os.path.exists(d.address) and "serving on" in d.log():
            return
        time.sleep(0.05)
    d.stop(signal.SIGKILL)
    raise RuntimeError(f"dockyardd did not become ready in {timeout}s:\n{d.log()}")


def remove_base(d: DaemonProcess) -> None:
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)
