"""Helpers for compat tests that run containers: shims to run them with, an imported image."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ctr import ctr
from tests.daemon import DaemonProcess, remove_base, start_daemon
from tests.images import busybox_oci_archive

IMAGE = "docker.io/library/busybox:latest"
GO_SHIM = "/usr/bin/containerd-shim-runc-v2"
# "dockyard": our own shim (the default); "runc-go": containerd's shim, the reference.
RUNTIMES = ["dockyard", "runc-go"]


def uid(name: str) -> str:
    """A container id unique on this machine: the Go shim keeps its runc state host-wide
    (/run/containerd/runc/<namespace>), whichever daemon started it."""
    return f"{name}-{secrets.token_hex(3)}"


@contextmanager
def daemon_with_runtime(runtime: str) -> Iterator[DaemonProcess]:
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    extra: list[str] = []
    if runtime == "runc-go":
        cfg = base / "config.toml"
        cfg.write_text(f'[runtimes]\n"io.containerd.runc.v2" = "{GO_SHIM}"\n')
        extra = ["--config", str(cfg)]
    d = start_daemon(base=base, extra=extra)
    try:
        yield d
    finally:
        remove_base(d)


@contextmanager
def busybox_daemon() -> Iterator[DaemonProcess]:
    """A daemon of our own runtime with the busybox image; every task and container of the default
    namespace removed after."""
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d
        remove_everything(d)


def import_busybox(d: DaemonProcess, namespace: str = "default") -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(busybox_oci_archive(IMAGE))
        f.flush()
        res = ctr(d, "images", "import", f.name, namespace=namespace)
        assert res.returncode == 0, res.stderr


def remove_everything(d: DaemonProcess, namespace: str = "default") -> None:
    """Kill and delete every task, then remove containers: what a test leaves must go."""
    for line in ctr(d, "tasks", "ls", "-q", namespace=namespace).stdout.split():
        ctr(d, "tasks", "kill", "-s", "SIGKILL", line, namespace=namespace)
    for line in ctr(d, "tasks", "ls", "-q", namespace=namespace).stdout.split():
        for _ in range(50):
            if ctr(d, "tasks", "rm", line, namespace=namespace).returncode == 0:
                break
            subprocess.run(["sleep", "0.1"])
    for cid in ctr(d, "containers", "ls", "-q", namespace=namespace).stdout.split():
        ctr(d, "containers", "rm", cid, namespace=namespace)


def shim_available(runtime: str) -> bool:
    return runtime != "runc-go" or shutil.which("containerd-shim-runc-v2") is not None
