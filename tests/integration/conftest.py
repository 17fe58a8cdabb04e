"""Fixtures the integration modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI


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


@pytest.fixture
def dock_cli(busybox_daemon: DaemonProcess, tmp_path: Path) -> Iterator[DockCLI]:
    """`dock` against the module's busybox daemon, its TMPDIR a directory of its own (the rest of
    tmp_path stays the test's); after the test every container goes, and dock must have left no
    temp file behind."""
    work = tmp_path / "dock-tmp"
    work.mkdir()
    yield DockCLI(busybox_daemon.address, work)
    remove_everything(busybox_daemon)
    assert list(work.iterdir()) == [], "dock left temp files behind"


def emptied(d: DaemonProcess) -> None:
    """After a test that makes volumes: containers, tasks and snapshots go (remove_everything),
    every volume too, and the daemon must have logged no traceback meanwhile."""
    remove_everything(d)
    cli = DockCLI(d.address)
    for name in cli.ok("volume", "ls", "-q").split():
        cli.ok("volume", "rm", name)
    assert "Traceback" not in d.log(), d.log()[-5000:]
