"""Which files a client may name as a process's stdio (CreateTask, Exec), judged on the open file.

`shim.stdio` hands a plain file or device named by path to the process itself (only FIFOs are
copied through the shim), and opens it as the shim: so a path the shim can open but the container
never could is a way out. /proc/self/mem is the *shim's* memory (writable by a process that seeks
its stdout), /proc/sysrq-trigger or a /sys file writes the host's kernel state, /dev/mem the
host's RAM, a namespace file (nsfs) lets a process setns into it. Refused (InvalidArgument):
symbolic links (in the last component: /proc/self/fd/N would name one of the shim's own pipes),
directories, sockets, block devices, files on the kernel's pseudo filesystems, and memory
character devices. Allowed: FIFOs, regular files elsewhere, terminals and the harmless devices of
major 1 (null, zero, full, random, urandom); a `file://` URI names a regular file only (made if
missing), a log as containerd's shim writes it.

The judgement is made on the open file, never on the name: `open_path` opens the path itself
(O_PATH|O_NOFOLLOW: no open acts on a device, no FIFO blocks), `judge` fstat(2)s that fd, and
`shim.stdio` opens the file it will use through that fd (/proc/self/fd/N names the very inode
judged), so a path swapped for a symlink, a device or another file between a check and the use
gains nothing. `check_stdio` runs the same judgement early (before the container's cgroup is
made) for an early, worded refusal; the one at the open is the one that decides. A path that
does not exist yet is left to the open (NotFound there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import urllib.parse
from typing import TYPE_CHECKING

from dockyard_common.errors import InvalidArgument, NotFound, from_os_error

if TYPE_CHECKING:
    from shim.stdio import StdioPaths

# statfs(2) f_type of the filesystems whose files act on the kernel or on another process, or that
# hold no file a client could have made (a pipe, socket or namespace reached through a magic link).
PSEUDO_FS: dict[int, str] = {
    0x9FA0: "procfs", 0x62656572: "sysfs", 0x27E0EB: "cgroupfs", 0x63677270: "cgroup2", 0x64626720: "debugfs",
    0x74726163: "tracefs", 0x73636673: "securityfs", 0xCAFE4A11: "bpffs", 0x62656570: "configfs",
    0xDE5E81E4: "efivarfs", 0x6E736673: "nsfs", 0x50495045: "pipefs", 0x534F434B: "sockfs",
    0x09041934: "anon_inodefs",
}
HARMLESS_MEM_MINORS = frozenset({3, 5, 7, 8, 9})  # major 1: not mem (1), kmem (2), port (4) or kmsg (11)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def fs_type(fd: int) -> int | None:
    """fstatfs(2)'s f_type for the open file `fd` (the first field, a long, on Linux), None if it fails."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.fstatfs(fd, buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def file_uri_path(uri: str, name: str) -> str:
    """The host path of a `file://` URI: an absolute path on this host (file:///path)."""
    url = urllib.parse.urlsplit(uri)
    if url.netloc not in ("", "localhost"):  # file://rel/x would name /x on this host
        raise InvalidArgument(f"{name} URI {uri!r}: a file:// URI names a path on this host (file:///path)")
    if not os.path.isabs(url.path):
        raise InvalidArgument(f"{name} URI {uri!r}: a file:// URI needs an absolute path")
    return url.path


def _local_path(uri: str, name: str) -> str:
    """The host path a stdio URI names ("" for none, or a binary:// logger run by the shim)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    if scheme == "fifo":
        return rest
    if scheme == "file":
        return file_uri_path(uri, name)
    return ""


def open_path(path: str, name: str) -> int:
    """An O_PATH fd (close-on-exec) of `path` itself: a symlink in its last component is not
    followed (the fd is the link, which `judge` refuses), and nothing is opened for reading or
    writing, so no device acts and no FIFO blocks. NotFound when missing."""
    if "\0" in path:
        raise InvalidArgument(f"{name} {path!r}: contains a NUL byte")
    try:
        return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NotFound(f"stdio fifo {path}") from None
        raise from_os_error(f"{name} {path}", e) from None


def judge(fd: int, name: str, path: str, regular: bool = False) -> os.stat_result:
    """InvalidArgument unless the open file `fd` (named `path` by the client) may be a process's
    `name`; `regular`: only a regular file will do (a file:// log). Returns its fstat."""
    st = os.fstat(fd)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise InvalidArgument(f"{name} {path}: is a symbolic link (a stdio path is not followed)")
    if stat.S_ISDIR(mode):
        raise InvalidArgument(f"{name} {path}: is a directory")
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        raise InvalidArgument(f"{name} {path}: a {'socket' if stat.S_ISSOCK(mode) else 'block device'} "
                              "cannot be a process's stdio")
    if stat.S_ISCHR(mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) not in HARMLESS_MEM_MINORS:
        raise InvalidArgument(f"{name} {path}: a memory device cannot be a process's stdio")
    kind = PSEUDO_FS.get(fs_type(fd) or 0)
    if kind is not None:
        raise InvalidArgument(f"{name} {path}: a file on {kind} cannot be a process's stdio "
                              "(it would be opened as the shim)")
    if regular and not stat.S_ISREG(mode):
        raise InvalidArgument(f"{name} {path}: not a regular file (a file:// URI names a log file)")
    return st


def check_path(uri: str, name: str) -> None:
    """The early judgement of one stdio URI (see the module's doc); the open judges again."""
    path = _local_path(uri, name)
    if not path:
        return
    try:
        fd = open_path(path, name)
    except NotFound:
        return  # missing: the open reports it (or, for file://, makes it)
    try:
        judge(fd, name, path, regular=uri.startswith("file://"))
    finally:
        os.close(fd)


def check_stdio(paths: StdioPaths) -> None:
    """InvalidArgument for a stdio path the process must not be handed (see the module's doc)."""
    check_path(paths.stdin, "stdin")
    check_path(paths.stdout, "stdout")
    check_path(paths.stderr, "stderr")
