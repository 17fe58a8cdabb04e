"""An exclusive lock on the root directory: two daemons on one root would corrupt it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dockyard_common.errors import FailedPrecondition


class RootLock:
    def __init__(self, root: Path) -> None:
        self.path = root / "dockyardd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (no write: on a full disk there may be no room yet; see `record_pid`)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FailedPrecondition(
                f"another dockyardd (pid {holder}) is already using root {self.path.parent}; "
                "stop it or choose another --root"
            ) from None
        self._fd = fd

    def record_pid(self) -> None:
        """Write our pid into the lock file, for the message a second daemon gives."""
        assert self._fd is not None, "record_pid before acquire"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None
