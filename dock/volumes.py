"""Named volumes in the SDK: `client.volumes`, and what `dock run -v NAME:/path` does with them.

    vol, created = await client.volumes.create("data", labels={"team": "a"})
    vol, users = await client.volumes.get("data")       # users: ids of containers using it
    await client.volumes.delete("data")                 # FailedPrecondition while a container uses it
    removed, space = await client.volumes.prune()       # unused anonymous volumes (all=True: named too)
    sized = await client.volumes.list(with_size=True)   # VolumeInfo.size: bytes on disk

Volumes belong to the client's namespace. A container that mounts named volumes is created with
(see `attach_named` and `seed_named`, called by dock/runner.py):

1. each volume made if missing (`ensure`), and its directory bound in the spec (`SpecOptions.volume_paths`);
   an anonymous one (`-v /path`, or a VOLUME of the image that no mount covers) made under a new
   64-hex name, labelled with its container (`volumelabels.anonymous_labels`);
2. the label `dockyard.volume/mounts` naming them, which makes them "in use" for delete and prune;
3. once the container (and its rootfs snapshot) exists, each empty volume seeded by the daemon
   with the image's content at the mount path (`Volumes/Seed`), as Docker does, unless `nocopy`.

`remove_anonymous` removes a container's anonymous volumes (`dock rm -v`; the daemon does the same
for `--rm`): one Volumes/Prune whose filter names the container, so a volume another container
still uses stays.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dock.oci import SpecOptions, image_volume_requests
from dockyard_common import volumelabels
from dockyard_common.errors import AlreadyExists, DockyardError, InvalidArgument, NotFound
from dockyard_common.types import MAX_LABEL_SIZE, Container, label_size

if TYPE_CHECKING:
    from dock.client import Client
    from dockyard_api.dockyard.volumes.v1 import volumes_pb2 as pb

MOUNTS_LABEL = volumelabels.MOUNTS


@dataclass
class VolumeInfo:
    name: str
    mountpoint: str
    labels: dict[str, str]
    created_at: datetime | None
    size: int | None = None  # bytes on disk, when the listing asked for sizes


@dataclass(frozen=True)
class SeedResult:
    seeded: bool
    entries: int
    bytes: int


def _volume(m: pb.Volume) -> VolumeInfo:
    created = m.created_at.ToDatetime(tzinfo=UTC) if m.HasField("created_at") else None
    return VolumeInfo(m.name, m.mountpoint, dict(m.labels), created, m.size if m.HasField("size") else None)


class VolumesAPI:
    def __init__(self, client: Client) -> None:
        from dockyard_api.dockyard.volumes.v1 import volumes_pb2, volumes_pb2_grpc
        self._client = client
        self._pb = volumes_pb2
        self._stub = volumes_pb2_grpc.VolumesStub(client.channel)

    async def create(self, name: str, labels: dict[str, str] | None = None) -> tuple[VolumeInfo, bool]:
        """The volume, and whether this call made it (an existing one with the same labels is
        answered as it is; with other labels: AlreadyExists)."""
        resp = await self._client.call(self._stub.Create, self._pb.CreateVolumeRequest(name=name, labels=labels or {}))
        return _volume(resp.volume), resp.created

    async def get(self, name: str) -> tuple[VolumeInfo, builtins.list[str]]:
        """The volume and the ids of the containers of this namespace that use it."""
        resp = await self._client.call(self._stub.Get, self._pb.GetVolumeRequest(name=name))
        return _volume(resp.volume), list(resp.containers)

    async def list(self, filters: builtins.list[str] | None = None, *,
                   with_size: bool = False) -> builtins.list[VolumeInfo]:
        """Volumes matching any of the filters (containerd's syntax; fields name and labels.*);
        `with_size`: each one's bytes on disk too (the daemon walks every tree)."""
        req = self._pb.ListVolumesRequest(filters=filters or [], with_size=with_size)
        resp = await self._client.call(self._stub.List, req)
        return [_volume(v) for v in resp.volumes]

    async def delete(self, name: str) -> None:
        await self._client.call(self._stub.Delete, self._pb.DeleteVolumeRequest(name=name))

    async def prune(self, filters: builtins.list[str] | None = None, *, all: bool = False,
                    labels: Sequence[str] = (), labels_not: Sequence[str] = ()) -> tuple[builtins.list[str], int]:
        """Remove the anonymous volumes no container uses (with `all`, the named ones too, as
        Docker 23+); their names and the bytes they held. Narrowed by `filters` (containerd's
        syntax, any may match), `labels` (Docker's `label=`: KEY or KEY=VALUE, every one carried)
        and `labels_not` (`label!=`: none of them carried)."""
        req = self._pb.PruneVolumesRequest(filters=filters or [], all=all, labels=labels, labels_not=labels_not)
        resp = await self._client.call(self._stub.Prune, req)
        return list(resp.removed), resp.space_reclaimed

    async def seed(self, name: str, snapshotter: str, snapshot_key: str, path: str) -> SeedResult:
        """Fill the volume, if empty, with what the snapshot holds at `path` (Docker's copy-up)."""
        resp = await self._client.call(self._stub.Seed, self._pb.SeedVolumeRequest(
            name=name, snapshotter=snapshotter, snapshot_key=snapshot_key, path=path))
        return SeedResult(resp.seeded, resp.entries, resp.bytes)

    async def ensure(self, name: str) -> VolumeInfo:
        """The volume `name`, made (without labels) if it does not exist yet: `-v NAME:/path`."""
        try:
            return (await self.get(name))[0]
        except NotFound:
            pass
        try:
            return (await self.create(name))[0]
        except AlreadyExists:  # made meanwhile, with labels
            return (await self.get(name))[0]


async def attach_named(client: Client, opts: SpecOptions, cid: str, image_volumes: Sequence[str] = (),
                       undo: contextlib.AsyncExitStack | None = None) -> dict[str, str]:
    """Make the volumes `opts` asks for (named ones if missing; anonymous ones, and one for each of
    the image's VOLUME paths no mount covers, new for container `cid`) and tell the spec where they
    live; the container labels that name them (none without volumes). `undo` gets the removal of
    the anonymous volumes made here."""
    asked = [*opts.volumes, *image_volume_requests(opts, image_volumes)]
    anonymous = [not v.name for v in asked]
    wanted = [v if v.name else dataclasses.replace(v, name=volumelabels.anonymous_name()) for v in asked]
    if not wanted:
        return {}
    label = volumelabels.encode([volumelabels.VolumeMount(v.name, v.destination, v.copy) for v in wanted])
    if label_size(MOUNTS_LABEL, label) > MAX_LABEL_SIZE:
        # checked before any volume is made: an image with 10 000 VOLUMEs makes none of them
        raise InvalidArgument(f"{len(wanted)} volumes are more than one container can list in its "
                              f"{MOUNTS_LABEL} label ({MAX_LABEL_SIZE} bytes); the image or -v asks for too many")
    for v, new in zip(wanted, anonymous, strict=True):
        if new:
            vol, _ = await client.volumes.create(v.name, volumelabels.anonymous_labels(cid))
            if undo is not None:
                undo.push_async_callback(_delete_quietly, client, v.name)
            opts.volume_paths[v.name] = vol.mountpoint
        elif v.name not in opts.volume_paths:
            opts.volume_paths[v.name] = (await client.volumes.ensure(v.name)).mountpoint
    opts.volumes = wanted
    return {MOUNTS_LABEL: label}


async def _delete_quietly(client: Client, name: str) -> None:
    with contextlib.suppress(DockyardError):
        await client.volumes.delete(name)


async def remove_anonymous(client: Client, cid: str) -> builtins.list[str]:
    """Remove the anonymous volumes made for container `cid` that no container uses; their names."""
    removed, _ = await client.volumes.prune([volumelabels.anonymous_filter(cid)])
    return removed


async def seed_named(client: Client, container: Container) -> None:
    """Seed each empty volume the container's label names (unless nocopy) from its rootfs snapshot."""
    value = container.labels.get(MOUNTS_LABEL)
    if not value or not container.snapshot_key:
        return
    for m in volumelabels.decode(value):
        if m.copy:
            await client.volumes.seed(m.name, container.snapshotter, container.snapshot_key, m.destination)
