"""Start dockyardd and containerd side by side on private paths, for benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.containerd import containerd, stop, wait_socket

__all__ = ["containerd", "dockyardd"]

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def dockyardd(config: str = "") -> Iterator[str]:
    """A private dockyardd from this checkout; yields its socket path. It has no default network
    (`--default-network none`): it runs on the host's network namespace, and `ctr run`, its peer,
    attaches none either; bench/net.py measures networking in a namespace of its own.
    `config`: the text of a config file for it."""
    base = Path(tempfile.mkdtemp(prefix="dyb-"))
    log = base / "dockyardd.log"
    (base / "config.toml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "--root", str(base / "root"), "--state", str(base / "state"),
             "--log-level", "warning", "--default-network", "none", "--config", str(base / "config.toml")],
            stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        wait_socket(base / "state" / "dockyard.sock", proc, log)
        yield str(base / "state" / "dockyard.sock")
    finally:
        stop(proc)
        shutil.rmtree(base, ignore_errors=True)
