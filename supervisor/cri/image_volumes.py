"""Image volumes (Kubernetes' ImageVolume, KEP 4639): a CRI mount naming an image instead of a
host path gets that image's filesystem, read-only, at its container path.

    volumes = ImageVolumes(deps, "k8s.io", "overlayfs", Path("/run/dockyard/cri/image-volumes"))
    with volumes.creating(cid):                     # CreateContainer, until the record exists:
        made = await volumes.make(cid, config, lease)   # views mounted on the host
    made.config, made.spec_config, made.labels      # stored config, config for the spec, record labels
    await volumes.ensure(cid, config)               # StartContainer: mounted again if gone (a reboot)
    await volumes.remove(cid, config)               # RemoveContainer: unmounted, views removed
    await volumes.sweep(live_ids)                   # daemon start: leftovers of removed containers go

As containerd's CRI does it: the image must be there already (kubelet pulls it first; NotFound
otherwise); mount i of container c is a read-only view snapshot `cri-image-volume-<c>-<i>` of the
image's unpacked layers, mounted on `<root>/<c>/<i>` in the daemon's mount namespace, and the
container gets a read-only bind of it (or of its `image_sub_path`, which must exist). The view is
made under the create's lease; the container record then keeps it from the collector with a
`containerd.io/gc.ref.snapshot.<snapshotter>/image-volume.<i>` label. The host mounts outlive a
daemon restart; a host reboot empties the state directory, so StartContainer mounts again what
is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.mounts import mount_all, unmount_all
from dockyard_common.rootpath import secure_join
from dockyard_common.types import Mount
from supervisor.cri.container_types import ContainerConfig, MountSpec
from supervisor.cri.sandbox import SandboxDeps, unpacked_image
from supervisor.metadata.gc_graph import SNAPSHOT_REF

log = logging.getLogger("dockyard.cri")


@dataclass
class Made:
    config: ContainerConfig  # as stored: each image mount's image_ref filled in
    spec_config: ContainerConfig  # for the OCI spec: each image mount's host_path is its source on the host
    labels: dict[str, str] = field(default_factory=dict)  # for the container record: the views it keeps


def snapshot_key(cid: str, index: int) -> str:
    return f"cri-image-volume-{cid}-{index}"


class ImageVolumes:
    def __init__(self, deps: SandboxDeps, namespace: str, snapshotter: str, root: Path) -> None:
        self.d = deps
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.root = root
        self._making: set[str] = set()  # containers whose volumes are being made: not for the sweep

    @contextlib.contextmanager
    def creating(self, cid: str) -> Iterator[None]:
        """Around the whole create of container `cid`, until its record exists: the sweep leaves
        its volumes alone."""
        self._making.add(cid)
        try:
            yield
        finally:
            self._making.discard(cid)

    def _dir(self, cid: str, index: int) -> Path:
        return self.root / cid / str(index)

    async def make(self, cid: str, config: ContainerConfig, lease: str) -> Made:
        """Mount every image volume of `config` for container `cid` (nothing is left on failure)."""
        stored, for_spec = list(config.mounts), list(config.mounts)
        labels: dict[str, str] = {}
        wanted = [(i, m) for i, m in enumerate(config.mounts) if m.image]
        if not wanted:
            return Made(config, config)
        try:
            for i, m in wanted:
                found = await self.d.images.find(m.image)
                if found is None:
                    raise NotFound(f"image volume {m.container_path}: image {m.image!r} (pull it first)")
                _, image = await unpacked_image(self.d, self.namespace, self.snapshotter, m.image, found)
                if not image.layers:
                    raise InvalidArgument(f"image volume {m.container_path}: image {m.image!r} has no layers")
                key = snapshot_key(cid, i)
                mounts = await self.d.snapshots.view(self.namespace, self.snapshotter, key,
                                                     image.layers[-1].chain_id, lease=lease)
                source = await asyncio.to_thread(_mount, mounts, self._dir(cid, i), m)
                stored[i] = replace(m, image_ref=found.id)
                for_spec[i] = replace(m, image_ref=found.id, host_path=source)
                labels[f"{SNAPSHOT_REF}{self.snapshotter}/image-volume.{i}"] = key
        except BaseException:
            await uninterrupted(self.remove(cid, config))
            raise
        return Made(replace(config, mounts=tuple(stored)), replace(config, mounts=tuple(for_spec)), labels)

    async def ensure(self, cid: str, config: ContainerConfig) -> None:
        """Before the task is made: each view mounted on the host again if it is not (after a reboot)."""
        for i, m in enumerate(config.mounts):
            if m.image and not await asyncio.to_thread(os.path.ismount, self._dir(cid, i)):
                try:
                    mounts = await self.d.snapshots.mounts(self.namespace, self.snapshotter, snapshot_key(cid, i))
                except NotFound:
                    raise NotFound(f"image volume {m.container_path} of container {cid}: its snapshot is "
                                   "gone (remove the container and create it again)") from None
                await asyncio.to_thread(_mount, mounts, self._dir(cid, i), m)
                log.info("container %s: image volume %s mounted again", cid, m.container_path)

    async def remove(self, cid: str, config: ContainerConfig | None) -> None:
        """Unmount and remove the container's image volumes (idempotent). Without its config
        (a record gone), whatever is found under its directory goes."""
        if config is not None:
            indexes = [i for i, m in enumerate(config.mounts) if m.image]
        else:
            indexes = await asyncio.to_thread(_indexes, self.root / cid)
        if not indexes and not await asyncio.to_thread(os.path.exists, self.root / cid):
            return
        await asyncio.to_thread(_unmount_dir, self.root / cid)
        for i in indexes:
            with contextlib.suppress(NotFound):
                await self.d.snapshots.remove(self.namespace, self.snapshotter, snapshot_key(cid, i))

    async def sweep(self, live: Callable[[], Awaitable[set[str]]]) -> None:
        """At daemon start: the volumes of containers whose record is gone (the daemon died while
        removing them) are unmounted and removed. Safe beside requests: a directory counts as stale
        only if it existed before the live ids were read and its container was not being made."""
        try:
            names = await asyncio.to_thread(lambda: sorted(os.listdir(self.root)) if self.root.is_dir() else [])
            making = set(self._making)
            alive = await live()
        except Exception as exc:  # the sweep is housekeeping: it must never stop the daemon
            log.warning("image volumes: looking for leftovers: %s", exc)
            return
        for cid in names:
            if cid in alive or cid in making:
                continue
            log.info("container %s is gone: removing its image volumes", cid)
            try:
                await self.remove(cid, None)
            except Exception as exc:  # one leftover must not keep the others
                log.warning("image volumes of removed container %s: %s", cid, exc)


def _mount(mounts: Sequence[Mount], target: Path, m: MountSpec) -> str:
    """Blocking. `mounts` read-only on `target`; the host path the container binds (InvalidArgument
    if the sub path is not in the image)."""
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.path.ismount(target):
        mount_all(mounts, target, readonly=True)
    if not m.image_sub_path:
        return str(target)
    source = secure_join(os.path.realpath(target), m.image_sub_path)
    if not os.path.exists(source):
        raise InvalidArgument(f"image volume {m.container_path}: image_sub_path {m.image_sub_path!r} "
                              f"does not exist in image {m.image!r}")
    return source


def _indexes(base: Path) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(int(n) for n in os.listdir(base) if n.isdigit())
    return []


def _unmount_dir(base: Path) -> None:
    """Blocking: everything mounted under `base` undone, then `base` removed."""
    if base.exists():
        unmount_all(base)
        shutil.rmtree(base, ignore_errors=True)
