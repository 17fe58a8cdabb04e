"""The daemon's image transfer engine in one object: import, export, unpack, inspect, check.

    transfer = ImageTransfer(content, snapshots, images, leases, differ, "overlayfs", collector.schedule)
    async for event in transfer.importer.run(ns, chunks, ImportOptions(unpack=True)): ...

`on_release` is called whenever a temporary lease is deleted (the collector may have work).
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.differ import Differ
from supervisor.images.exporter import Exporter
from supervisor.images.importer import Importer
from supervisor.images.inspect import Inspector
from supervisor.images.unpack import Unpacker
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.images import ImageStore
from supervisor.metadata.leases import LeaseStore
from supervisor.metadata.snapshots import SnapshotStore


class ImageTransfer:
    def __init__(self, content: NamespacedContentStore, snapshots: SnapshotStore, images: ImageStore,
                 leases: LeaseStore, differ: Differ, default_snapshotter: str,
                 on_release: Callable[[], None] = lambda: None) -> None:
        self.default_snapshotter = default_snapshotter
        self.unpacker = Unpacker(content, snapshots, differ, leases, on_release)
        self.importer = Importer(content, images, leases, self.unpacker, default_snapshotter, on_release)
        self.exporter = Exporter(content, images)
        self.inspector = Inspector(content, images, snapshots)
        self.images = images
