"""mount(8)-style option strings → mount(2) flags and data (pure, unit-testable).

`parse_mount_options(["nosuid", "rbind", "ro", "mode=755"])` gives the flags to set, the
propagation changes to apply afterwards (they need their own mount(2) call), and the data
string passed to the filesystem. Unknown options are filesystem data, as mount(8) treats them.
runc's recursive options ("rro", "rnosuid", ...) become mount attributes set on the whole tree
of the new mount with mount_setattr(2) afterwards (`attr_set`, `attr_clr`).
Shared by the shim (container mounts) and the daemon (mounting snapshots to diff or apply them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument

# option -> (clear?, flag): "ro" sets MS_RDONLY, "rw" clears it.
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, L.MS_SYNCHRONOUS),
    "atime": (True, L.MS_NOATIME),
    "bind": (False, L.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, L.MS_NODEV),
    "diratime": (True, L.MS_NODIRATIME),
    "dirsync": (False, L.MS_DIRSYNC),
    "exec": (True, L.MS_NOEXEC),
    "lazytime": (False, L.MS_LAZYTIME),
    "mand": (False, L.MS_MANDLOCK),
    "noatime": (False, L.MS_NOATIME),
    "nodev": (False, L.MS_NODEV),
    "nodiratime": (False, L.MS_NODIRATIME),
    "noexec": (False, L.MS_NOEXEC),
    "nolazytime": (True, L.MS_LAZYTIME),
    "nomand": (True, L.MS_MANDLOCK),
    "norelatime": (True, L.MS_RELATIME),
    "nostrictatime": (True, L.MS_STRICTATIME),
    "nosuid": (False, L.MS_NOSUID),
    "nosymfollow": (False, L.MS_NOSYMFOLLOW),
    "rbind": (False, L.MS_BIND | L.MS_REC),
    "relatime": (False, L.MS_RELATIME),
    "remount": (False, L.MS_REMOUNT),
    "ro": (False, L.MS_RDONLY),
    "rw": (True, L.MS_RDONLY),
    "strictatime": (False, L.MS_STRICTATIME),
    "suid": (True, L.MS_NOSUID),
    "sync": (False, L.MS_SYNCHRONOUS),
}

PROPAGATION_FLAGS: dict[str, int] = {
    "private": L.MS_PRIVATE,
    "rprivate": L.MS_PRIVATE | L.MS_REC,
    "shared": L.MS_SHARED,
    "rshared": L.MS_SHARED | L.MS_REC,
    "slave": L.MS_SLAVE,
    "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE,
    "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}

# runc's recursive options -> (clear?, MOUNT_ATTR_*): applied to the mount and every mount below
# it (a plain "ro" on an rbind leaves the sub-mounts writable). runc's atime ones are not here.
RECURSIVE_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, L.MOUNT_ATTR_RDONLY),
    "rrw": (True, L.MOUNT_ATTR_RDONLY),
    "rnosuid": (False, L.MOUNT_ATTR_NOSUID),
    "rsuid": (True, L.MOUNT_ATTR_NOSUID),
    "rnodev": (False, L.MOUNT_ATTR_NODEV),
    "rdev": (True, L.MOUNT_ATTR_NODEV),
    "rnoexec": (False, L.MOUNT_ATTR_NOEXEC),
    "rexec": (True, L.MOUNT_ATTR_NOEXEC),
    "rnosymfollow": (False, L.MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, L.MOUNT_ATTR_NOSYMFOLLOW),
}

# runc's own extensions that are no filesystem data; "tmpcopyup" is accepted and ignored.
_IGNORED = frozenset({"tmpcopyup"})
_UNSUPPORTED = frozenset({"idmap", "ridmap", "rnoatime", "ratime", "rstrictatime", "rnostrictatime", "rrelatime",
                          "rnorelatime", "rnodiratime", "rdiratime"})

# Flags a read-only bind remount must repeat (the kernel refuses, in a user namespace, to drop
# flags locked on the source mount), and statvfs f_flag bits they come from.
ST_TO_MS: dict[int, int] = {
    0x1: L.MS_RDONLY,  # ST_RDONLY
    0x2: L.MS_NOSUID,  # ST_NOSUID
    0x4: L.MS_NODEV,  # ST_NODEV
    0x8: L.MS_NOEXEC,  # ST_NOEXEC
    0x400: L.MS_NOATIME,  # ST_NOATIME
    0x800: L.MS_NODIRATIME,  # ST_NODIRATIME
    0x1000: L.MS_RELATIME,  # ST_RELATIME
}


@dataclass(frozen=True)
class MountOptions:
    flags: int = 0
    propagation: tuple[int, ...] = ()
    data: str = ""
    attr_set: int = 0  # MOUNT_ATTR_* for the whole tree (the recursive options), after the mount
    attr_clr: int = 0

    @property
    def recursive_attrs(self) -> bool:
        return bool(self.attr_set or self.attr_clr)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & L.MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & L.MS_REC)

    def remount_flags(self) -> int:
        """Flags a bind mount needs re-applied with MS_REMOUNT (a bind ignores them at first)."""
        return self.flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)


def parse_mount_options(options: tuple[str, ...] | list[str], where: str = "mount") -> MountOptions:
    flags = attr_set = attr_clr = 0
    propagation: list[int] = []
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in RECURSIVE_ATTRS:
            # Both kept, as runc keeps them: the kernel applies the clear, then the set ("rro" wins
            # over "rrw", in whichever order).
            clear, attr = RECURSIVE_ATTRS[opt]
            if clear:
                attr_clr |= attr
            else:
                attr_set |= attr
        elif opt in PROPAGATION_FLAGS:
            propagation.append(PROPAGATION_FLAGS[opt])
        elif opt in _IGNORED:
            continue
        elif opt in _UNSUPPORTED:
            raise InvalidArgument(f"{where}: mount option {opt!r} is not supported")
        elif opt:
            data.append(opt)
    return MountOptions(flags=flags, propagation=tuple(propagation), data=",".join(data), attr_set=attr_set,
                        attr_clr=attr_clr)


@dataclass(frozen=True)
class OverlayDirs:
    """The directories an overlay mount's options name."""

    upper: str | None = None
    work: str | None = None
    lowers: tuple[str, ...] = ()  # topmost first

    @property
    def all(self) -> list[str]:
        """Every directory named, in the order the overlay snapshotter writes them."""
        return [*(d for d in (self.work, self.upper) if d is not None), *self.lowers]


def overlay_dirs(options: Sequence[str]) -> OverlayDirs:
    """lowerdir/upperdir/workdir out of overlay mount options (a later one wins, as in the kernel)."""
    found: dict[str, str] = {}
    for opt in options:
        key, _, value = opt.partition("=")
        if key in ("lowerdir", "upperdir", "workdir"):
            found[key] = value
    lowers = tuple(p for p in found.get("lowerdir", "").split(":") if p)
    return OverlayDirs(found.get("upperdir"), found.get("workdir"), lowers)


def statvfs_to_ms(f_flag: int) -> int:
    out = 0
    for st, ms in ST_TO_MS.items():
        if f_flag & st:
            out |= ms
    return out
