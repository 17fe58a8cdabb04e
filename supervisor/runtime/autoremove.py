"""The daemon's `--rm` (dockyard_common/autoremove.py): a container whose init exited goes, with its
task, its rootfs snapshot and its anonymous volumes, whether a client is attached or not.

The restart monitor (restart.py) decides when, from the same exit events it restarts by; this
does the removal, in the order that keeps every step safe to repeat after a crash (the next
daemon's start judges the container again):

    task       deleted if it is still the stopped one (started again meanwhile: nothing is done)
    snapshot   removed (a client may have removed it already)
    container  its record deleted, if it is still the one judged (same created_at: a new
               container of the same name made meanwhile is left alone); the runtime's hooks
               run (network, log), as for a client's Containers/Delete
    volumes    the anonymous volumes made for it that no container uses (Volumes/Prune's rule)
    event      /containers/delete last, so a client that waits for it (`dock run --rm`) sees
               the volumes gone too

    remover = AutoRemover(containers, tasks, snapshots, volumes, events, runtime.container_deleted)
    await remover.remove("default", container)
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from dockyard_api.containerd.events import container_pb2 as container_events
from dockyard_common import volumelabels
from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.types import Container
from supervisor.events import Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.types import Status

log = logging.getLogger("dockyard.autoremove")

DELETE_TOPIC = "/containers/delete"


class Pruned(Protocol):
    @property
    def removed(self) -> builtins.list[str]: ...


class Volumes(Protocol):
    async def prune(self, ns: str, filter_texts: Iterable[str] = ()) -> Pruned: ...


class AutoRemover:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, snapshots: SnapshotStore, volumes: Volumes,
                 events: Exchange, on_deleted: Callable[[str, str], Awaitable[None]]) -> None:
        self.containers = containers
        self.tasks = tasks
        self.snapshots = snapshots
        self.volumes = volumes
        self.events = events
        self.on_deleted = on_deleted  # what a client's Containers/Delete runs after the record goes

    async def remove(self, namespace: str, judged: Container) -> bool:
        """Remove `judged` (whose task exited, or is gone); False when it is not ours to remove
        any more (running again, removed or replaced meanwhile)."""
        cid = judged.id
        try:
            task = self.tasks.get(namespace, cid)
        except NotFound:
            pass
        else:
            if (await task.state()).status != Status.STOPPED:
                return False  # started again meanwhile
            with contextlib.suppress(NotFound):
                await self.tasks.delete(namespace, cid)
        try:
            current = await self.containers.get(namespace, cid)
        except NotFound:
            return False  # a client removed it (its anonymous volumes stay, as with `dock rm` without -v)
        if current.created_at != judged.created_at:
            return False
        if current.snapshot_key and current.snapshotter:
            try:
                await self.snapshots.remove(namespace, current.snapshotter, current.snapshot_key)
            except NotFound:
                pass
            except DockyardError as exc:  # the collector takes it once the container is gone
                log.warning("container %s/%s: removing its snapshot: %s", namespace, cid, exc)
        try:
            await self.containers.delete(namespace, cid)
        except NotFound:
            return False
        await self.on_deleted(namespace, cid)
        pruned = await self.volumes.prune(namespace, [volumelabels.anonymous_filter(cid)])
        event = container_events.ContainerDelete(id=cid)
        self.events.publish(namespace, DELETE_TOPIC, event.DESCRIPTOR.full_name, event.SerializeToString(),
                            {"id": cid})
        log.info("container %s/%s exited and was removed (--rm)%s", namespace, cid,
                 f", with {len(pruned.removed)} anonymous volume(s)" if pruned.removed else "")
        return True
