"""A health probe's exec leaves its shim on every path (supervisor/runtime/health.py): done, timed
out, the shim failing the exec or the start, the watch cancelled at any await; and the leftovers
of a dead daemon are found (FIFO dir names, Tasks/ListPids) and only ours are removed. A fake
task stands for the shim (pid 0: nothing real is ever signalled)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dockyard_api.containerd.runtime.v2.runc.options import oci_pb2
from dockyard_common import healthcheck as hc
from dockyard_common.errors import FailedPrecondition, NotFound, Unavailable
from supervisor.runtime.health import EXEC_PREFIX, HealthMonitor, _left_in
from supervisor.runtime.types import AnyValue, ExecOptions, Exit, ProcessInfo, Status, TaskState

CHECK = hc.HealthConfig(("CMD", "check"), timeout=hc.SECOND)


class FakeTask:
    """The shim's execs of one task: created, running (until killed or `finish`ed), stopped."""

    namespace = "default"
    id = "c1"

    def __init__(self, fail_exec: bool = False, fail_start: bool = False, slow_start: bool = False) -> None:
        self.fail_exec, self.fail_start, self.slow_start = fail_exec, fail_start, slow_start
        self.execs: dict[str, Status] = {}
        self.stopped: dict[str, asyncio.Event] = {}
        self.started = asyncio.Event()
        self.extra_pids: list[ProcessInfo] = []

    async def exec(self, exec_id: str, opts: ExecOptions) -> None:
        self.execs[exec_id] = Status.CREATED
        self.stopped[exec_id] = asyncio.Event()
        if self.fail_exec:  # made in the shim, but its answer lost
            raise Unavailable("the shim's answer was lost")

    async def start(self, exec_id: str = "") -> int:
        if self.slow_start:
            self.started.set()
            await asyncio.sleep(0.05)
        if self.fail_start:
            raise Unavailable("start failed")
        self.execs[exec_id] = Status.RUNNING
        self.started.set()
        return 0

    def finish(self, exec_id: str) -> None:
        self.execs[exec_id] = Status.STOPPED
        self.stopped[exec_id].set()

    async def wait(self, exec_id: str = "") -> Exit:
        await self.stopped[exec_id].wait()
        return Exit(0, 0)

    async def kill(self, signal: int, all: bool = False, exec_id: str = "") -> None:
        if self.execs.get(exec_id) != Status.RUNNING:
            raise FailedPrecondition("not running")
        self.finish(exec_id)

    async def state(self, exec_id: str = "") -> TaskState:
        if exec_id not in self.execs:
            raise NotFound(f"exec {exec_id}")
        return TaskState(self.id, exec_id, 0, self.execs[exec_id])

    async def delete(self, exec_id: str = "") -> Exit:
        if exec_id not in self.execs:
            raise NotFound(f"exec {exec_id}")
        if self.execs[exec_id] == Status.RUNNING:
            raise FailedPrecondition("running")
        del self.execs[exec_id]
        return Exit(0, 0)

    async def pids(self) -> list[ProcessInfo]:
        ours = [ProcessInfo(0, AnyValue("containerd.runc.v1.ProcessDetails",
                                         oci_pb2.ProcessDetails(exec_id=e).SerializeToString()))
                for e, status in self.execs.items() if status == Status.RUNNING]
        return [ProcessInfo(1), *ours, *self.extra_pids]


def monitor(tmp_path: Path) -> HealthMonitor:
    return HealthMonitor(None, None, None, None, tmp_path / "health")  # type: ignore[arg-type]


async def probe(m: HealthMonitor, task: FakeTask, check: hc.HealthConfig = CHECK) -> tuple[int, str]:
    return await m._exec(("default", "c1"), task, {"args": ["check"]}, check)  # type: ignore[arg-type]


def nothing_left(m: HealthMonitor, task: FakeTask) -> None:
    assert task.execs == {}
    assert not any(m.fifo_root.iterdir())
    assert m.probes_running == 0 and not m._live


async def test_done_and_timed_out(tmp_path: Path) -> None:
    m, task = monitor(tmp_path), FakeTask()
    job = asyncio.ensure_future(probe(m, task))
    await task.started.wait()
    [exec_id] = task.execs
    assert exec_id.startswith(EXEC_PREFIX) and (m.fifo_root / f"default@c1@{exec_id}").is_dir()
    task.finish(exec_id)
    assert await job == (0, "")
    nothing_left(m, task)
    code, output = await probe(m, task, hc.HealthConfig(("CMD", "check"), timeout=hc.MIN_DURATION))
    assert (code, output) == (hc.EXIT_UNKNOWN, "Health check exceeded timeout (1ms)")
    nothing_left(m, task)


@pytest.mark.parametrize("task_args", [{"fail_exec": True}, {"fail_start": True}])
async def test_the_shim_failing(tmp_path: Path, task_args: dict[str, Any]) -> None:
    m, task = monitor(tmp_path), FakeTask(**task_args)
    with pytest.raises(Unavailable):
        await probe(m, task)
    nothing_left(m, task)


@pytest.mark.parametrize("slow_start", [True, False])
async def test_cancelled_while_starting_or_waiting(tmp_path: Path, slow_start: bool) -> None:
    m, task = monitor(tmp_path), FakeTask(slow_start=slow_start)
    job = asyncio.ensure_future(probe(m, task))
    await task.started.wait()  # inside start (slow), or waiting for the exit
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    nothing_left(m, task)


async def test_leftovers_found_by_name_and_by_pids_only_ours_removed(tmp_path: Path) -> None:
    root = tmp_path / "health"
    left = f"{EXEC_PREFIX}0123456789ab"
    for entry in (f"default@c1@{left}", f"ns2@c2@{EXEC_PREFIX}ba9876543210", "stray", "a@b@user-exec"):
        (root / entry).mkdir(parents=True)
    assert _left_in(root) == {("default", "c1"): {left}, ("ns2", "c2"): {f"{EXEC_PREFIX}ba9876543210"}}
    assert _left_in(tmp_path / "none") == {}
    m, task = monitor(tmp_path), FakeTask()
    m._leftovers = {("default", "c1"): {left}}
    unlisted = f"{EXEC_PREFIX}aaaaaaaaaaaa"  # running, its FIFO dir gone: ListPids names it
    for exec_id, status in ((left, Status.RUNNING), (unlisted, Status.RUNNING), ("users-exec", Status.RUNNING)):
        await task.exec(exec_id, ExecOptions(None))
        task.execs[exec_id] = status
    await m._clear_leftovers(("default", "c1"), task, running=True)  # type: ignore[arg-type]
    assert task.execs == {"users-exec": Status.RUNNING}
    assert m._leftovers == {}
