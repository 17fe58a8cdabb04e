"""The few Linux calls a network namespace needs: unshare, setns, a bind mount and its undoing.

Python 3.11's os module has none of them; this is ctypes over libc, kept minimal so the daemon
can pin namespaces without importing the shim's internals. Each call changes only the calling
thread (unshare/setns) or the mount table (mount/umount2); failures raise OSError with errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CLONE_NEWNET = 0x40000000  # linux/sched.h
MS_BIND = 0x1000           # linux/mount.h
MNT_DETACH = 0x2


def _load() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        found = ctypes.util.find_library("c")
        if found is None:
            raise
        return ctypes.CDLL(found, use_errno=True)


_libc = _load()
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _fail(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _fail(f"setns({fd}, {nstype:#x})")


def bind_mount(source: str, target: str) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), None, MS_BIND, None) != 0:
        raise _fail(f"bind mount {source!r} on {target!r}")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(os.fsencode(target), flags) != 0:
        raise _fail(f"umount2({target!r}, {flags:#x})")
