"""The real `ctr` client, one way to call it: for compat and integration tests, and the private containerd."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable
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


def exec_output(run: Callable[..., subprocess.CompletedProcess[str]], cid: str, *argv: str,
                attempts: int = 4) -> subprocess.CompletedProcess[str]:
    """`ctr tasks exec` of a command that prints something and changes nothing, through `run`
    (a `ctr` bound to a daemon). ctr 1.6 deletes the exec before it has drained the output
    (containerd/containerd#13931, fixed in later ctr), so under load it may print nothing for a
    command that printed: an empty, successful result is run again, with a new exec id."""
    res = run("tasks", "exec", "--exec-id", f"x{secrets.token_hex(4)}", cid, *argv)
    for _ in range(attempts - 1):
        if res.returncode != 0 or res.stdout:
            break
        res = run("tasks", "exec", "--exec-id", f"x{secrets.token_hex(4)}", cid, *argv)
    return res
