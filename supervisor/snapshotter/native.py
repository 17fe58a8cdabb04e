"""The native snapshotter: every active snapshot is a full copy of its parent.

Works on any filesystem and needs no overlayfs, at the price of copying the
parent's tree on `prepare` (containerd's `snapshots/native`). Mounts are always
bind mounts of one directory:

    active          bind <root>/snapshots/<id>/fs         [rw, rbind]
    view, parent    bind <root>/snapshots/<parent>/fs     [ro, rbind]   (no copy)
    view, no parent bind <root>/snapshots/<id>/fs         [ro, rbind]   (empty)
"""

from __future__ import annotations

import os

from dockyard_common.types import Kind, Mount, Usage

from .directory import DirectorySnapshotter
from .storage import Record
from .tree import copy_tree, diff_usage, disk_usage


class NativeSnapshotter(DirectorySnapshotter):
    name = "native"

    def _populate(self, staged: str, kind: Kind, parent_ids: tuple[int, ...], labels: dict[str, str]) -> None:
        if kind == Kind.ACTIVE and parent_ids:
            # The parent is committed, hence immutable: copying it needs no lock.
            copy_tree(self._fs(parent_ids[0]), os.path.join(staged, "fs"))

    def _mounts_for(self, rec: Record) -> list[Mount]:
        if rec.kind == Kind.VIEW:
            source = self._fs(rec.parent_ids[0]) if rec.parent_ids else self._fs(rec.id)
            return [Mount(type="bind", source=source, options=["ro", "rbind"])]
        return [Mount(type="bind", source=self._fs(rec.id), options=["rw", "rbind"])]

    def _measure(self, rec: Record) -> Usage:
        # The copy of the parent is not this snapshot's usage: count what differs.
        if rec.parent_ids:
            return diff_usage(self._fs(rec.id), self._fs(rec.parent_ids[0]))
        return disk_usage(self._fs(rec.id))
