"""Performing mount descriptions (`types.Mount`): the mount(2) side, for the shim and the daemon.

The shim mounts a snapshot's mounts as a container's rootfs (`mount_rootfs`, in the init's mount
namespace; overlay layers ID-mapped when the snapshot asks, see `idmap`) and its spec's mounts
(`mount_at`, `bind`); the daemon mounts snapshots in a private
temp dir to look at a tree (the differ: `mounted`, always undone). One implementation of option
parsing (`mountopts`), read-only bind remounts and target resolution (`rootpath`) for both.

Every mount(2) is made on ``/proc/self/fd/N`` of an O_PATH descriptor of the target, after checking
where that descriptor really is (`rootpath.opened_in_root`), so nothing can swap a symlink in
between.
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

from dockyard_common import idmap
from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument, NotFound, from_os_error
from dockyard_common.mountinfo import mountinfo
from dockyard_common.mountopts import overlay_dirs, parse_mount_options, statvfs_to_ms
from dockyard_common.rootpath import opened_in_root, secure_join
from dockyard_common.types import Mount

# Flags a remount must repeat in a user namespace: the kernel locks them on mounts inherited
# from a more privileged namespace and refuses a remount that would clear them.
LOCKABLE = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_NOATIME | L.MS_NODIRATIME | L.MS_RELATIME


def locked_flags(path: str) -> int:
    return statvfs_to_ms(os.statvfs(path).f_flag) & LOCKABLE


def mount_at(root: str, dest: str, source: str | None, fstype: str | None, flags: int,
             data: str | None = None) -> None:
    """mount(2) onto `dest` (a host path inside `root`) through a verified O_PATH fd.

    The fd is opened anew for every call: once something is mounted on `dest`, only a fresh
    lookup reaches the new mount (a remount or propagation change must address it, not the
    directory underneath).
    """
    with opened_in_root(root, dest) as target:
        if flags & L.MS_REMOUNT and flags & L.MS_BIND:
            flags |= locked_flags(target)
        L.mount(source, target, fstype, flags, data)


def bind(root: str, source: str, dest: str, *, recursive: bool, flags: int,
         propagation: Sequence[int] = (), attr_set: int = 0, attr_clr: int = 0) -> None:
    mount_at(root, dest, source, None, L.MS_BIND | (L.MS_REC if recursive else 0))
    extra = flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)
    if extra:
        # A bind ignores every other flag; they take effect on a remount of the new mount.
        mount_at(root, dest, None, None, L.MS_BIND | L.MS_REMOUNT | extra)
    for p in propagation:
        mount_at(root, dest, None, None, p)
    if attr_set or attr_clr:
        set_tree_attrs(root, dest, attr_set, attr_clr)


def set_tree_attrs(root: str, dest: str, attr_set: int, attr_clr: int = 0) -> None:
    """MOUNT_ATTR_* set and cleared on the mount at `dest` and every mount below it (runc's "rro"
    and kin): a remount changes one mount only, so an rbind's sub-mounts would keep theirs."""
    with opened_in_root(root, dest) as target:
        L.mount_setattr(L.AT_FDCWD, target, L.AT_RECURSIVE, attr_set, attr_clr)


def mount_rootfs(mounts: Sequence[Mount], rootfs: str) -> None:
    """Mount the snapshot's mounts, in order, onto `rootfs` (their targets are relative to it)."""
    rootfs = os.path.realpath(rootfs)
    for m in mounts:
        target = secure_join(rootfs, m.target, create="dir") if m.target.strip("/") else rootfs
        options, uids, gids = idmap.split_options(m.options)
        if uids and m.type != "overlay":
            raise InvalidArgument(f"rootfs mount {m.type} {m.source}: uidmap/gidmap are for overlay mounts")
        try:
            with idmap.mapped_lowers(options, uids, gids) if uids else contextlib.nullcontext(options) as options:
                _mount_one(rootfs, target, m, options)
        except FileNotFoundError:
            # Typically a snapshot removed after its mounts were read: name what is gone.
            missing = _missing_paths(m)
            if not missing:
                raise
            raise NotFound(f"rootfs mount {m.type}: {', '.join(missing)} does not exist") from None


def _mount_one(rootfs: str, target: str, m: Mount, options: list[str]) -> None:
    opts = parse_mount_options(options, f"rootfs mount {m.type} {m.source}")
    if m.type == "bind" or opts.is_bind:
        bind(rootfs, m.source, target, recursive=opts.recursive, flags=opts.flags,
             propagation=opts.propagation, attr_set=opts.attr_set, attr_clr=opts.attr_clr)
        return
    mount_at(rootfs, target, m.source, m.type, opts.flags, opts.data or None)
    for p in opts.propagation:
        mount_at(rootfs, target, None, None, p)
    if opts.recursive_attrs:
        set_tree_attrs(rootfs, target, opts.attr_set, opts.attr_clr)


def _missing_paths(m: Mount) -> list[str]:
    """The host paths a rootfs mount names (bind source, overlay layer dirs) that do not exist."""
    paths = [m.source] if m.source.startswith("/") else []
    paths += overlay_dirs(m.options).all
    return [p for p in paths if not os.path.exists(p)]


def readonly_view(mounts: Sequence[Mount]) -> list[Mount]:
    """containerd's read-only form of a mount list (its mount.readonlyMounts): what reads a
    snapshot in use (a running container's) mounts, never its upperdir and workdir again.

    An overlay drops upperdir and workdir and stacks the upperdir on top of its lowers, so the
    walk sees the inode numbers (hard links) containerd's differ sees; others get "ro"."""
    out = []
    for m in mounts:
        if m.type != "overlay":
            out.append(replace(m, options=[*(o for o in m.options if o not in ("rw", "ro")), "ro"]))
            continue
        dirs = overlay_dirs(m.options)
        options = [o for o in m.options if not o.startswith(("upperdir=", "workdir=", "lowerdir="))]
        lowers = [dirs.upper, *dirs.lowers] if dirs.upper is not None else list(dirs.lowers)
        out.append(replace(m, options=[*options, f"lowerdir={':'.join(lowers)}"] if lowers else options))
    return out


# ----- in the daemon: mount, look, always unmount ----------------------------------------------------


def mount_all(mounts: Sequence[Mount], target: Path, readonly: bool = False) -> None:
    """`mount_rootfs` on `target`; on failure what the earlier mounts put there is undone and
    an OSError becomes the error kind its errno stands for (`from_os_error`), naming the mounts."""
    # The daemon looks at layers as they are on disk: no ID mapping (and no fork in a thread).
    mounts = [replace(m, options=idmap.split_options(m.options)[0]) for m in mounts]
    if readonly:
        mounts = [replace(m, options=[*(o for o in m.options if o != "rw"), "ro"]) for m in mounts]
    try:
        mount_rootfs(mounts, str(target))
    except BaseException as exc:
        unmount_all(target)  # what the earlier mounts of the list put there
        if not isinstance(exc, OSError):
            raise  # already one of ours (e.g. NotFound naming a missing layer dir)
        desc = ", ".join(f"{m.type} {m.source}" for m in mounts)
        # The kernel's verdict on the mounts, by from_os_error's table: a type it does not know
        # (ENODEV), options it refuses (EINVAL), a missing source (ENOENT) are the mounts' fault
        # (the Diff service takes them from its caller), not the daemon's; the syscall's own
        # text (its Python arguments, a /proc/self/fd path) is ours, so the plain strerror.
        plain = OSError(exc.errno, os.strerror(exc.errno)) if exc.errno else exc
        raise from_os_error(f"mount {desc} on {target}", plain) from None


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


def detach_all(target: Path) -> None:
    """Lazily unmount (MNT_DETACH) `target` and everything below it, deepest first: gone from
    the tree at once, alive while a descriptor still reaches it."""
    top = os.path.realpath(target)
    for point in reversed([p for p, _, _ in mountinfo() if p == top or p.startswith(top + "/")]):
        with contextlib.suppress(OSError):  # EINVAL: gone already with a parent
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
