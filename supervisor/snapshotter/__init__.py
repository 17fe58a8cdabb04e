"""Snapshotters: filesystem snapshots described as mounts (see `base.Snapshotter`)."""

from dockyard_common.types import Info, Kind, Usage

from .base import Snapshotter
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
