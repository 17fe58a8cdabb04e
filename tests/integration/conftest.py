"""Fixtures the integration modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.runtimes import daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import DaemonProcess


@pytest.fixture(scope="module")
def busybox_daemon() -> Iterator[DaemonProcess]:
    """The module's dockyardd (our shim, `--default-network none`: tests/daemon.py) with busybox
    imported into the default namespace. (tests/conftest.py's `daemon` is a bare one per test.)"""
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d
        remove_everything(d)


@pytest.fixture
def d(busybox_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    """The module's busybox daemon, emptied of containers, tasks and snapshots after the test."""
    yield busybox_daemon
    remove_everything(busybox_daemon)
