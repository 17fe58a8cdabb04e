"""The real `ctr` client, one way to call it: for compat and integration tests, and the private containerd."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.daemon import DaemonProcess

CTR = shutil.which("ctr")


def ctr(d: DaemonProcess | str, *args: str, namespace: str = "default", timeout: float = 60,
        input: str | bytes | None = None, binary: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run the real `ctr` against a daemon (or a socket path); output is text unless `binary`."""
    if CTR is None:  # without it these tests cannot mean anything: fail, never skip
        pytest.fail("ctr is not installed: run scripts/install (Debian package containerd)", pytrace=False)
    address = d if isinstance(d, str) else d.address
    return subprocess.run([CTR, "--address", address, "--namespace", namespace, *args],
                          capture_output=True, text=not binary, timeout=timeout, input=input)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    """The output of a command (ctr, dock) that must succeed."""
    assert res.returncode == 0, f"{res.args}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout
