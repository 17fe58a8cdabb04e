"""Overlay directories out of mount options (dockyard_common.mountopts.overlay_dirs), as the shim's
missing-path message and the supervisor's differ read them."""

from __future__ import annotations

from dockyard_common.mountopts import OverlayDirs, overlay_dirs
from dockyard_common.mounts import readonly_view
from dockyard_common.types import Mount


def test_the_snapshotters_options() -> None:
    opts = ["index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"]
    dirs = overlay_dirs(opts)
    assert dirs == OverlayDirs("/s/3/fs", "/s/3/work", ("/s/2/fs", "/s/1/fs"))
    assert dirs.all == ["/s/3/work", "/s/3/fs", "/s/2/fs", "/s/1/fs"]
    assert readonly_view([Mount("overlay", "overlay", options=opts)]) == [
        Mount("overlay", "overlay", options=["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs"])]


def test_a_view_and_odd_options() -> None:
    view = overlay_dirs(["index=off", "lowerdir=/a:/b"])
    assert (view.upper, view.work, view.lowers, view.all) == (None, None, ("/a", "/b"), ["/a", "/b"])
    view_mount = Mount("overlay", "overlay", options=["lowerdir=/a:/b"])
    assert readonly_view([view_mount]) == [view_mount]
    bind = Mount("bind", "/s/1/fs", options=["rbind", "rw"])
    assert readonly_view([bind]) == [Mount("bind", "/s/1/fs", options=["rbind", "ro"])]
    assert overlay_dirs(["lowerdir=/old", "lowerdir=/new::"]).lowers == ("/new",)  # the last one wins
    assert overlay_dirs(["ro", "rbind"]) == OverlayDirs()
