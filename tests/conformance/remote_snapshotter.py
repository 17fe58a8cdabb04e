"""The Snapshotter protocol served by a real dockyardd, through the SDK: a conformance harness.

`RemoteOverlay.open(root)` starts a dockyardd whose root is `root`, bind-mounted on a short
path (SQLite resolves symlinks and refuses paths over 512 bytes; the suite uses longer roots;
the bind mount also keeps overlay options short), and returns
an object that speaks the Snapshotter protocol by calling the daemon's Snapshots service.
Everything it creates is held by one lease, as ctr holds what it unpacks, so the daemon's
garbage collector leaves the suite's unlabelled snapshots alone. `close()` stops the daemon;
opening the same root again is a daemon restart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Self

from dock.client import Client
from dock.snapshots import SnapshotsAPI
from dockyard_common.errors import AlreadyExists, FailedPrecondition
from dockyard_common.types import Info, Mount, Usage
from supervisor.snapshotter.base import WalkFilter
from tests.containerd import stop
from tests.daemon import REPO, dockyardd_command

from .mounts import unmount

LEASE = "conformance"


class RemoteSnapshotter:
    backend: ClassVar[str] = ""

    def __init__(self, base: Path, proc: subprocess.Popen[bytes], client: Client) -> None:
        self._base = base
        self._proc = proc
        self._client = client
        self._api: SnapshotsAPI = client.snapshots.using(self.backend, lease=LEASE)
        self._closed = False

    @property
    def name(self) -> str:
        return self.backend

    @classmethod
    async def open(cls, root: str | os.PathLike[str]) -> Self:
        os.makedirs(root, exist_ok=True)
        # Named after the root, so a reopened root (a restart) serves the same mount paths.
        tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:12]
        base = Path(tempfile.gettempdir()) / f"dyc-{tag}"
        (base / "root").mkdir(parents=True)
        subprocess.run(["mount", "--bind", os.fspath(root), str(base / "root")], check=True, capture_output=True)
        log = base / "dockyardd.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(log, "ab") as out:
            proc = subprocess.Popen(dockyardd_command("--root", str(base / "root"), "--state", str(base / "state")),
                                    stdout=out, stderr=out, env=env, cwd=REPO, start_new_session=True)
        address = base / "state" / "dockyard.sock"
        deadline = time.monotonic() + 20
        while not (address.exists() and "serving on" in log.read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                text = log.read_text(errors="replace")
                _release(base)
                raise RuntimeError(f"dockyardd did not start:\n{text}")
            time.sleep(0.02)
        client = Client(str(address), "conformance")
        try:
            await client.leases.create(LEASE)
        except AlreadyExists:  # a restart on the same root
            pass
        return cls(base, proc, client)

    def _api_open(self) -> SnapshotsAPI:
        if self._closed:
            raise FailedPrecondition(f"{self.backend} snapshotter behind {self._base} is closed")
        return self._api

    async def stat(self, key: str) -> Info:
        return await self._api_open().stat(key)

    async def update(self, info: Info, fieldpaths: list[str] | None = None) -> Info:
        return await self._api_open().update(info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        return await self._api_open().usage(key)

    async def mounts(self, key: str) -> list[Mount]:
        return await self._api_open().mounts(key)

    async def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return await self._api_open().prepare(key, parent, labels)

    async def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        return await self._api_open().view(key, parent, labels)

    async def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        await self._api_open().commit(name, key, labels)

    async def remove(self, key: str) -> None:
        await self._api_open().remove(key)

    async def walk(self, filter_fn: WalkFilter | None = None) -> AsyncIterator[Info]:
        async for info in self._api_open().list():
            if filter_fn is None or filter_fn(info):
                yield info

    async def cleanup(self) -> None:
        await self._api_open().cleanup()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.close()
        code = stop(self._proc)
        log = (self._base / "dockyardd.log").read_text(errors="replace")
        _release(self._base)
        assert code == 0, f"dockyardd exited with {code}:\n{log}"


def _release(base: Path) -> None:
    """Unmount the root's bind mount, then remove the state dir and log (never the root)."""
    unmount(str(base / "root"))
    os.rmdir(base / "root")
    shutil.rmtree(base)


class RemoteOverlay(RemoteSnapshotter):
    backend = "overlayfs"


class RemoteNative(RemoteSnapshotter):
    backend = "native"
