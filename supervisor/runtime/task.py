"""One task: a container's processes behind their shim, as typed calls with deadlines.

The services call these; each control call carries a per-shim timeout, so a stuck shim costs
its caller `CONTROL_TIMEOUT` (DeadlineExceeded naming the task and call), not forever. Calls
that legitimately take long (Wait; Create, Start, Exec, Delete, which spawn and mount) get
`LONG_TIMEOUT` or none.

The task also keeps the last state its shim reported, for listing many tasks without a round
trip each: every event the shim publishes about the task and every call that may change it
invalidates that state (a generation counter), so `cached_state()` answers only while nothing
can have changed since it was read (and for at most `STATE_MAX_AGE` seconds, in case an event
was lost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from supervisor import identifiers
from supervisor.runtime.bundle import Bundle
from supervisor.runtime.shim import ShimClient
from supervisor.runtime.types import AnyValue, CreateOptions, ExecOptions, Exit, ProcessInfo, TaskState

CONTROL_TIMEOUT = 10.0  # state, kill, pause, resume, pids, stats, update, resize, close-io
LONG_TIMEOUT = 60.0  # create, start, exec, delete: they mount, fork and exec in the shim
STATE_MAX_AGE = 10.0  # seconds a state stays usable without any event about the task


@dataclass
class Task:
    bundle: Bundle
    runtime: str
    shim: ShimClient
    pid: int
    deleting: bool = False
    log_fd: int | None = field(default=None, repr=False)
    group: tuple[str, str] | None = None  # (namespace, group) of a shim it shares (shimgate.py)
    _generation: int = field(default=0, repr=False)
    _state: TaskState | None = field(default=None, repr=False)
    _state_generation: int = field(default=-1, repr=False)
    _state_read: float = field(default=0.0, repr=False)

    @property
    def namespace(self) -> str:
        return self.bundle.namespace

    @property
    def id(self) -> str:
        return self.bundle.id

    # -- the state cache -----------------------------------------------------------------

    def invalidate(self) -> None:
        """Something may have changed the task (an event, a call): the cached state is stale."""
        self._generation += 1

    def cached_state(self) -> TaskState | None:
        """The init's state as last read, if nothing can have changed it since; else None."""
        if self._state is None or self._state_generation != self._generation:
            return None
        if time.monotonic() - self._state_read > STATE_MAX_AGE:
            return None
        return self._state

    # -- calls ---------------------------------------------------------------------------

    async def state(self, exec_id: str = "", timeout: float | None = CONTROL_TIMEOUT) -> TaskState:
        generation = self._generation
        state = await self.shim.state(exec_id, timeout)
        if not exec_id:
            # Read at `generation`: if anything happened meanwhile, the next read asks again.
            self._state, self._state_generation, self._state_read = state, generation, time.monotonic()
        return state

    async def create(self, opts: CreateOptions) -> int:
        self.invalidate()
        self.pid = await self.shim.create(opts, LONG_TIMEOUT)
        self.invalidate()
        return self.pid

    async def start(self, exec_id: str = "") -> int:
        self.invalidate()
        try:
            return await self.shim.start(exec_id, LONG_TIMEOUT)
        finally:
            self.invalidate()

    async def delete(self, exec_id: str = "") -> Exit:
        self.invalidate()
        try:
            return await self.shim.delete(exec_id, LONG_TIMEOUT)
        finally:
            self.invalidate()

    async def kill(self, signal: int, all: bool = False, exec_id: str = "") -> None:
        self.invalidate()
        try:
            await self.shim.kill(exec_id, signal, all, CONTROL_TIMEOUT)
        finally:
            self.invalidate()

    async def exec(self, exec_id: str, opts: ExecOptions) -> None:
        # containerd's rule (runtime/v2 shimTask.Exec), for every shim: a shim may name files after it.
        identifiers.validate(exec_id, what="exec id")
        await self.shim.exec(exec_id, opts, LONG_TIMEOUT)

    async def pids(self) -> list[ProcessInfo]:
        return await self.shim.pids(CONTROL_TIMEOUT)

    async def pause(self) -> None:
        self.invalidate()
        try:
            await self.shim.pause(CONTROL_TIMEOUT)
        finally:
            self.invalidate()

    async def resume(self) -> None:
        self.invalidate()
        try:
            await self.shim.resume(CONTROL_TIMEOUT)
        finally:
            self.invalidate()

    async def update(self, resources: AnyValue | None, annotations: dict[str, str]) -> None:
        await self.shim.update(resources, annotations, CONTROL_TIMEOUT)

    async def close_io(self, exec_id: str = "", stdin: bool = True) -> None:
        await self.shim.close_io(exec_id, stdin, CONTROL_TIMEOUT)

    async def resize_pty(self, width: int, height: int, exec_id: str = "") -> None:
        await self.shim.resize_pty(exec_id, width, height, CONTROL_TIMEOUT)

    async def wait(self, exec_id: str = "") -> Exit:
        """Until the process exits: no timeout (the caller's deadline, if any, ends it)."""
        try:
            return await self.shim.wait(exec_id, None)
        finally:
            self.invalidate()

    async def stats(self, timeout: float | None = CONTROL_TIMEOUT) -> AnyValue | None:
        """The task's cgroup metrics, an Any as the shim sends it (None if it sent none)."""
        return await self.shim.stats(timeout)

    async def watch_stats(self, interval_ms: int, timeout: float | None = CONTROL_TIMEOUT) -> None:
        await self.shim.watch_stats(interval_ms, timeout)

    async def unwatch_stats(self, timeout: float | None = CONTROL_TIMEOUT) -> None:
        await self.shim.unwatch_stats(timeout)

    async def reopen_log(self, timeout: float | None = CONTROL_TIMEOUT) -> None:
        """Have the shim reopen the container log it writes at its path (after a rename)."""
        await self.shim.reopen_log(timeout)
