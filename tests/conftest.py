"""Shared fixtures: a real dockyardd per test, its log printed when the test fails."""

from __future__ import annotations

import os

# Before grpc is imported: tests fork container processes in-process, and grpc's fork
# handlers would print into their output (and have nothing to do for a fork+exec).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from dock.client import Client
from tests.daemon import DaemonProcess, remove_base, remove_empty_cgroups, start_daemon


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no empty cgroup of ours behind (the daemon keeps its parent while it runs)."""
    remove_empty_cgroups()


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
