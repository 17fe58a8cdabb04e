"""Network namespaces the daemon owns, kept alive by bind-mounted files.

Words: a *netns file* is a regular empty file under ``<state>/netns/`` onto which a network
namespace (``/proc/<pid>/task/<tid>/ns/net``) is bind-mounted; the mount keeps the namespace
alive after the thread that made it has gone, and its path is what the OCI spec's
``linux.namespaces[{type: network, path}]`` and CNI's ``CNI_NETNS`` name.

Lifecycle: ``create(path)`` → (the path is handed to CNI and to the shim) → ``remove(path)``.
``remove`` is idempotent and works on a half-made file (no mount, or a mount and no more).
``listing(dir)`` names every file there, mounted or not, for reconcile.

Errors: ``create`` raises AlreadyExists when the file exists, Unavailable when the kernel refuses
(not root, no CLONE_NEWNET); ``remove`` raises Unavailable when the mount cannot be undone
(a path we cannot unmount must not be silently reused). ``in_netns`` re-raises what its function
raised.

Example::

    path = create(state / "netns" / cni_container_id("default", "web"))
    try:
        ...  # CNI ADD with CNI_NETNS=str(path); OCI spec network namespace path = str(path)
        rx_tx = in_netns(path, read_counters)
    finally:
        remove(path)

Threads: setns/unshare(CLONE_NEWNET) change only the calling thread, so each operation runs in
a fresh thread that exits afterwards - a pooled thread would carry the namespace into unrelated
work.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dockyard_common import netns_syscalls as L
from dockyard_common.errors import AlreadyExists, Unavailable

T = TypeVar("T")


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a new thread that ends with it (it may leave its namespaces changed)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="dockyard-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


# <linux/sockios.h>, <net/if.h>: the flags of an interface, by name (struct ifreq: name[16], short)
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring `lo` up in the calling thread's network namespace: all CNI's loopback plugin does
    on ADD (its result, lo's own 127.0.0.1/8 and ::1, is not kept), without a process start."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # made in the thread's namespace
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def create(path: Path, *, lo_up: bool = False) -> Path:
    """Make a new network namespace and pin it at `path` (which must not exist); with `lo_up`,
    its `lo` is up (done in the thread that made it, before the namespace is pinned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two creators of one name must not share (or unmount) one namespace
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    except FileExistsError:
        raise AlreadyExists(f"network namespace {str(path)!r}") from None

    def make() -> None:
        L.unshare(L.CLONE_NEWNET)  # this thread only: the daemon's other threads stay put
        if lo_up:
            loopback_up()
        L.bind_mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", str(path))

    try:
        in_fresh_thread(make)
    except OSError as exc:
        _unlink(path)
        raise Unavailable(f"cannot create network namespace {str(path)!r}: {exc.strerror or exc}") from None
    return path


def is_mounted(path: Path) -> bool:
    """Whether a namespace is bind-mounted at `path` (a plain file has a different device)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    # nsfs inodes live on the nsfs device, which no ordinary file under the state dir shares
    return st.st_dev != os.stat(path.parent).st_dev


def remove(path: Path) -> None:
    """Unmount and unlink `path`; nothing to do when it is already gone."""
    if not os.path.lexists(path):
        return
    while is_mounted(path):
        try:
            # MNT_DETACH: a plugin or `nsenter` still holding the file must not make removal fail;
            # the namespace itself lives on until its last user leaves
            L.umount2(str(path), L.MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise Unavailable(f"cannot unmount network namespace {str(path)!r}: {exc.strerror}") from None
            break
    _unlink(path)


def listing(directory: Path) -> list[Path]:
    """Every netns file under `directory` (mounted or left half-made by a crash)."""
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return []


def in_netns(path: Path, fn: Callable[[], T]) -> T:
    """Run `fn` with the calling thread inside the namespace pinned at `path`."""

    def enter() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            L.setns(fd, L.CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    return in_fresh_thread(enter)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
