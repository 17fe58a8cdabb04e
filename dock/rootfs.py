"""A container's filesystem as dock reads it (dock diff, dock export): the mounts of its snapshot
(the image and the container's changes) and of a temporary view of the snapshot's parent (the
image alone), mounted read-only in a temp dir here. Mounting needs root, as `dock run` does.

    async with container_layers(client, c) as layers:    # under a temporary lease
        await asyncio.to_thread(walk, layers.upper)
    def walk(mounts):
        with mounted_readonly(mounts) as root: ...          # blocking: run it in a thread
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard_common import mounts as hostmounts
from dockyard_common.errors import DockyardError, FailedPrecondition
from dockyard_common.types import Container, Mount

if TYPE_CHECKING:
    from dock.client import Client


@dataclass(frozen=True)
class Layers:
    upper: list[Mount]  # the container's snapshot: the image with its changes
    lower: list[Mount]  # a view of the snapshot's parent (the image); [] when it has none


async def container_mounts_of(client: Client, c: Container) -> list[Mount]:
    """The mounts of the container's snapshot (FailedPrecondition when it has none)."""
    if not c.snapshot_key:
        raise FailedPrecondition(f"container {c.id} has no snapshot (no root filesystem of its own)")
    return await client.snapshots.using(c.snapshotter or None).mounts(c.snapshot_key)


@contextlib.asynccontextmanager
async def container_layers(client: Client, c: Container) -> AsyncIterator[Layers]:
    """The container's snapshot and a view of its parent, inside a temporary lease (what is made
    in the block, e.g. a Diff's blob, goes with it); the view is removed at the end."""
    async with client.leased():
        upper = await container_mounts_of(client, c)
        snaps = client.snapshots.using(c.snapshotter or None)
        parent = (await snaps.stat(c.snapshot_key)).parent
        if not parent:
            yield Layers(upper, [])
            return
        key = f"dock-view-{secrets.token_hex(8)}"
        lower = await snaps.view(key, parent)
        try:
            yield Layers(upper, lower)
        finally:
            with contextlib.suppress(DockyardError):  # the lease's end collects it anyway
                await snaps.remove(key)


@contextlib.contextmanager
def mounted_readonly(mounts: Sequence[Mount]) -> Iterator[Path]:
    """`mounts` mounted read-only, as a path of this process only (`/proc/self/fd/N`): the mount
    is detached at once and reached through a descriptor, and its temp dir removed, so a dock
    killed while it reads (or hung on what an image put there) leaves neither a mount nor a dir
    behind; the kernel frees a detached mount with its last reference. An overlay in use (a
    running container's) is stacked as lowers alone: its upperdir is never mounted twice. Not for
    paths handed to another process."""
    target = Path(tempfile.mkdtemp(prefix="dock-rootfs-"))
    try:
        hostmounts.mount_all(hostmounts.readonly_view(mounts), target, readonly=True)
        try:
            fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            hostmounts.detach_all(target)
    finally:
        with contextlib.suppress(OSError):  # detached: no longer a mount point, nothing left to a kill
            os.rmdir(target)
    try:
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def in_tree(root: Path, rel: str) -> bool:
    """Is `rel` (relative, "/"-separated) a name in the tree at `root`? Each directory on the way
    must be one: a symlink is not followed (the name it leads to is another name, and may be
    outside the tree)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    here = root
    for i, part in enumerate(parts):
        if part == "..":
            return False
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            return False
    return bool(parts)
