"""Snapshots in the SDK: `client.snapshots`, over containerd's Snapshots service.

    async with Client(address, namespace="default") as c:
        mounts = await c.snapshots.prepare("work", "sha256:chain")      # overlayfs by default
        native = c.snapshots.using("native", lease="my-lease")        # another snapshotter, in a lease
        await native.commit("layer-1", "extract-1", labels={"containerd.io/gc.root": "x"})
        async for info in c.snapshots.list("kind==committed"):
            print(info.name, info.parent, info.kind)

The data types are the value types the daemon uses too (`Info`, `Kind`, `Mount`, `Usage` from
`dockyard_common.types`). Every call acts in the client's namespace; a `lease` makes new
snapshots part of that lease (the `containerd-lease` header, as ctr sends it).
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import mount_pb2
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import Info, Kind, Mount, Usage

if TYPE_CHECKING:
    from dock.client import Client

__all__ = ["DEFAULT_SNAPSHOTTER", "Info", "Kind", "Mount", "SnapshotsAPI", "Usage"]

DEFAULT_SNAPSHOTTER = "overlayfs"  # what ctr asks for unless told otherwise
T = TypeVar("T")


def _mounts(msgs: Iterable[mount_pb2.Mount]) -> list[Mount]:
    return [Mount(m.type, m.source, m.target, list(m.options)) for m in msgs]


def _kind(value: int) -> Kind:
    return Kind(value) if value in Kind._value2member_map_ else Kind.UNKNOWN


def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """Labels as the wire carries them; anything but str → str is refused before sending."""
    for k, v in (labels or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"label {k!r}={v!r}: labels map strings to strings")
    return dict(labels or {})


def _info(msg: pb.Info) -> Info:
    return Info(msg.name, msg.parent, _kind(msg.kind), msg.created_at.ToDatetime(tzinfo=UTC),
                msg.updated_at.ToDatetime(tzinfo=UTC), dict(msg.labels))


class SnapshotsAPI:
    """Snapshots of one snapshotter (`snapshotter`), optionally created inside `lease`."""

    def __init__(self, client: Client, snapshotter: str = DEFAULT_SNAPSHOTTER, lease: str = "") -> None:
        self._client = client
        self._stub = pb_grpc.SnapshotsStub(client.channel)
        self.snapshotter = snapshotter
        self.lease = lease

    def using(self, snapshotter: str | None = None, lease: str | None = None) -> SnapshotsAPI:
        """The same API on another snapshotter and/or lease ("" for none)."""
        other = copy.copy(self)
        if snapshotter is not None:
            other.snapshotter = snapshotter
        if lease is not None:
            other.lease = lease
        return other

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        return await self._client.call(method, request, self.lease)

    async def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """An active (writable) snapshot `key` on committed `parent`; its mounts."""
        req = pb.PrepareSnapshotRequest(snapshotter=self.snapshotter, key=key, parent=parent, labels=_labels(labels))
        return _mounts((await self._call(self._stub.Prepare, req)).mounts)

    async def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A read-only view `key` of committed `parent`; its mounts."""
        req = pb.ViewSnapshotRequest(snapshotter=self.snapshotter, key=key, parent=parent, labels=_labels(labels))
        return _mounts((await self._call(self._stub.View, req)).mounts)

    async def mounts(self, key: str) -> list[Mount]:
        req = pb.MountsRequest(snapshotter=self.snapshotter, key=key)
        return _mounts((await self._call(self._stub.Mounts, req)).mounts)

    async def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn active `key` into committed `name` (labels are `labels`, not the active one's)."""
        req = pb.CommitSnapshotRequest(snapshotter=self.snapshotter, name=name, key=key, labels=_labels(labels))
        await self._call(self._stub.Commit, req)

    async def remove(self, key: str) -> None:
        await self._call(self._stub.Remove, pb.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key))

    async def stat(self, key: str) -> Info:
        resp = await self._call(self._stub.Stat, pb.StatSnapshotRequest(snapshotter=self.snapshotter, key=key))
        return _info(resp.info)

    async def update(self, info: Info, paths: Iterable[str] | None = None) -> Info:
        """Update `info.name`'s labels: all of them (no paths, or "labels"), or "labels.<k>" ones."""
        msg = pb.Info(name=info.name, parent=info.parent, kind=int(info.kind),  # type: ignore[arg-type]
                      labels=_labels(info.labels))
        for field, value in (("created_at", info.created_at), ("updated_at", info.updated_at)):
            ts = timestamp_pb2.Timestamp()
            ts.FromDatetime(value)
            getattr(msg, field).CopyFrom(ts)
        req = pb.UpdateSnapshotRequest(snapshotter=self.snapshotter, info=msg,
                                       update_mask=field_mask_pb2.FieldMask(paths=list(paths or [])))
        return _info((await self._call(self._stub.Update, req)).info)

    async def set_labels(self, key: str, labels: Mapping[str, str]) -> Info:
        """Set (or, with an empty value, remove) the given labels only."""
        return await self.update(Info(key, labels=dict(labels)), [f"labels.{k}" for k in labels])

    async def list(self, *filters: str) -> AsyncIterator[Info]:
        """Snapshots matching any of the containerd filters (`kind==committed`, `labels.x`, `parent==p`)."""
        call = self._stub.List(pb.ListSnapshotsRequest(snapshotter=self.snapshotter, filters=list(filters)),
                               metadata=self._client.metadata(self.lease), timeout=self._client.timeout)
        try:
            async for resp in call:
                for msg in resp.info:
                    yield _info(msg)
        except grpc.aio.AioRpcError as exc:
            raise self._client._error(exc) from None
        finally:
            call.cancel()

    async def all(self, *filters: str) -> builtins.list[Info]:
        return [i async for i in self.list(*filters)]

    async def usage(self, key: str) -> Usage:
        resp = await self._call(self._stub.Usage, pb.UsageRequest(snapshotter=self.snapshotter, key=key))
        return Usage(resp.size, resp.inodes)

    async def cleanup(self) -> None:
        """Reclaim backend data no snapshot refers to (interrupted work, orphans)."""
        await self._call(self._stub.Cleanup, pb.CleanupRequest(snapshotter=self.snapshotter))
