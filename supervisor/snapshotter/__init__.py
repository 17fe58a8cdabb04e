"""Snapshotters: filesystem snapshots described as mounts (see `base.Snapshotter`)."""

from .base import Info, Kind, Mount, Snapshotter, Usage
from .native import NativeSnapshotter
from .overlay import OverlaySnapshotter, overlay_supported

__all__ = [
    "Info",
    "Kind",
    "Mount",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "Snapshotter",
    "Usage",
    "overlay_supported",
]
