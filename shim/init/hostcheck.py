"""What a parsed spec asks of this host that parsing alone cannot judge, checked in the shim
before anything is forked, created or written (so a refusal leaves nothing to undo).

- OCI hooks, AppArmor profiles and SELinux labels (the init's or an exec's, `check_process`):
  this shim applies none of them. Running without what the spec asks for (a prestart hook
  wiring a device, a confining profile) would fail open, so they are refused
  (FailedPrecondition).
- namespace paths: each must be a namespace file of the type it is listed as
  (`open_namespace`, which stage 1 uses again to join it); missing is NotFound. A mount
  namespace is never joined: the init builds the root there (mounts, pivot_root), which in a
  namespace given by path would be someone else's, the host's at worst.
- sysctls: only those the kernel scopes to a namespace (runc's list), and only in a namespace
  of the container's own: listed without a path, or with a path that is not the shim's (the
  host's). Anything else written through the container's /proc/sys changes the host's value.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from shim.init.plan import CLONE_FLAGS
from shim.init.spec import NAMESPACE_TYPES, Process, Spec, sysctl_namespace

NS_GET_NSTYPE = 0xB703  # ioctl(2) on a namespace fd: its CLONE_NEW* type


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/user").st_dev


def open_namespace(path: str, ns_type: str) -> int:
    """An O_RDONLY fd (close-on-exec) of the namespace file `path`, checked to be a namespace of
    `ns_type` before it is opened for reading: opening any other file could block (a FIFO) or
    act (a device). NotFound when missing, InvalidArgument when not such a namespace."""
    where = f"{ns_type} namespace {path}"
    try:
        probe = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{where}: no such file") from None
    except OSError as e:
        raise InvalidArgument(f"{where}: {os.strerror(e.errno or errno.EINVAL)}") from None
    try:
        if os.fstat(probe).st_dev != _nsfs_dev():
            raise InvalidArgument(f"{where}: not a namespace file")
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(probe)
    try:
        got = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.ENOTTY:  # a pidfd or other nsfs file that is not a namespace
            raise InvalidArgument(f"{where}: not a namespace file") from None
        raise
    if got != CLONE_FLAGS[ns_type]:
        os.close(fd)
        kind = next((t for t, flag in CLONE_FLAGS.items() if flag == got), "another")
        raise InvalidArgument(f"{where}: not a namespace of that type (it is a {kind} namespace)")
    return fd


def _is_ours(path: str, ns_type: str) -> bool:
    """Whether namespace file `path` is the namespace this process (the shim) lives in."""
    with contextlib.suppress(OSError):
        a, b = os.stat(path), os.stat(f"/proc/self/ns/{NAMESPACE_TYPES[ns_type]}")
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    return False


def check_process(process: Process) -> None:
    """What a process (the init's, or an exec's) asks that this shim cannot honour."""
    if process.apparmor_profile:
        raise FailedPrecondition("spec: process.apparmorProfile: dockyard's shim does not apply AppArmor profiles "
                                 "(and would run the process unconfined)")
    if process.selinux_label:
        raise FailedPrecondition("spec: process.selinuxLabel: dockyard's shim does not apply SELinux labels "
                                 "(and would run the process unconfined)")


def check_on_host(spec: Spec) -> None:
    if spec.hooks:
        raise FailedPrecondition(f"spec: hooks.{spec.hooks[0]}: OCI hooks are not supported by dockyard's shim")
    if spec.process is not None:
        check_process(spec.process)
    for i, ns in enumerate(spec.linux.namespaces):
        if ns.path and ns.type == "mount":
            raise InvalidArgument(f"spec: linux.namespaces[{i}].path: joining a mount namespace is not supported; "
                                  "the container needs a new one")
        if ns.path:
            os.close(open_namespace(ns.path, ns.type))
    for key in spec.linux.sysctl:
        need = sysctl_namespace(key)
        own = spec.linux.namespace(need)
        if own is None:
            raise InvalidArgument(f"spec: linux.sysctl.{key}: needs a {need} namespace of the container's own "
                                  "(it would change the host's)")
        if own.path and _is_ours(own.path, own.type):
            raise InvalidArgument(f"spec: linux.sysctl.{key}: the {own.type} namespace {own.path} is the host's "
                                  "(the write would change the host's value)")
