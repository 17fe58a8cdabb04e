"""Shared fixtures: a real dockyardd per test, its log printed when the test fails."""

from __future__ import annotations

import os

# Before grpc is imported: tests fork container processes in-process, and grpc's fork
# handlers would print into their output (and have nothing to do for a fork+exec).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import signal

# Started from a background job (`cmd &` in a script), the run inherits SIGINT ignored, and so
# would every client a test starts and means to stop with Ctrl-C's signal: give it back its default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dock.client import Client
from tests.daemon import DaemonProcess, remove_base, remove_empty_cgroups, start_daemon


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# The shims' host-wide dir for sockets whose bundle path is too long (shimlaunch.FALLBACK_DIR):
# the tests with long paths make it; a run that found none leaves none.
_SHIM_FALLBACK = Path("/run/dockyard-shim")
_FALLBACK_FOUND = _SHIM_FALLBACK.exists()


MAX_ID_PART = 60  # characters of a parameter in a test's id


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """A long str or bytes parameter named by its length and a hash. pytest puts the test's id in
    every child's environment (PYTEST_CURRENT_TEST): a 500 KB blob in it made each subprocess,
    the session fixture's `ip` first, fail with E2BIG ("Argument list too long")."""
    if isinstance(val, str | bytes) and len(val) > MAX_ID_PART:
        raw = val.encode("utf-8", "surrogateescape") if isinstance(val, str) else val
        return f"{argname}-{len(val)}-{hashlib.sha256(raw).hexdigest()[:8]}"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no empty cgroup of ours behind (the daemon keeps its parent while it runs), nor an
    empty shim socket dir this run made.

    Not while another test run is going on this host (or with DOCKYARD_TEST_SHARED_HOST=1): it
    may have just made a cgroup it has not filled yet, and the last run to finish cleans up."""
    if os.environ.get("DOCKYARD_TEST_SHARED_HOST") != "1" and not _other_test_runs():
        remove_empty_cgroups()
        if not _FALLBACK_FOUND:
            with contextlib.suppress(OSError):  # not empty: a shim of something else listens there
                _SHIM_FALLBACK.rmdir()


def _other_test_runs() -> bool:
    """Whether a pytest process other than this one (and its workers) runs on the host."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != me and any(arg.endswith(b"pytest") or b"pytest/" in arg or arg == b"pytest" for arg in argv[:3]):
            return True
    return False


def _host_network() -> tuple[list[str], list[str]]:
    """The host's links and firewall rules (no counters), to compare before and after."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line)
    saved = "" if shutil.which("iptables-save") is None else \
        subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    # chains by name only: their packet counters move on their own
    rules = [line.split()[0] if line.startswith(":") else line
             for line in saved.splitlines() if line and not line.startswith("#")]
    return names, sorted(rules)


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched() -> Iterator[None]:
    """No test may leave (or make) links or firewall rules in the host's own network namespace:
    networking tests run their daemon in a namespace they make, and other test daemons have no
    default network (tests/daemon.py)."""
    before = _host_network()
    yield
    after = _host_network()
    assert after == before, (
        "the host's network changed during the tests: "
        f"links +{sorted(set(after[0]) - set(before[0]))} -{sorted(set(before[0]) - set(after[0]))}, "
        f"rules +{sorted(set(after[1]) - set(before[1]))[:10]} -{sorted(set(before[1]) - set(after[1]))[:10]}")


@pytest.fixture
def daemon(request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    d = start_daemon()
    try:
        yield d
    finally:
        code = d.stop()
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                     for w in ("setup", "call"))
        if failed:
            print(f"\n----- dockyardd log ({d.log_path}) -----\n{d.log()}")
        remove_base(d)
        assert code == 0, f"dockyardd exited with {code} on SIGTERM"


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    async with daemon.client() as c:
        yield c
