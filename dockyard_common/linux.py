"""The one place the shim calls libc through ctypes.

Every wrapper is typed, takes Python values, and raises `OSError` carrying the errno and a
message that names the call and its arguments (``mount("proc", "/r/proc", "proc", 0x6, None):
Operation not permitted``), so a failure deep in the container init reads well in the error
the daemon finally reports. Nothing here decides *what* to do: that is `shim.init`'s job.

Calls Python already exposes (setresuid, setgroups, ...) are wrapped too, so callers use one
module and get one error style. The shim is single-threaded; several of these calls
(unshare(CLONE_NEWUSER), setns into a user namespace) require that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import socket
import struct

from dockyard_common import capabilities


def _load(soname: str, short: str) -> ctypes.CDLL:
    # The soname first: ctypes.util.find_library runs ldconfig, too slow for every shim start.
    try:
        return ctypes.CDLL(soname, use_errno=True)
    except OSError:
        found = ctypes.util.find_library(short)
        if found is None:
            raise
        return ctypes.CDLL(found, use_errno=True)


_libc = _load("libc.so.6", "c")

# ----- constants (linux/sched.h, linux/mount.h, linux/prctl.h) -------------------------------------

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 0x1
MNT_DETACH = 0x2

# mount_setattr(2) (linux/mount.h, Linux 5.12): attributes of a mount, or of a whole tree of them.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
OPEN_TREE_CLONE = 0x1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

_SYS_PIVOT_ROOT = 155
_SYS_CAPGET = 125
_SYS_CAPSET = 126
_SYS_SETNS = 308
_SYS_CLOSE_RANGE = 436
_SYS_OPEN_TREE = 428  # these three: the same number on every architecture (added after the unification)
_SYS_MOUNT_SETATTR = 442
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Capability numbers (linux/capability.h): a name's position in the shared list.
CAPABILITIES: dict[str, int] = {name: number for number, name in enumerate(capabilities.ALL)}


def _fail(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


def _s(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.mknod.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.personality.argtypes = [ctypes.c_ulong]
_libc.chroot.argtypes = [ctypes.c_char_p]


# ----- namespaces ----------------------------------------------------------------------------------


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.syscall(_SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail(f"setns({fd}, {nstype:#x})")


# ----- mounts --------------------------------------------------------------------------------------


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_s(source), _s(target), _s(fstype), flags, _s(data)) != 0:
        raise _fail(f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_s(target), flags) != 0:
        raise _fail(f"umount2({target!r}, {flags:#x})")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0, userns_fd: int = 0) -> None:
    """mount_setattr(2): set and clear MOUNT_ATTR_* of the mount at `path` (relative to `dirfd`;
    "" with AT_EMPTY_PATH: `dirfd`'s own), of every mount below it too with AT_RECURSIVE.
    `userns_fd`: the user namespace whose mappings MOUNT_ATTR_IDMAP applies."""
    attr = _MountAttr(attr_set, attr_clr, 0, userns_fd)
    if _libc.syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(dirfd), _s(path), ctypes.c_uint(flags), ctypes.byref(attr),
                     ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
        raise _fail(f"mount_setattr({dirfd}, {path!r}, {flags:#x}, set={attr_set:#x}, clear={attr_clr:#x})")


def open_tree(path: str, flags: int = OPEN_TREE_CLONE) -> int:
    """open_tree(2) with O_CLOEXEC: with OPEN_TREE_CLONE, a detached copy of the mount at `path`
    (a bind mount not yet attached anywhere), as an fd."""
    fd = _libc.syscall(_SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), _s(path), ctypes.c_uint(flags | os.O_CLOEXEC))
    if fd < 0:
        raise _fail(f"open_tree({path!r}, {flags:#x})")
    return int(fd)


@functools.cache
def has_mount_setattr() -> bool:
    """Whether this kernel (and any seccomp filter on us) lets mount_setattr(2) through: asked
    once, with arguments it refuses before doing anything (EINVAL or EBADF: it is there)."""
    rc = _libc.syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(-1), b"", ctypes.c_uint(AT_EMPTY_PATH), None,
                       ctypes.c_size_t(0))
    return rc == 0 or ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM)


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_SYS_PIVOT_ROOT, _s(new_root), _s(put_old)) != 0:
        raise _fail(f"pivot_root({new_root!r}, {put_old!r})")


def chroot(path: str) -> None:
    if _libc.chroot(_s(path)) != 0:
        raise _fail(f"chroot({path!r})")


def mknod(path: str, mode: int, major: int, minor: int) -> None:
    dev = os.makedev(major, minor)
    if _libc.mknod(_s(path), mode, dev) != 0:
        raise _fail(f"mknod({path!r}, {mode:#o}, {major}:{minor})")


# ----- identity, names -----------------------------------------------------------------------------


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        raise _fail(f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    raw = name.encode()
    if _libc.setdomainname(raw, len(raw)) != 0:
        raise _fail(f"setdomainname({name!r})")


def setgroups(gids: list[int]) -> None:
    try:
        os.setgroups(gids)
    except OSError as e:
        raise OSError(e.errno, f"setgroups({gids}): {e.strerror}") from None


def setresgid(rgid: int, egid: int, sgid: int) -> None:
    try:
        os.setresgid(rgid, egid, sgid)
    except OSError as e:
        raise OSError(e.errno, f"setresgid({rgid}, {egid}, {sgid}): {e.strerror}") from None


def setresuid(ruid: int, euid: int, suid: int) -> None:
    try:
        os.setresuid(ruid, euid, suid)
    except OSError as e:
        raise OSError(e.errno, f"setresuid({ruid}, {euid}, {suid}): {e.strerror}") from None


def personality(persona: int) -> int:
    res = _libc.personality(persona)
    if res == -1:
        raise _fail(f"personality({persona:#x})")
    return int(res)


# ----- prctl and capabilities ----------------------------------------------------------------------


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    res = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if res == -1:
        raise _fail(f"prctl({option}, {arg2}, {arg3}, {arg4}, {arg5})")
    return int(res)


def set_child_subreaper(on: bool = True) -> None:
    prctl(PR_SET_CHILD_SUBREAPER, int(on))


def is_child_subreaper() -> bool:
    out = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(out), 0, 0, 0) != 0:
        raise _fail("prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(out.value)


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if _libc.syscall(_SYS_CAPGET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _fail(f"capget({pid})")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i, shift in enumerate((0, 32)):
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.syscall(_SYS_CAPSET, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _fail(f"capset(eff={effective:#x}, prm={permitted:#x}, inh={inheritable:#x})")


def cap_bound_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def ambient_clear_all() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


# ----- file descriptors ----------------------------------------------------------------------------


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2); falls back to closing one by one where the kernel lacks it (< 5.9)."""
    if first > last:
        return
    if _libc.syscall(_SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EINVAL):
        raise OSError(err, f"close_range({first}, {last}, {flags:#x}): {os.strerror(err)}")
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if first <= fd <= last:
            try:
                if flags & CLOSE_RANGE_CLOEXEC:
                    os.set_inheritable(fd, False)
                else:
                    os.close(fd)
            except OSError:
                pass  # the fd of the listdir itself


# ----- memory --------------------------------------------------------------------------------------

MADV_MERGEABLE = 12
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def madvise(start: int, length: int, advice: int) -> None:
    if _libc.madvise(start, length, advice) != 0:
        raise _fail(f"madvise({start:#x}, {length}, {advice})")


# ----- network -------------------------------------------------------------------------------------

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def link_up(name: str) -> None:
    """Bring an interface up (the loopback of a fresh network namespace starts down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", name.encode(), 0)
        try:
            flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | _IFF_UP))
        except OSError as e:
            raise OSError(e.errno, f"ioctl(SIOCSIFFLAGS, {name!r}, IFF_UP): {e.strerror}") from None


# ----- terminals -----------------------------------------------------------------------------------

_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414
_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431


def open_pty_master(ptmx: str = "/dev/ptmx") -> tuple[int, str]:
    """Open a new pty master (close-on-exec) and unlock it; returns (fd, slave path)."""
    fd = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TIOCSPTLCK, struct.pack("i", 0))
        n = struct.unpack("I", fcntl.ioctl(fd, _TIOCGPTN, b"\0" * 4))[0]
    except OSError as e:
        os.close(fd)
        raise OSError(e.errno, f"ioctl({ptmx}, TIOCSPTLCK/TIOCGPTN): {e.strerror}") from None
    pts = os.path.dirname(os.path.realpath(ptmx))
    if os.path.basename(pts) != "pts":  # a host-style /dev/ptmx node rather than the pts/ptmx link
        pts = os.path.join(pts, "pts")
    return fd, os.path.join(pts, str(n))


def set_winsize(fd: int, height: int, width: int) -> None:
    try:
        fcntl.ioctl(fd, _TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    except OSError as e:
        raise OSError(e.errno, f"ioctl({fd}, TIOCSWINSZ, {height}x{width}): {e.strerror}") from None


def set_controlling_tty(fd: int) -> None:
    try:
        fcntl.ioctl(fd, _TIOCSCTTY, 0)
    except OSError as e:
        raise OSError(e.errno, f"ioctl({fd}, TIOCSCTTY): {e.strerror}") from None


# ----- libseccomp ----------------------------------------------------------------------------------

SCMP_FLTATR_CTL_NNP = 3
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_CTL_LOG = 6
SCMP_FLTATR_CTL_SSB = 7

# seccomp(2) (linux/seccomp.h): the flags libseccomp's seccomp_load derives from those attributes.
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
_FLAG_OF_ATTR = ((SCMP_FLTATR_CTL_TSYNC, SECCOMP_FILTER_FLAG_TSYNC), (SCMP_FLTATR_CTL_LOG, SECCOMP_FILTER_FLAG_LOG),
                 (SCMP_FLTATR_CTL_SSB, SECCOMP_FILTER_FLAG_SPEC_ALLOW))
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096  # the kernel's limit on a classic BPF program
SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
# __NR_seccomp by machine (libc may have no wrapper; libseccomp resolves it for others); a kernel
# without seccomp(2) gets prctl(PR_SET_SECCOMP), as libseccomp does (flags 0 only).
_NR_SECCOMP = {"x86_64": 317, "i686": 354, "i386": 354, "aarch64": 277, "armv7l": 383, "riscv64": 277,
               "ppc64le": 358, "ppc64": 358, "s390x": 348}


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _ScmpVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


_seccomp: ctypes.CDLL | None = None


def load_libseccomp() -> ctypes.CDLL:
    """Load libseccomp (once). Call it before pivot_root: the container has no copy of it."""
    global _seccomp
    if _seccomp is None:
        try:
            lib = _load("libseccomp.so.2", "seccomp")
        except OSError as e:
            raise OSError(errno.ENOSYS, f"libseccomp is not installed ({e})") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ScmpArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_attr_get.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint32)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_version.restype = ctypes.POINTER(_ScmpVersion)
        lib.seccomp_version.argtypes = []
        _seccomp = lib
    return _seccomp


class SeccompFilter:
    """A libseccomp filter being built: arches, rules, then `load()` into this process."""

    def __init__(self, default_action: int) -> None:
        self._lib = load_libseccomp()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise OSError(errno.EINVAL, f"seccomp_init({default_action:#x}): failed")

    def _check(self, rc: int, call: str) -> int:
        if rc < 0:
            raise OSError(-rc, f"{call}: {os.strerror(-rc)}")
        return rc

    def add_arch(self, name: str) -> bool:
        """Add an architecture by libseccomp name ("x86_64"); False if libseccomp does not know it."""
        token = self._lib.seccomp_arch_resolve_name(name.encode())
        if token == 0:
            return False
        rc = self._lib.seccomp_arch_add(self._ctx, token)
        if rc != -errno.EEXIST:
            self._check(rc, f"seccomp_arch_add({name!r})")
        return True

    def resolve(self, syscall: str) -> int | None:
        nr = self._lib.seccomp_syscall_resolve_name(syscall.encode())
        return None if nr < 0 else int(nr)

    def add_rule(self, action: int, nr: int, args: list[tuple[int, int, int, int]]) -> None:
        """`args`: (index, op, value, value_two) conditions, all of which must hold."""
        arr = (_ScmpArgCmp * max(1, len(args)))(*[_ScmpArgCmp(i, op, a, b) for i, op, a, b in args])
        self._check(self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(args), arr),
                    f"seccomp_rule_add({action:#x}, {nr}, {args})")

    def set_no_new_privs(self, on: bool) -> None:
        self._check(self._lib.seccomp_attr_set(self._ctx, SCMP_FLTATR_CTL_NNP, int(on)), "seccomp_attr_set(NNP)")

    def load(self) -> None:
        self._check(self._lib.seccomp_load(self._ctx), "seccomp_load")

    def export(self) -> tuple[bytes, int]:
        """The BPF program `load()` would load (a `struct sock_filter[]`) and the seccomp(2)
        flags it would pass, as `seccomp_load_program` takes them."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            self._check(self._lib.seccomp_export_bpf(self._ctx, fd), "seccomp_export_bpf")
            size = os.lseek(fd, 0, os.SEEK_END)
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        flags = 0
        value = ctypes.c_uint32()
        for attr, flag in _FLAG_OF_ATTR:
            # An attribute this libseccomp does not know is one it cannot have set.
            if self._lib.seccomp_attr_get(self._ctx, attr, ctypes.byref(value)) == 0 and value.value:
                flags |= flag
        return program, flags

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None


def libseccomp_identity() -> str:
    """What besides the rules decides libseccomp's program: its version and the native arch."""
    lib = load_libseccomp()
    v = lib.seccomp_version().contents
    return f"libseccomp {v.major}.{v.minor}.{v.micro} native {lib.seccomp_arch_native():#x}"


def seccomp_load_program(program: bytes, flags: int = 0) -> None:
    """Load a BPF program (`SeccompFilter.export`'s) into this process as seccomp_load would:
    seccomp(SECCOMP_SET_MODE_FILTER, flags), prctl(PR_SET_SECCOMP) without that syscall. Like
    seccomp_load with no_new_privs off, it does not set no_new_privs (without it, CAP_SYS_ADMIN)."""
    count, rest = divmod(len(program), SOCK_FILTER_SIZE)
    if rest or not 0 < count <= BPF_MAXINSNS:
        raise OSError(errno.EINVAL, f"seccomp: a BPF program of {len(program)} bytes is not one")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(count, ctypes.cast(buf, ctypes.c_void_p).value)
    nr = _NR_SECCOMP.get(os.uname().machine)
    if nr is None and _seccomp is not None:  # another machine: libseccomp knows its number
        resolved = _seccomp.seccomp_syscall_resolve_name(b"seccomp")
        nr = resolved if resolved >= 0 else None
    rc = -1
    err = errno.ENOSYS
    if nr is not None:
        rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                           ctypes.byref(prog))
        err = ctypes.get_errno() if rc != 0 else 0
    if rc != 0 and err == errno.ENOSYS and flags == 0:
        rc = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
        err = ctypes.get_errno() if rc != 0 else 0
    if rc > 0 and flags & SECCOMP_FILTER_FLAG_TSYNC:
        raise OSError(errno.ESRCH, f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}): thread {rc} cannot sync")
    if rc != 0:
        raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}, {count} insns): {os.strerror(err)}")
