"""Snapshotters: filesystem snapshots described as mounts (see `base.Snapshotter`)."""

from .base import Info, Kind, Snapshotter, Usage
from .native import NativeSnapshotter
from .overlay import OverlaySnapshotter, overlay_supported

__all__ = [
    "Info",
    "Kind",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "Snapshotter",
    "Usage",
    "overlay_supported",
]
