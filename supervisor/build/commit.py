"""Commit: an image of a container's filesystem changes, as `docker commit` makes one.

    committer = Committer(containers, tasks, snapshots, images, leases, writer, on_release)
    result = await committer.commit("default", CommitOptions("web", "app:1", changes=["CMD [\"sh\"]"]))

Order, and why:
1. Everything a user can get wrong is checked before the container is touched: the name
   (normalized the Docker way; a digest reference is refused), the compression, the changes
   (`commit_changes.apply_changes` against the base config), the container, its snapshot, its
   image and that the image is what the snapshot was made from (the snapshot's parent is the
   image's chain ID; an image re-tagged since does not fit and is refused).
2. A RUNNING task is paused (unless `pause` is off), so the diff sees one state of the files;
   it is resumed in a `finally`, whatever happens to the diff. A PAUSED task stays paused, a
   stopped or missing task is not touched. Commits of one container wait for each other.
3. The layer: the container's snapshot diffed against a view of its parent (the differ walks
   both trees: deletions become whiteouts, replaced directories opaque ones).
4. Config and manifest (`imagewrite.ImageWriter.write`): the base config with the changes, the
   author, the creation time, one more history entry (`created_by` the container's command,
   `comment` the message) and one more diff ID; the image record last.

All of it runs under one temporary lease, deleted at the end: a failed commit leaves no image
record and nothing the collector keeps. A container with no image (its rootfs prepared by
hand) is committed as a one-layer image of its whole rootfs (from `scratch`).

Errors: NotFound (container, or its image), InvalidArgument (name, compression, change; an
image config holding text that is not valid Unicode; a new config larger than Dockyard reads
back), FailedPrecondition (the container has no snapshot, or its image no longer matches it, or
its files hold a name layers reserve for whiteouts, `.wh.*`: see supervisor/differ.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import Compression, Matcher, chain_ids
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.reference import normalize, parse
from dockyard_common.types import Container, Mount, Status
from supervisor.build.commit_changes import apply_changes
from supervisor.build.imagewrite import (
    BaseImage,
    History,
    ImageWriter,
    Layer,
    Step,
    Written,
    check_base,
    check_config,
    docker_layers,
)
from supervisor.images.leasing import temporary_lease
from supervisor.images.resolve import Resolver
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.images import ImageStore
from supervisor.metadata.leases import LeaseStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.task import Task
from supervisor.timeutil import now

log = logging.getLogger("dockyard.commit")

COMPRESSIONS = {"": Compression.GZIP, "gzip": Compression.GZIP, "zstd": Compression.ZSTD}
VIEW_PREFIX = "commit-view-"


@dataclass
class CommitOptions:
    container_id: str
    ref: str
    pause: bool = True
    changes: list[str] = field(default_factory=list)
    message: str = ""
    author: str = ""
    compression: str = ""  # "gzip" (default) or "zstd"


@dataclass
class CommitResult:
    written: Written
    layer: Layer


def image_name(ref: str) -> str:
    """The name a commit stores: `ref` normalized (`app` -> docker.io/library/app:latest)."""
    if not ref:
        raise InvalidArgument("commit: a reference to name the image is required")
    name = normalize(ref)
    if parse(name).digest:
        raise InvalidArgument(f"commit: reference {ref!r} has a digest; name the image with a tag")
    return name


def compression_of(text: str) -> Compression:
    found = COMPRESSIONS.get(text.lower())
    if found is None:
        raise InvalidArgument(f"commit: unknown compression {text!r} (gzip or zstd)")
    return found


def command_of(container: Container) -> str:
    """The container's command line as Docker records it in `created_by` (args joined)."""
    if container.spec is None:
        return ""
    try:
        args = json_value(container.spec.value, "spec").get("process", {}).get("args") or []
    except (JsonError, AttributeError):  # any client may have written the spec
        return ""
    return " ".join(a for a in args if isinstance(a, str)) if isinstance(args, list) else ""


class Committer:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, snapshots: SnapshotStore,
                 images: ImageStore, leases: LeaseStore, writer: ImageWriter,
                 on_release: Callable[[], None] = lambda: None) -> None:
        self.containers = containers
        self.tasks = tasks
        self.snapshots = snapshots
        self.images = images
        self.leases = leases
        self.writer = writer
        self.on_release = on_release
        self.resolver = Resolver(writer.content)
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, ns: str, cid: str) -> asyncio.Lock:
        lock = self._locks.get((ns, cid))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[(ns, cid)] = lock
        return lock

    async def commit(self, ns: str, opts: CommitOptions) -> CommitResult:
        name = image_name(opts.ref)
        compression = compression_of(opts.compression)
        if not opts.container_id:
            raise InvalidArgument("commit: a container id is required")
        container = await self.containers.get(ns, opts.container_id)
        if not container.snapshot_key or not container.snapshotter:
            raise FailedPrecondition(f"container {opts.container_id} has no snapshot to commit "
                                     "(its rootfs is not a snapshot)")
        parent = (await self.snapshots.stat(ns, container.snapshotter, container.snapshot_key)).parent
        base = await self._base(ns, container, parent)
        check_base(base, f"image {container.image!r} of container {container.id}")
        run_config = apply_changes(opts.changes, base.config.config if base is not None else {})
        check_config(base, run_config)  # a config too large to store is refused before the pause
        created = now()
        history = History(created_by=command_of(container), comment=opts.message, author=opts.author,
                          created=created)
        async with self._lock(ns, opts.container_id), \
                temporary_lease(self.leases, ns, self.on_release) as lease:
            lower_parent = parent if base is not None else ""  # no image: the whole rootfs is the layer
            layer = await self._diff(ns, container, lower_parent, opts.pause, compression,
                                     docker_layers(base, compression), lease)
            written = await self.writer.write(ns, name, base, [Step(history, layer)], run_config, lease,
                                              author=opts.author, created=created)
        log.info("committed container %s as %s (%s)", opts.container_id, name, written.target.digest)
        return CommitResult(written, layer)

    async def _base(self, ns: str, container: Container, parent: str) -> BaseImage | None:
        """The container's image, for the platform whose rootfs its snapshot was made from."""
        if not container.image:
            return None
        try:
            record = await self.images.get(ns, container.image)
        except NotFound:
            raise NotFound(f"image {container.image!r} of container {container.id} no longer exists; "
                           "commit needs it to know the layers below the container's changes") from None
        tried: set[str] = set()
        for matcher in (Matcher.default(), Matcher.all()):  # the host's platform first: most likely
            for desc in await self.resolver.manifests(ns, record.target, matcher):
                if desc.digest in tried:
                    continue
                tried.add(desc.digest)
                manifest = await self.resolver.manifest(ns, desc)
                config = await self.resolver.config(ns, manifest.config)
                chain = chain_ids(config.diff_ids)
                if (chain[-1] if chain else "") == parent and len(manifest.layers) == len(config.diff_ids):
                    return BaseImage(manifest, config)
        raise FailedPrecondition(f"image {container.image!r} no longer holds the layers container {container.id} "
                                 "was made from (was the name given to another image since?)")

    async def _diff(self, ns: str, container: Container, parent: str, pause: bool, compression: Compression,
                    docker: bool, lease: str) -> Layer:
        sn = container.snapshotter
        upper = await self.snapshots.mounts(ns, sn, container.snapshot_key)
        lower: list[Mount] = []
        view = ""
        try:
            if parent:
                view = f"{VIEW_PREFIX}{secrets.token_hex(8)} {parent}"
                lower = await self.snapshots.view(ns, sn, view, parent, lease=lease)
            async with self._paused(ns, container.id, pause):
                # The diff runs in a thread with both trees mounted: a cancelled call waits for
                # it, so the view is not removed (nor the task resumed) under a running walk.
                work = asyncio.ensure_future(self.writer.diff(ns, lower, upper, compression, lease, docker=docker))
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    with contextlib.suppress(BaseException):
                        await work
                    raise
        finally:
            if view:
                await asyncio.shield(self._remove_view(ns, sn, view))

    async def _remove_view(self, ns: str, sn: str, key: str) -> None:
        try:
            await self.snapshots.remove(ns, sn, key)
        except NotFound:
            pass
        except Exception:  # the lease's end lets the collector take it
            log.exception("could not remove commit view %r", key)

    @contextlib.asynccontextmanager
    async def _paused(self, ns: str, cid: str, pause: bool) -> AsyncIterator[None]:
        """Pause a running task for the block and resume it after, also when the block fails."""
        task = self._running(ns, cid) if pause else None
        if task is not None and (await task.state()).status == Status.RUNNING:
            await task.pause()
        else:
            task = None
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if task is not None:
                await self._resume(task, failed)

    def _running(self, ns: str, cid: str) -> Task | None:
        try:
            return self.tasks.get(ns, cid)
        except NotFound:
            return None  # a stopped container without a task: nothing to pause

    @staticmethod
    async def _resume(task: Task, failed: bool) -> None:
        try:
            await asyncio.shield(task.resume())
        except DockyardError:
            if not failed:
                raise  # the image is made, but the container stays paused: the caller must know
            log.exception("could not resume container %s after a failed commit", task.id)

