"""Building the container's root filesystem: the kernel side of the mount steps of `plan.py`.

Everything here runs inside the container's (not yet pivoted) mount namespace, in the init
process, as (container) root. Mount destinations are resolved inside the rootfs as the container
would see them: an absolute symlink is followed from the rootfs, and any path that climbs out of
the rootfs (``..`` past its top, through a symlink or not) is refused with InvalidArgument. The
resolved path is then opened O_PATH|O_NOFOLLOW and the mount is made on ``/proc/self/fd/N``,
after checking where that fd really is, so nothing can swap a symlink in between.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections import deque
from collections.abc import Iterator, Sequence

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.types import Mount
from shim.init.mountopts import overlay_dirs, parse_mount_options, statvfs_to_ms
from shim.init.plan import MountSpec
from shim.init.spec import Device

_MAX_SYMLINKS = 40
# Flags a remount must repeat in a user namespace: the kernel locks them on mounts inherited
# from a more privileged namespace and refuses a remount that would clear them.
_LOCKABLE = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_NOATIME | L.MS_NODIRATIME | L.MS_RELATIME


# ----- resolving paths inside the rootfs -------------------------------------------------------------


def secure_join(root: str, unsafe: str, *, create: str | None = None) -> str:
    """The host path of container path `unsafe` under `root` (a real, absolute path).

    Symlinks are followed as the container would see them (absolute ones from `root`). Climbing
    above `root` raises InvalidArgument. `create` ("dir" or "file") makes missing components:
    directories on the way, and the last one as a directory or an empty file.
    """
    parts = deque(p for p in unsafe.split("/") if p not in ("", "."))
    stack: list[str] = []
    links = 0
    while parts:
        comp = parts.popleft()
        if comp == "..":
            if not stack:
                raise InvalidArgument(f"path {unsafe!r}: escapes the container root {root}")
            stack.pop()
            continue
        cur = os.path.join(root, *stack, comp)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if create is None:
                # Nothing below a missing component can be a symlink: finish lexically.
                stack.append(comp)
                for p in parts:
                    if p != "..":
                        stack.append(p)
                    elif stack:
                        stack.pop()
                    else:
                        raise InvalidArgument(f"path {unsafe!r}: escapes the container root {root}") from None
                return os.path.join(root, *stack)
            if not parts and create == "file":
                os.close(os.open(cur, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
            else:
                os.mkdir(cur, 0o755)
            stack.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise InvalidArgument(f"path {unsafe!r}: too many levels of symbolic links")
            target = os.readlink(cur)
            if target.startswith("/"):
                stack = []  # absolute: from the container's root, never the host's
            parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"path {unsafe!r}: {os.path.join('/', *stack, comp)} is not a directory")
        stack.append(comp)
    return os.path.join(root, *stack)


@contextlib.contextmanager
def opened_in_root(root: str, host_path: str) -> Iterator[str]:
    """Yield a /proc/self/fd path for `host_path`, verified to lie inside `root`."""
    fd = os.open(host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise InvalidArgument(f"mount target {host_path!r}: is a symbolic link")
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise InvalidArgument(f"mount target {host_path!r}: resolves to {real!r}, outside {root}")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _locked_flags(path: str) -> int:
    return statvfs_to_ms(os.statvfs(path).f_flag) & _LOCKABLE


def _mount_at(root: str, dest: str, source: str | None, fstype: str | None, flags: int,
              data: str | None = None) -> None:
    """mount(2) onto `dest` (a host path inside `root`) through a verified O_PATH fd.

    The fd is opened anew for every call: once something is mounted on `dest`, only a fresh
    lookup reaches the new mount (a remount or propagation change must address it, not the
    directory underneath).
    """
    with opened_in_root(root, dest) as target:
        if flags & L.MS_REMOUNT and flags & L.MS_BIND:
            flags |= _locked_flags(target)
        L.mount(source, target, fstype, flags, data)


def _bind(root: str, source: str, dest: str, *, recursive: bool, flags: int,
          propagation: Sequence[int] = ()) -> None:
    _mount_at(root, dest, source, None, L.MS_BIND | (L.MS_REC if recursive else 0))
    extra = flags & ~(L.MS_BIND | L.MS_REC | L.MS_REMOUNT)
    if extra:
        # A bind ignores every other flag; they take effect on a remount of the new mount.
        _mount_at(root, dest, None, None, L.MS_BIND | L.MS_REMOUNT | extra)
    for p in propagation:
        _mount_at(root, dest, None, None, p)


# ----- the snapshot's mounts -------------------------------------------------------------------------


def mount_rootfs(mounts: Sequence[Mount], rootfs: str) -> None:
    """Mount the snapshot's mounts, in order, onto `rootfs` (their targets are relative to it)."""
    rootfs = os.path.realpath(rootfs)
    for m in mounts:
        target = secure_join(rootfs, m.target, create="dir") if m.target.strip("/") else rootfs
        opts = parse_mount_options(list(m.options), f"rootfs mount {m.type} {m.source}")
        try:
            if m.type == "bind" or opts.is_bind:
                _bind(rootfs, m.source, target, recursive=opts.recursive, flags=opts.flags,
                      propagation=opts.propagation)
            else:
                _mount_at(rootfs, target, m.source, m.type, opts.flags, opts.data or None)
                for p in opts.propagation:
                    _mount_at(rootfs, target, None, None, p)
        except FileNotFoundError:
            # Typically a snapshot removed after its mounts were read: name what is gone.
            missing = _missing_paths(m)
            if not missing:
                raise
            raise NotFound(f"rootfs mount {m.type}: {', '.join(missing)} does not exist") from None


def _missing_paths(m: Mount) -> list[str]:
    """The host paths a rootfs mount names (bind source, overlay layer dirs) that do not exist."""
    paths = [m.source] if m.source.startswith("/") else []
    paths += overlay_dirs(m.options).all
    return [p for p in paths if not os.path.exists(p)]


def set_propagation(target: str, flags: int) -> None:
    L.mount(None, target, None, flags)


def bind_rootfs(rootfs: str) -> None:
    """Make `rootfs` a mount point whose parent mount is private (pivot_root's requirements)."""
    # The parent mount of the new root must not be shared or pivot_root fails with EINVAL.
    parent = _mount_point_of(os.path.dirname(rootfs))
    with contextlib.suppress(OSError):
        L.mount(None, parent, None, L.MS_PRIVATE)
    L.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC)


def mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of every mount of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            out.append((point, rfields[0], rfields[2] if len(rfields) > 2 else ""))
    return out


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
        create = "dir" if os.path.isdir(step.source) else "file"
        dest = secure_join(rootfs, m.destination, create=create)
        _bind(rootfs, step.source, dest, recursive=opts.recursive, flags=opts.flags, propagation=opts.propagation)
        return
    dest = secure_join(rootfs, m.destination, create="dir")
    if step.kind == "cgroup":
        _mount_cgroup(rootfs, dest, opts.flags, new_cgroupns=new_cgroupns)
        return
    try:
        _mount_at(rootfs, dest, step.source, m.type, opts.flags, opts.data or None)
    except PermissionError:
        if m.type != "sysfs" or not in_userns:
            raise
        # sysfs needs a network namespace owned by our user namespace; without one runc binds
        # the host's /sys instead.
        _bind(rootfs, "/sys", dest, recursive=True, flags=opts.flags)
    for p in opts.propagation:
        _mount_at(rootfs, dest, None, None, p)


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
            _mount_at(rootfs, dest, "cgroup", "cgroup2", flags)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EBUSY) or new_cgroupns:
                raise
            cg_path = next((p for c, p in own if c == ""), "/")
            _bind(rootfs, "/sys/fs/cgroup" + cg_path.rstrip("/"), dest, recursive=True, flags=flags)
        return
    # cgroup v1 (or hybrid): a tmpfs holding one directory per hierarchy, as runc does.
    hierarchies = [(p, t, o) for p, t, o in mountinfo() if t in ("cgroup", "cgroup2")]
    with open("/proc/cgroups") as f:
        subsystems = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
    tmpfs_flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    _mount_at(rootfs, dest, "tmpfs", "tmpfs", tmpfs_flags, "mode=755")
    seen: set[str] = set()
    for point, fstype, superopts in hierarchies:
        name = os.path.basename(point)
        if name in seen:
            continue
        seen.add(name)
        sub = secure_join(rootfs, os.path.join(dest[len(rootfs):] or "/", name), create="dir")
        controllers = [o for o in superopts.split(",") if o in subsystems or o.startswith("name=")]
        if new_cgroupns:
            _mount_at(rootfs, sub, "cgroup", fstype, flags, ",".join(controllers) if fstype == "cgroup" else None)
            continue
        wanted = "" if fstype == "cgroup2" else ",".join(sorted(controllers))
        v1_path = next((p for c, p in own if ",".join(sorted(c.split(","))) == wanted), None)
        if v1_path is not None:
            _bind(rootfs, point + v1_path.rstrip("/"), sub, recursive=False, flags=flags)
    if flags & L.MS_RDONLY:
        _mount_at(rootfs, dest, None, None, L.MS_REMOUNT | L.MS_RDONLY | tmpfs_flags)


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
            _mount_at(rootfs, dest, d.path, None, L.MS_BIND)
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


def readonly_root() -> None:
    L.mount(None, "/", None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | _locked_flags("/"))


def readonly_path(path: str) -> None:
    if not os.path.lexists(path):
        return
    L.mount(path, path, None, L.MS_BIND | L.MS_REC)
    L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | _locked_flags(path))


def mask_path(path: str) -> None:
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        L.mount("tmpfs", path, "tmpfs", L.MS_RDONLY, None)
    else:
        L.mount("/dev/null", path, None, L.MS_BIND)
