"""Fixtures the integration modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.runtimes import daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import DaemonProcess


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """The module's dockyardd (our shim, `--default-network none`: tests/daemon.py) with busybox
    imported into the default namespace. A module that needs another daemon defines its own."""
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d
        remove_everything(d)


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    """The module's daemon, emptied of containers, tasks and snapshots after the test."""
    yield daemon
    remove_everything(daemon)
