"""Which paths a client may name as a process's stdio (CreateTask, Exec), judged before they are opened.

`shim.stdio` hands a plain file or device named by path to the process itself (only FIFOs are
copied through the shim), and opens it as the shim: so a path the shim can open but the container
never could is a way out. /proc/self/mem is the *shim's* memory (writable by a process that seeks
its stdout), /proc/sysrq-trigger or a /sys file writes the host's kernel state, /dev/mem the
host's RAM. Refused (InvalidArgument): directories, sockets, block devices, files on the kernel's
pseudo filesystems, and memory character devices. Allowed: FIFOs, regular files elsewhere,
terminals and the harmless devices of major 1 (null, zero, full, random, urandom). A path that does
not exist yet is left to the open (NotFound there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
import urllib.parse

from dockyard_common.errors import InvalidArgument
from shim.stdio import StdioPaths

# statfs(2) f_type of the filesystems whose files act on the kernel or on another process.
PSEUDO_FS: dict[int, str] = {
    0x9FA0: "procfs", 0x62656572: "sysfs", 0x27E0EB: "cgroupfs", 0x63677270: "cgroup2", 0x64626720: "debugfs",
    0x74726163: "tracefs", 0x73636673: "securityfs", 0xCAFE4A11: "bpffs", 0x62656570: "configfs",
    0xDE5E81E4: "efivarfs",
}
HARMLESS_MEM_MINORS = frozenset({3, 5, 7, 8, 9})  # major 1: not mem (1), kmem (2), port (4) or kmsg (11)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def fs_type(path: str) -> int | None:
    """statfs(2)'s f_type for `path` (the first field, a long, on Linux), None if it fails."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _local_path(uri: str) -> str:
    """The host path a stdio URI names ("" for none, or a binary:// logger run by the shim)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    if scheme == "fifo":
        return rest
    if scheme == "file":
        url = urllib.parse.urlsplit(uri)
        if url.netloc not in ("", "localhost"):  # file://rel/x would name /x on this host
            raise InvalidArgument(f"stdio URI {uri!r}: a file:// URI names a path on this host (file:///path)")
        return url.path
    return ""


def check_path(uri: str, name: str) -> None:
    path = _local_path(uri)
    if not path or "\0" in path:
        if path:
            raise InvalidArgument(f"{name} {path!r}: contains a NUL byte")
        return
    try:
        st = os.stat(path)
    except OSError:
        return  # missing (or unreachable): the open reports it
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise InvalidArgument(f"{name} {path}: is a directory")
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        raise InvalidArgument(f"{name} {path}: a {'socket' if stat.S_ISSOCK(mode) else 'block device'} "
                              "cannot be a process's stdio")
    if stat.S_ISCHR(mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) not in HARMLESS_MEM_MINORS:
        raise InvalidArgument(f"{name} {path}: a memory device cannot be a process's stdio")
    kind = PSEUDO_FS.get(fs_type(path) or 0)
    if kind is not None:
        raise InvalidArgument(f"{name} {path}: a file on {kind} cannot be a process's stdio "
                              "(it would be opened as the shim)")


def check_stdio(paths: StdioPaths) -> None:
    """InvalidArgument for a stdio path the process must not be handed (see the module's doc)."""
    check_path(paths.stdin, "stdin")
    check_path(paths.stdout, "stdout")
    check_path(paths.stderr, "stderr")
