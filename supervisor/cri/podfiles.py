"""The files a pod's containers share, on the host: `<dir>/<pod id>/shm` (a tmpfs every container
of the pod binds at /dev/shm, as containerd's CRI does: a bind from the pause process's own mount
namespace is refused by the kernel) and `<dir>/<pod id>/hostname` (bound at /etc/hostname).

    files = PodFiles(Path("/run/dockyard/cri/sandboxes"))
    paths = files.make(pod_id, "web-1", shm=True)     # blocking: call in a thread
    paths.shm, paths.hostname
    files.remove(pod_id)                              # unmounts and removes; idempotent

The tmpfs lives in the daemon's mount namespace and outlives a daemon restart with the pod.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import linux as L
from dockyard_common.errors import Internal

SHM_SIZE = 64 << 20  # containerd's defaultShmSize
SHM_FLAGS = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC


@dataclass(frozen=True)
class PodPaths:
    shm: Path | None  # None: the pod uses the host's IPC namespace and /dev/shm
    hostname: Path


class PodFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, pod_id: str, shm: bool = True) -> PodPaths:
        base = self.root / pod_id
        return PodPaths(base / "shm" if shm else None, base / "hostname")

    def make(self, pod_id: str, hostname: str, shm: bool) -> PodPaths:
        paths = self.paths(pod_id, shm)
        base = self.root / pod_id
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        try:
            # A host-network pod's containers see the host's name (as under containerd).
            (base / ".hostname.tmp").write_text((hostname or socket.gethostname()) + "\n")
            os.chmod(base / ".hostname.tmp", 0o644)
            os.replace(base / ".hostname.tmp", paths.hostname)
            if paths.shm is not None and not os.path.ismount(paths.shm):
                paths.shm.mkdir(exist_ok=True, mode=0o700)
                L.mount("shm", str(paths.shm), "tmpfs", SHM_FLAGS, f"mode=1777,size={SHM_SIZE}")
        except OSError as exc:
            self.remove(pod_id)
            raise Internal(f"pod {pod_id}: its shared files in {base}: {exc.strerror or exc}") from None
        except BaseException:
            self.remove(pod_id)
            raise
        return paths

    def remove(self, pod_id: str) -> None:
        base = self.root / pod_id
        shm = base / "shm"
        if os.path.ismount(shm):
            try:
                L.umount2(str(shm), L.MNT_DETACH)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    raise Internal(f"pod {pod_id}: unmounting its /dev/shm: {exc.strerror or exc}") from None
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(base)
