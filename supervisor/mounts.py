"""Performing mount descriptions in the daemon, for work that needs a tree to look at.

Snapshotters return mounts as data; the differ mounts them here, in a private temp dir,
and always unmounts. The shim's rootfs code does the mount(2) calls (one implementation of
option parsing, ro bind remounts and target resolution for both).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from dockyard_common import linux as L
from dockyard_common.errors import Internal
from dockyard_common.types import Mount
from shim.init.mountopts import overlay_dirs as parse_overlay_dirs
from shim.init.rootfs import mount_rootfs, mountinfo


def mount_all(mounts: Sequence[Mount], target: Path, readonly: bool = False) -> None:
    if readonly:
        mounts = [replace(m, options=[*(o for o in m.options if o != "rw"), "ro"]) for m in mounts]
    try:
        mount_rootfs(mounts, str(target))
    except BaseException as exc:
        unmount_all(target)  # what the earlier mounts of the list put there
        if not isinstance(exc, OSError):
            raise  # already one of ours (e.g. NotFound naming a missing layer dir)
        desc = ", ".join(f"{m.type} {m.source}" for m in mounts)
        raise Internal(f"mount {desc} on {target}: {exc.strerror or exc}") from None


def unmount_all(target: Path) -> None:
    """Unmount `target` and everything mounted below it, deepest first."""
    top = os.path.realpath(target)
    points = [p for p, _, _ in mountinfo() if p == top or p.startswith(top + "/")]
    for point in reversed(points):
        try:
            L.umount2(point)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # gone already (unmounted with a parent)
                continue
            # Lazy only as a last resort: a busy tree must not leave the daemon stuck.
            L.umount2(point, L.MNT_DETACH)


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], tmp_root: Path, readonly: bool = False) -> Iterator[Path]:
    """Mount `mounts` on a fresh directory under `tmp_root`; unmount and remove it after."""
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = Path(tempfile.mkdtemp(prefix="mnt-", dir=tmp_root))
    try:
        mount_all(mounts, target, readonly)
        yield target
    finally:
        unmount_all(target)
        shutil.rmtree(target, ignore_errors=True) if not os.path.ismount(target) else None


def overlay_dirs(m: Mount) -> tuple[Path | None, list[Path]]:
    """(upperdir, lowerdirs topmost first) of an overlay mount description."""
    dirs = parse_overlay_dirs(m.options)
    return (Path(dirs.upper) if dirs.upper is not None else None), [Path(p) for p in dirs.lowers]
