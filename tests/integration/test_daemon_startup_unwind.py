"""A start-up that fails half-way releases what it took (issue 18): the root lock, the socket,
the database's and the snapshotters' threads; a second start on the same root then succeeds."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists
from supervisor.config import Config
from supervisor.server import Daemon

pytestmark = pytest.mark.root

# Threads our stores start (metadata/db.py, snapshotter/directory.py) and must end on close.
STORE_THREADS = ("metadata-db", "snapshotter-")


def _store_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(STORE_THREADS))


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dockyard-unwind-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _address_too_long(cfg: Config) -> None:
    # Binding the gRPC socket is the last step: everything before it has started.
    cfg.address = cfg.state / ("a" * 120) / "dockyard.sock"


def _ttrpc_path_taken(cfg: Config) -> None:
    # The shims' ttrpc socket cannot be made: fails in the runtime step, after storage and gc.
    (cfg.state / "ttrpc.sock" / "taken").mkdir(parents=True)


@pytest.mark.parametrize(("break_it", "error"), [(_address_too_long, OSError), (_ttrpc_path_taken, AlreadyExists)],
                         ids=["grpc-bind", "ttrpc-listen"])
async def test_failed_start_releases_what_it_took(base: Path, break_it: Callable[[Config], None],
                                                  error: type[Exception]) -> None:
    assert _store_threads() == [], "store threads left by an earlier test"
    root, state = base / "root", base / "state"
    state.mkdir(parents=True)
    bad = Config(root=root, state=state, address=state / "dockyard.sock")
    break_it(bad)

    first = Daemon(bad)
    with pytest.raises(error):
        await first.start()
    assert not bad.address.exists() and not bad.address.is_symlink(), "socket left after a failed start"
    assert _store_threads() == [], "database or snapshotter threads left after a failed start"
    await first.stop()  # what serve() does after a failed start: nothing left to release, no error

    # The root lock was released: a daemon on the same root starts, serves, and stops cleanly.
    shutil.rmtree(state)
    state.mkdir()
    good = Config(root=root, state=state, address=state / "dockyard.sock")
    second = Daemon(good)
    await second.start()
    try:
        assert good.address.is_socket()
        assert _store_threads() != []
    finally:
        await second.stop()
    assert not good.address.exists()
    assert _store_threads() == []
