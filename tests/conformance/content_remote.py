"""The ContentStore contract over gRPC: a real dockyardd, driven through the dock SDK.

`RemoteHarness.open()` starts a daemon the first time and kills (-9) and restarts it on the
same directories every later time, which is what "a fresh handle on the same backing state"
means for a remote store. Everything is written in one namespace under one lease, so the
daemon's garbage collector keeps it (content nothing holds is garbage, as in containerd).

One difference is by design: namespaced content is only readable while the namespace has a
record of it, so a reader does not outlive `delete` (`reader_outlives_delete = False`).
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from dock.client import Client
from dock.content import ContentAPI, ContentWriter, IngestStatus
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from supervisor.content.store import Info, Status, read_blob
from tests.daemon import DaemonProcess, remove_base, start_daemon

NAMESPACE = "conformance"
LEASE = "conformance"


def _status(s: IngestStatus, expected: str = "") -> Status:
    return Status(s.ref, s.offset, s.total, s.expected or expected, s.started_at, s.updated_at)


class RemoteReader:
    def __init__(self, api: ContentAPI, digest: str, size: int) -> None:
        self._api = api
        self._digest = digest
        self._size = size
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise InvalidArgument(f"read of {size} bytes @{offset}: offset and size must not be negative")
        if self._closed:
            raise FailedPrecondition(f"reader of content {self._digest} is closed")
        if size == 0 or offset >= self._size:
            return b""  # on the wire, size 0 means "to the end" and offset > size is OUT_OF_RANGE
        return await self._api.read_all(self._digest, offset, min(size, self._size - offset))

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class RemoteWriter:
    def __init__(self, w: ContentWriter, expected: str) -> None:
        self._w = w
        self._expected = expected

    @property
    def ref(self) -> str:
        return self._w.ref

    def status(self) -> Status:
        return _status(self._w.status(), self._expected)

    def digest(self) -> str:
        return self._w.digest()

    async def write(self, data: bytes, offset: int) -> int:
        return await self._w.write(data, offset)

    async def truncate(self, size: int) -> None:
        await self._w.truncate(size)

    async def commit(self, size: int = 0, expected: str = "") -> str:
        return await self._w.commit(size, expected)

    async def close(self) -> None:
        await self._w.close()


class RemoteContentStore:
    """`supervisor.content.store.ContentStore` over `dock.content.ContentAPI`."""

    def __init__(self, api: ContentAPI) -> None:
        self.api = api

    async def info(self, digest: str) -> Info:
        i = await self.api.info(digest)
        return Info(i.digest, i.size, i.created_at, i.updated_at, i.labels)

    async def exists(self, digest: str) -> bool:
        return await self.api.exists(digest)

    async def reader(self, digest: str) -> RemoteReader:
        return RemoteReader(self.api, digest, (await self.api.info(digest)).size)

    async def read_all(self, digest: str, max_size: int) -> bytes:
        return await read_blob(self, digest, max_size)

    async def delete(self, digest: str) -> None:
        await self.api.delete(digest)

    async def walk(self) -> AsyncIterator[Info]:
        for i in await self.api.list():
            yield Info(i.digest, i.size, i.created_at, i.updated_at, i.labels)

    async def status(self, ref: str) -> Status:
        return _status(await self.api.status(ref))

    async def list_statuses(self, prefix: str = "") -> list[Status]:
        found = [_status(s) for s in await self.api.list_statuses() if s.ref.startswith(prefix)]
        return sorted(found, key=lambda s: s.ref)

    async def abort(self, ref: str) -> None:
        await self.api.abort(ref)

    async def writer(self, ref: str, total: int = 0, expected: str = "") -> RemoteWriter:
        return RemoteWriter(await self.api.writer(ref, total, expected), expected)


@dataclass
class RemoteHarness:
    reader_outlives_delete = False
    daemon: DaemonProcess | None = None
    clients: list[Client] = field(default_factory=list)

    async def open(self) -> RemoteContentStore:
        if self.daemon is None:
            # Not under pytest's tmp_path: unix socket paths are limited to 107 bytes.
            self.daemon = start_daemon(Path(tempfile.mkdtemp(prefix="dy-conf-")))
        else:
            self.daemon.stop(signal.SIGKILL)
            # The stale socket would make the restart look ready before it is.
            Path(self.daemon.address).unlink(missing_ok=True)
            self.daemon = start_daemon(self.daemon.base)
        client = Client(self.daemon.address, NAMESPACE)
        self.clients.append(client)
        with contextlib.suppress(AlreadyExists):
            await client.leases.create(LEASE)
        return RemoteContentStore(client.content.with_lease(LEASE))

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        if self.daemon is not None:
            remove_base(self.daemon)
