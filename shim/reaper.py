"""The shim's reaper: every child that exits is collected here, on SIGCHLD, in the event loop.

The shim is a child subreaper, so besides the container processes it made it also inherits
their orphans (a daemon forked by an exec'd shell, every process of a container that shares
the host PID namespace). All are waited for, so none stays a zombie; each exit goes to
`on_exit(pid, status)`, which ignores PIDs it does not know.

No race with process creation: `create_container`/`exec_process` run synchronously in a loop
callback and the service registers the new PID before it next awaits, while the SIGCHLD
handler only runs on a later loop iteration. A process that exits at once is still a zombie
then, and `waitpid(-1)` finds it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

ExitCallback = Callable[[int, int], None]


def exit_code(status: int) -> int:
    """containerd's convention: a process killed by signal N exits 128+N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class Reaper:
    def __init__(self, on_exit: ExitCallback) -> None:
        self.on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGCHLD in `loop` from now on, and collect whatever already exited."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        # A burst of exits (1 000 execs at once) fills the loop's signal wakeup pipe, and CPython
        # then logs a traceback per byte it could not write. Nothing is lost: the bytes already
        # there wake the loop, and each `reap` collects every child that has exited.
        signal.set_wakeup_fd(signal.set_wakeup_fd(-1), warn_on_full_buffer=False)
        self.reap()

    def reap(self) -> None:
        # One SIGCHLD may stand for many exits (signals coalesce): wait until none is left.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, exit_code(status))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None
