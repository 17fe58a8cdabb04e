"""What the compat tests share: the real `ctr`, one way to call it, and the checks that skip them."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

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
    """The output of a ctr call that must succeed."""
    assert res.returncode == 0, res.stderr
    return res.stdout


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Compat tests marked `root` run containers or mount: without root they are skipped."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here) and item.get_closest_marker("root") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))
