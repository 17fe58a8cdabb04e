"""Performing mount descriptions in the daemon, for work that needs a tree to look at.

Snapshotters return mounts as data; the differ mounts them here, in a private temp dir,
and always unmounts. mount(8) does the bind-then-remount-ro dance a ro bind needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from supervisor.errors import Internal, InvalidArgument
from supervisor.snapshotter.base import Mount


def _run(args: list[str]) -> None:
    res = subprocess.run(args, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise Internal(f"{' '.join(args)}: {res.stderr.strip() or f'exit {res.returncode}'}")


def mount_all(mounts: Sequence[Mount], target: Path, readonly: bool = False) -> None:
    for m in mounts:
        if m.target:
            raise InvalidArgument(f"mount with a target ({m.target}) cannot be used here")
        options = [o for o in m.options if o not in ("rw", "ro")]
        options.append("ro" if readonly or "ro" in m.options else "rw")
        _run(["mount", "-t", m.type, "-o", ",".join(options), m.source, str(target)])


def unmount_all(target: Path) -> None:
    # Lazy only as a last resort: a busy tree must not leave the daemon stuck.
    res = subprocess.run(["umount", "--recursive", str(target)], capture_output=True, text=True, check=False)
    if res.returncode != 0 and os.path.ismount(target):
        _run(["umount", "--lazy", "--recursive", str(target)])


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
    upper: Path | None = None
    lowers: list[Path] = []
    for opt in m.options:
        key, _, value = opt.partition("=")
        if key == "upperdir":
            upper = Path(value)
        elif key == "lowerdir":
            lowers = [Path(p) for p in value.split(":") if p]
    return upper, lowers
