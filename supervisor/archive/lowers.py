"""What the lower layers of an overlay show at a path, looked up as overlayfs would.

Applying a layer straight into an overlay upperdir, the upperdir holds only this layer's
changes. Two things need the merged view of the lowers below it:

- a missing parent must get the attributes of the directory it will shadow (containerd's
  WithParents), or the merged view would show a 0755 root-owned directory instead;
- a parent that is a symlink in a lower layer (usrmerge's `lib -> usr/lib`) must be
  followed, not shadowed by a new directory, or `/lib` would lose its contents.

Lookup rules (overlayfs): lowers are searched topmost first; the first that has an entry
at a path decides its type; a whiteout (0/0 char device) or a non-directory hides that
name in every lower below; directories merge down to (and including) the first opaque
one. A directory this layer made opaque hides the lowers below it. Lowers are trusted,
immutable snapshot directories; their contents are not: every lookup goes one verified
directory at a time and never follows a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from dockyard_common.rootpath import Canonical

OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"


class LowerView:
    """The merged view of overlay lowerdirs (topmost first)."""

    def __init__(self, lowers: Sequence[Path]) -> None:
        self._lowers = [os.fspath(p) for p in lowers]
        # Canonical dirs whose lowers are visible (topmost first); lowers never change.
        self._visible: dict[Canonical, list[str]] = {(): self._lowers}
        # Directories of the upperdir this apply made opaque.
        self.opaque_upper: set[Canonical] = set()

    def entry(self, canonical: Canonical) -> tuple[str, os.stat_result] | None:
        """(path, lstat) of what the lowers show at `canonical`, or None if nothing."""
        if not canonical or any(canonical[:i] in self.opaque_upper for i in range(1, len(canonical))):
            return None
        for lower in self._visible_dirs(canonical[:-1]):
            path = os.path.join(lower, *canonical)
            st = _lstat(path)
            if st is None:
                continue
            if _is_whiteout(st):
                return None
            return path, st
        return None

    def symlink_target(self, canonical: Canonical) -> str | None:
        """The target of the symlink the lowers show at `canonical`, if that is one."""
        found = self.entry(canonical)
        if found is None or not stat.S_ISLNK(found[1].st_mode):
            return None
        return os.readlink(found[0])

    def _visible_dirs(self, canonical: Canonical) -> list[str]:
        """Lowers in which `canonical` is a directory that shows through, topmost first."""
        cached = self._visible.get(canonical)
        if cached is not None:
            return cached
        out: list[str] = []
        for lower in self._visible_dirs(canonical[:-1]):
            # Every ancestor is a directory in this lower (it is visible there), so the
            # path walks no symlink but possibly the last component, which lstat keeps.
            path = os.path.join(lower, *canonical)
            st = _lstat(path)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-directory hides the name in the lowers below
            out.append(lower)
            if _is_opaque(path):
                break
        self._visible[canonical] = out
        return out


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
