"""The snapshotter contract: words, lifecycle, errors, and the data it speaks.

A snapshotter allocates, snapshots and describes the mounting of filesystem
changesets. It never mounts anything itself (habit 5): it returns `Mount`
descriptions and whoever needs the filesystem performs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from dockyard_common.types import Info, Mount, Usage

WalkFilter = Callable[[Info], bool]


@runtime_checkable
class Snapshotter(Protocol):
    """Snapshots: filesystem states built as chains of changesets.

    Words
        key       names an *active* snapshot (read-write, from `prepare`) or a
                  *view* (read-only, from `view`).
        name      names a *committed* snapshot (immutable, from `commit`).
        parent    the name of the committed snapshot a snapshot descends from;
                  "" is the empty directory.
        mounts    a list of `Mount` descriptions; mounting them in order on one
                  directory gives the snapshot's filesystem.
    Keys and names share one key space and are arbitrary non-empty strings
    (spaces, slashes, "..", e.g. "extract-12 sha256:ab…"): they are looked up in
    the snapshotter's records and never used as paths. Identifiers that reach the
    disk are internal numbers.

    Lifecycle
        prepare(key, parent) -> ACTIVE  --commit(name, key)--> COMMITTED under name;
                                                               key is gone
        view(key, parent)    -> VIEW    (never committable)
        remove(key|name)     -> gone, once it has no children
    Active snapshots never become parents; committed snapshots never change except
    their labels. `cleanup` reclaims directories no record refers to (left by a crash
    or an interrupted removal); `close` releases the database and is idempotent.

    Errors (`dockyard_common.errors`)
        NotFound            any method given an unknown key/name, or an unknown parent
        AlreadyExists       prepare/view with a key in use; commit to a name in use
        InvalidArgument     empty key/name; parent that is not committed; update of a
                            field path other than `labels` / `labels.<key>`
        FailedPrecondition  mounts() of a committed snapshot; commit of a view or a
                            committed snapshot; remove of a snapshot with children
        ResourceExhausted   prepare/view whose chain cannot be described in mounts the
                            kernel accepts

    Example (an image layer, then a container on top)::

        mounts = await sn.prepare("extract-1 sha256:l1", "")
        # mount, apply the layer tar, unmount
        await sn.commit("sha256:chain1", "extract-1 sha256:l1")
        rootfs = await sn.prepare("ctr-1", "sha256:chain1", labels={"x": "y"})
        ...
        await sn.remove("ctr-1")
    """

    @property
    def name(self) -> str:
        """The snapshotter's name as clients select it ("overlayfs", "native")."""
        ...

    async def stat(self, key: str) -> Info:
        """Info of any snapshot by key or name. NotFound if absent."""

        ...

    async def update(self, info: Info, fieldpaths: list[str] | None = None) -> Info:
        """Update the mutable fields (labels only) of `info.name`; return the new Info.

        With no field paths the labels are replaced by `info.labels`; "labels"
        does the same; "labels.<k>" sets label k to `info.labels[k]`, or removes
        it when absent or empty. Other paths: InvalidArgument. `updated_at`
        becomes now; every other field of `info` is ignored.
        """
        ...

    async def usage(self, key: str) -> Usage:
        """Usage of the snapshot excluding its parents.

        Measured on disk for active snapshots (may take time proportional to the
        size); recorded at commit time for committed ones; zero for views, which
        own no changes.
        """
        ...

    async def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or view, as `prepare`/`view` returned.

        FailedPrecondition for a committed snapshot, NotFound if absent.
        """
        ...

    async def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        """Create an active snapshot `key` on top of committed `parent`; return its mounts.

        Mounted, it starts with the parent's content; writes to it are captured
        as this snapshot's changes.
        """
        ...

    async def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        """Like `prepare`, but read-only mounts and the result can never be committed."""
        ...

    async def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        """Turn active snapshot `key` into committed snapshot `name`, same parent.

        `key` no longer exists afterwards. The committed snapshot's labels are
        `labels` (the active snapshot's labels are not inherited).
        """
        ...

    async def remove(self, key: str) -> None:
        """Remove a snapshot of any kind and its data; children must be removed first."""
        ...

    def walk(self, filter_fn: WalkFilter | None = None) -> AsyncIterator[Info]:
        """Yield the Info of every snapshot for which `filter_fn` (if given) is true.

        The listing is a consistent snapshot of the records taken when iteration
        starts; order is unspecified.
        """
        ...

    async def cleanup(self) -> None:
        """Remove directories under the root that belong to no snapshot record."""
        ...

    async def close(self) -> None:
        """Release the database and workers. Idempotent; other calls fail afterwards."""
        ...
