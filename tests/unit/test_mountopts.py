"""Overlay directories out of mount options (shim.init.mountopts.overlay_dirs), as the shim's
missing-path message and the supervisor's differ read them."""

from __future__ import annotations

from pathlib import Path

from dockyard_common.types import Mount
from shim.init.mountopts import OverlayDirs, overlay_dirs
from supervisor.mounts import overlay_dirs as host_overlay_dirs


def test_the_snapshotters_options() -> None:
    opts = ["index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"]
    dirs = overlay_dirs(opts)
    assert dirs == OverlayDirs("/s/3/fs", "/s/3/work", ("/s/2/fs", "/s/1/fs"))
    assert dirs.all == ["/s/3/work", "/s/3/fs", "/s/2/fs", "/s/1/fs"]
    assert host_overlay_dirs(Mount("overlay", "overlay", options=opts)) == (
        Path("/s/3/fs"), [Path("/s/2/fs"), Path("/s/1/fs")])


def test_a_view_and_odd_options() -> None:
    view = overlay_dirs(["index=off", "lowerdir=/a:/b"])
    assert (view.upper, view.work, view.lowers, view.all) == (None, None, ("/a", "/b"), ["/a", "/b"])
    view_mount = Mount("overlay", "overlay", options=["lowerdir=/a:/b"])
    assert host_overlay_dirs(view_mount) == (None, [Path("/a"), Path("/b")])
    assert overlay_dirs(["lowerdir=/old", "lowerdir=/new::"]).lowers == ("/new",)  # the last one wins
    assert overlay_dirs(["ro", "rbind"]) == OverlayDirs()
