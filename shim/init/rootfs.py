"""Building the container's root filesystem: the kernel side of the mount steps of `plan.py`.

Everything here runs inside the container's (not yet pivoted) mount namespace, in the init
process, as (container) root. Mount destinations are resolved inside the rootfs as the container
would see them (`dockyard_common.rootpath.secure_join`): an absolute symlink is followed from the
rootfs, and any path that climbs out of the rootfs (``..`` past its top, through a symlink or not)
is refused with InvalidArgument. The mounts themselves are made by `dockyard_common.mounts` (on
a verified O_PATH fd of the target), which also mounts the snapshot's mounts (`mount_rootfs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.mountinfo import mountinfo
from dockyard_common.mounts import bind, locked_flags, mount_at, set_tree_attrs
from dockyard_common.rootpath import NotADirectory, RootDir, secure_join
from shim.init.plan import MountSpec
from shim.init.spec import Device


def set_propagation(target: str, flags: int) -> None:
    L.mount(None, target, None, flags)


def isolate_rootfs_parent(rootfs: str) -> None:
    """The mount holding `rootfs` (a copy of the host's, in our new mount namespace) stops sending
    propagation: a slave receives the host's events but the overlay mounted next stays ours.
    A slave rather than private, so host-to-container propagation of binds from it still works.
    Making a private mount a slave leaves it private."""
    L.mount(None, _mount_point_of(rootfs), None, L.MS_SLAVE)


def bind_rootfs(rootfs: str) -> None:
    """Make `rootfs` a mount point whose parent mount is private (pivot_root's requirements)."""
    # The parent mount of the new root must not be shared or pivot_root fails with EINVAL. The
    # rootfs is usually a mount point itself (the snapshot's overlay), and that mount is the
    # parent of the bind below: it, not the directory's, must be private (an rshared root
    # propagation, as a CRI mount with rshared propagation asks, made it shared).
    parent = _mount_point_of(rootfs)
    with contextlib.suppress(OSError):
        L.mount(None, parent, None, L.MS_PRIVATE)
    L.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC)


def _mount_point_of(path: str) -> str:
    best = "/"
    for point, _, _ in mountinfo():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best = point
    return best


# ----- the spec's mounts -----------------------------------------------------------------------------


def mount_spec(step: MountSpec, *, in_userns: bool, new_cgroupns: bool) -> None:
    rootfs = os.path.realpath(step.rootfs)
    m, opts = step.mount, step.options
    if step.kind == "bind":
        if not os.path.exists(step.source):
            raise NotFound(f"mount {m.destination}: source {step.source}")
        dest = secure_join(rootfs, m.destination, create="dir" if os.path.isdir(step.source) else "file")
        bind(rootfs, step.source, dest, recursive=opts.recursive, flags=opts.flags, propagation=opts.propagation,
             attr_set=opts.attr_set, attr_clr=opts.attr_clr)
        return
    dest = secure_join(rootfs, m.destination, create="dir")
    if step.kind == "cgroup":
        _mount_cgroup(rootfs, dest, opts.flags, new_cgroupns=new_cgroupns)
        return
    try:
        mount_at(rootfs, dest, step.source, m.type, opts.flags, opts.data or None)
    except PermissionError:
        if m.type != "sysfs" or not in_userns:
            raise
        # sysfs needs a network namespace owned by our user namespace; without one runc binds
        # the host's /sys instead.
        bind(rootfs, "/sys", dest, recursive=True, flags=opts.flags)
    for p in opts.propagation:
        mount_at(rootfs, dest, None, None, p)
    if opts.recursive_attrs:
        set_tree_attrs(rootfs, dest, opts.attr_set, opts.attr_clr)


def _own_cgroups() -> list[tuple[str, str]]:
    """(controllers, path) per line of /proc/self/cgroup."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out.append((controllers, path))
    return out


def _mount_cgroup(rootfs: str, dest: str, flags: int, *, new_cgroupns: bool) -> None:
    """The spec's "cgroup" mount: the container's own cgroups, read-only when asked."""
    flags &= ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)
    own = _own_cgroups()
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        try:
            # In a cgroup namespace this shows the container's cgroup as the root.
            mount_at(rootfs, dest, "cgroup", "cgroup2", flags)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EBUSY) or new_cgroupns:
                raise
            cg_path = next((p for c, p in own if c == ""), "/")
            bind(rootfs, "/sys/fs/cgroup" + cg_path.rstrip("/"), dest, recursive=True, flags=flags)
        return
    # cgroup v1 (or hybrid): a tmpfs holding one directory per hierarchy, as runc does.
    hierarchies = [(p, t, o) for p, t, o in mountinfo() if t in ("cgroup", "cgroup2")]
    with open("/proc/cgroups") as f:
        subsystems = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
    tmpfs_flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    mount_at(rootfs, dest, "tmpfs", "tmpfs", tmpfs_flags, "mode=755")
    seen: set[str] = set()
    for point, fstype, superopts in hierarchies:
        name = os.path.basename(point)
        if name in seen:
            continue
        seen.add(name)
        sub = secure_join(rootfs, os.path.join(dest[len(rootfs):] or "/", name), create="dir")
        controllers = [o for o in superopts.split(",") if o in subsystems or o.startswith("name=")]
        if new_cgroupns:
            mount_at(rootfs, sub, "cgroup", fstype, flags, ",".join(controllers) if fstype == "cgroup" else None)
            continue
        wanted = "" if fstype == "cgroup2" else ",".join(sorted(controllers))
        v1_path = next((p for c, p in own if ",".join(sorted(c.split(","))) == wanted), None)
        if v1_path is not None:
            bind(rootfs, point + v1_path.rstrip("/"), sub, recursive=False, flags=flags)
    if flags & L.MS_RDONLY:
        mount_at(rootfs, dest, None, None, L.MS_REMOUNT | L.MS_RDONLY | tmpfs_flags)


# ----- devices -------------------------------------------------------------------------------------

_DEV_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def create_devices(rootfs: str, devices: Sequence[Device], *, bind_from_host: bool) -> None:
    rootfs = os.path.realpath(rootfs)
    for d in devices:
        parent = secure_join(rootfs, os.path.dirname(d.path), create="dir")
        dest = os.path.join(parent, os.path.basename(d.path))
        mode = 0o666 if d.file_mode is None else d.file_mode
        if bind_from_host:
            # mknod is refused in a user namespace: bind the host's node onto an empty file.
            if not os.path.lexists(dest):
                os.close(os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o000))
            mount_at(rootfs, dest, d.path, None, L.MS_BIND)
            continue
        if os.path.lexists(dest):
            os.unlink(dest)
        L.mknod(dest, _DEV_TYPES[d.type] | mode, d.major, d.minor)
        os.chown(dest, d.uid or 0, d.gid or 0, follow_symlinks=False)
        os.chmod(dest, mode)  # mknod applied the umask


def dev_symlinks(rootfs: str) -> None:
    dev = os.path.join(os.path.realpath(rootfs), "dev")
    if not os.path.isdir(dev) or os.path.islink(dev):
        return
    links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
             ("/proc/self/fd/2", "stderr")]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    for target, name in links:
        with contextlib.suppress(FileExistsError):
            os.symlink(target, os.path.join(dev, name))
    # /dev/ptmx must open the container's devpts instance (newinstance), not a host node.
    ptmx = os.path.join(dev, "ptmx")
    if os.path.lexists(ptmx):
        os.unlink(ptmx)
    os.symlink("pts/ptmx", ptmx)


# ----- switching root --------------------------------------------------------------------------------


def pivot_root(rootfs: str) -> None:
    rootfs = os.path.realpath(rootfs)
    fstype = next((t for p, t, _ in reversed(mountinfo()) if p == rootfs), "")
    if fstype in ("ramfs", "rootfs"):
        # pivot_root cannot move the initramfs root: move the mount over / and chroot instead.
        os.chdir(rootfs)
        L.mount(rootfs, "/", None, L.MS_MOVE)
        L.chroot(".")
        os.chdir("/")
        return
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        # pivot_root(".", ".") stacks the old root on top of the new one, so no put_old
        # directory is needed inside the container.
        os.fchdir(new)
        L.pivot_root(".", ".")
        os.fchdir(old)
        # The old root may be shared with the host: make it rslave so the unmount below does not
        # propagate there (which would unmount the host's filesystems).
        L.mount(None, ".", None, L.MS_SLAVE | L.MS_REC)
        L.umount2(".", L.MNT_DETACH)
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def make_cwd(cwd: str) -> None:
    """Make the process's cwd and its missing parents (0755), as runc's MkdirAll in the jail does.

    Runs after pivot_root, so `/` is the container's root; the walk still opens each component
    without following symlinks and expands them itself, so nothing made lands outside the root
    even through a mount of the host's. A file in the way is InvalidArgument.
    """
    try:
        with RootDir("/", "the container root") as root:
            made = root.resolve_dir(cwd.split("/"), create=True)
    except NotADirectory as exc:
        raise InvalidArgument(f"spec: process.cwd {cwd!r}: /{'/'.join(exc.canonical)} is not a directory") from None
    except InvalidArgument as exc:  # a symlink loop, an empty symlink
        raise InvalidArgument(f"spec: process.cwd {cwd!r}: {exc.message}") from None
    except OSError as e:
        raise InvalidArgument(f"spec: process.cwd {cwd!r}: cannot be made: {e.strerror}") from None
    if made is not None:
        os.close(made.fd)


def readonly_root() -> None:
    L.mount(None, "/", None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | locked_flags("/"))


def readonly_path(path: str) -> None:
    if not os.path.lexists(path):
        return
    L.mount(path, path, None, L.MS_BIND | L.MS_REC)
    L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | locked_flags(path))


def mask_path(path: str) -> None:
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        L.mount("tmpfs", path, "tmpfs", L.MS_RDONLY, None)
    else:
        L.mount("/dev/null", path, None, L.MS_BIND)
