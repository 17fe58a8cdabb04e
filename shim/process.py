"""The state machines of a task's processes: its init, and processes exec'd into it.

    created ──start──> running ──exit──> stopped ──Delete──> (gone)
       │                 │  ^
       │              pause resume    (the container as a whole; execs show it too)
       │                 v  │
       │               paused ──exit──> stopped
       └──kill / Delete (init)──> stopped

Words: the *exit* is when the reaper collected the process (`set_exited`, once: later calls are
ignored, so an exit is reported exactly once). It is *reported* when its output has been copied
out and TaskExit published; only then do Wait calls return (at once, for a process that already
exited) and may Delete go ahead. Misuse raises the error containerd's shim would give:
FailedPrecondition for an operation the state does not allow ("cannot start a running
process"), NotFound for signalling a process that is gone ("process already finished").
"""

from __future__ import annotations

import asyncio
import os
import time

from dockyard_common.errors import FailedPrecondition, NotFound
from dockyard_common.types import Status
from shim.init import ContainerProcess
from shim.stdio import ProcessIO, StdioPaths

# The exit status of an exec whose Start failed: it never ran. containerd's shim reports the zero
# value, which reads as success; 255 is what a failed `runc exec` itself exits with.
EXIT_NEVER_STARTED = 255


class Process:
    """What init and exec processes share: identity, stdio, the exit and its waiters."""

    def __init__(self, id: str, paths: StdioPaths) -> None:
        self.id = id
        self.paths = paths
        self.pid = 0
        self.io: ProcessIO | None = None
        self.handle: ContainerProcess | None = None
        self.status = Status.CREATED
        self.exit_status = 0
        self.exited_at = 0  # ns since the epoch; 0 until the exit
        self._reported = asyncio.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} pid={self.pid} {self.status.word}>"

    # ----- transitions ---------------------------------------------------------------------------

    def require(self, action: str, *allowed: Status) -> None:
        if self.status not in allowed:
            raise FailedPrecondition(f"cannot {action} a {self.status.word} process")

    def set_running(self, pid: int) -> None:
        self.require("start", Status.CREATED)
        self.pid = pid
        self.status = Status.RUNNING

    def set_exited(self, status: int, when: int | None = None) -> bool:
        """Record the exit; False when it was already recorded (nothing to report again)."""
        if self.exited_at:
            return False
        self.exit_status = status
        self.exited_at = when or time.time_ns()
        self.status = Status.STOPPED
        if self.handle is not None:
            self.handle.close()
        return True

    def never_started(self) -> None:
        """Its Start failed: it will never run. A Wait returns now, as containerd's shim ends the
        wait of an exec whose start failed (`ctr tasks exec` waits before it starts: it hung for
        ever); stopped with EXIT_NEVER_STARTED, so State says so and Delete takes it. No exit
        event: nothing ran."""
        self.set_exited(EXIT_NEVER_STARTED)
        self.mark_reported()

    def check_delete(self) -> None:
        self.require("delete", Status.CREATED, Status.STOPPED)

    @property
    def exited(self) -> bool:
        return self.exited_at != 0

    @property
    def reported(self) -> bool:
        return self._reported.is_set()

    def mark_reported(self) -> None:
        self._reported.set()

    async def wait(self) -> None:
        """Until the exit is reported (returns at once when it already was)."""
        await self._reported.wait()

    # ----- signals -------------------------------------------------------------------------------

    def kill(self, sig: int) -> None:
        if self.exited:
            raise NotFound("process already finished")
        if self.pid <= 0:
            raise FailedPrecondition("process not created")
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise NotFound("process already finished") from None


class InitProcess(Process):
    """The container's init: created by Create, running after Start; pausing is container-wide."""

    def __init__(self, id: str, paths: StdioPaths, handle: ContainerProcess, io: ProcessIO) -> None:
        super().__init__(id, paths)
        self.handle = handle
        self.io = io
        self.pid = handle.pid

    def start(self) -> None:
        """Exec the spec's process; an exec that fails is an exit (the handle reaped it)."""
        self.require("start", Status.CREATED)
        assert self.handle is not None
        self.handle.start()
        self.status = Status.RUNNING

    def pause(self) -> None:
        self.require("pause", Status.RUNNING)
        self.status = Status.PAUSED

    def resume(self) -> None:
        self.require("resume", Status.PAUSED)
        self.status = Status.RUNNING


class ExecProcess(Process):
    """A process exec'd into the container: Exec reserves it, Start runs it."""

    def __init__(self, id: str, paths: StdioPaths, spec_json: bytes) -> None:
        super().__init__(id, paths)
        self.spec_json = spec_json

    def status_in(self, container: Status) -> Status:
        # A paused container pauses its execs too (containerd reports the container's state).
        if container in (Status.PAUSED, Status.PAUSING) and not self.exited:
            return container
        return self.status
