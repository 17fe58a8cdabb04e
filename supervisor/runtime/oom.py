"""Docker's State.OOMKilled: whether the kernel's OOM killer struck in a container's cgroup during
its current (or last) run, kept on the container as the label `dockyard.oom-killed`
(dockyard_common/oomkilled.py) so that every client reads it from the record.

The verdict is the kernel's own counter, not the shim's event: `oom_kill` in the task's cgroup
(memory.events on v2, memory.oom_control on v1; `TaskManager.oom_killed`). The shim makes that
cgroup at the task's create and removes it at its delete, so the counter is exactly "this run",
it is there after the init exited for as long as the task is, and the task's delete goes
through the daemon. It is read:

- at the init's `/tasks/exit` (the exit's pid must be the current task's: a late event of an
  earlier run is not this run's);
- on `/tasks/oom` (containerd's TaskOOM), so a container whose child was killed while the init
  runs on says so at once, as Docker's does; the kill may follow the event by a moment, so the
  counter is asked a few times;
- before every delete of a task (`RunWatch.run_ending`: a foreground `dock run` deletes its task as
  soon as it sees the exit, maybe before the exit event is handled here) and before the cleanup
  after a dead shim;
- at the daemon's start, for every task found again: an OOM while no daemon ran is counted
  there, whether or not its event was ever delivered.

The label goes when the next task of the container is created (`run_began`), as Docker clears
OOMKilled when a container starts. Why not the shim: containerd's task State and TaskExit have no
OOM field, and a message of ours would leave out containerd's own shim, which the daemon runs
too; the counter answers for both. A per-container lock and run generation keep a verdict about
one run from landing on the next.

    oom = OomRecorder(containers, tasks, events)
    tasks.runs = oom         # before tasks.recover(): dead shims' cleanups are runs ending too
    await tasks.recover()
    await oom.start()        # subscribed on return; the tasks found again are judged in the background
    ...
    await oom.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Coroutine, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_common import oomkilled
from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.types import Container
from supervisor.events import Event, Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.runtime.bundle import Bundle
from supervisor.runtime.manager import TaskManager

log = logging.getLogger("dockyard.oom")

FILTERS = ['topic=="/tasks/exit"', 'topic=="/tasks/oom"']
KILL_CHECKS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)  # seconds between reads of the counter after a /tasks/oom

Key = tuple[str, str]


class OomRecorder:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, events: Exchange) -> None:
        self.containers = containers
        self.tasks = tasks
        self.events = events
        self._runs: dict[Key, int] = {}  # a run's generation: raised when a new task is created
        # Runs judged at their init's exit: the counter is final then (the PID namespace went with
        # the init), so the delete that follows need not read it again.
        self._settled: dict[Key, int] = {}
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()
        self._jobs: set[asyncio.Task[None]] = set()
        self._follower: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow exits and OOM events; judge every task found again (also after falling behind
        the events). Returns once subscribed."""

        async def in_place() -> None:
            self._spawn(self._judge_all())

        self._follower = await self.events.start_following(FILTERS, self._on_event, in_place, who="oom recorder")

    async def close(self) -> None:
        jobs = [j for j in [self._follower, *self._jobs] if j is not None]
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        self._follower = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- the runtime's hooks (TaskManager.runs) -------------------------------------------------

    async def run_began(self, namespace: str, cid: str, labels: Mapping[str, str] | None) -> None:
        """A new task of the container: a new run, not OOM-killed (yet)."""
        key = (namespace, cid)
        self._runs[key] = self._runs.get(key, 0) + 1  # a verdict about the last run under way is moot
        async with self._lock(key):
            if labels is None:  # the creator did not pass the container's labels: read them
                try:
                    labels = (await self.containers.get(namespace, cid)).labels
                except NotFound:
                    return
                except DockyardError as exc:
                    log.warning("oom recorder: container %s/%s: %s", namespace, cid, exc)
                    return
            if oomkilled.LABEL in labels:
                await self._set(namespace, cid, "")

    def container_deleted(self, namespace: str, cid: str) -> None:
        self._runs.pop((namespace, cid), None)
        self._settled.pop((namespace, cid), None)

    async def run_ending(self, bundle: Bundle, runtime: str, pid: int) -> None:
        """The task is about to go, and its cgroup with it: the last chance to read the counter."""
        key = (bundle.namespace, bundle.id)
        run = self._runs.get(key, 0)
        if self._settled.pop(key, None) != run:
            await self._judge(bundle, runtime, run)

    # -- events ------------------------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        try:
            if event.topic == "/tasks/exit":
                exit = task_events.TaskExit.FromString(event.value)
                if exit.container_id and exit.id in ("", exit.container_id):  # the init's, not an exec's
                    await self._exited(event.namespace, exit.container_id, exit.pid)
            elif event.topic == "/tasks/oom":
                oom = task_events.TaskOOM.FromString(event.value)
                if oom.container_id:
                    self._spawn(self._after_oom(event.namespace, oom.container_id))
        except DecodeError:
            log.warning("oom recorder: a %s event it cannot read", event.topic)

    async def _exited(self, namespace: str, cid: str, pid: int) -> None:
        try:
            task = self.tasks.get(namespace, cid)
        except NotFound:
            return  # deleted already: its delete judged it
        if pid and task.pid and pid != task.pid:
            return  # an earlier run's exit, told late
        run = self._runs.get((namespace, cid), 0)
        if await self._judge(task.bundle, task.runtime, run) is not None:
            self._settled[(namespace, cid)] = run

    async def _after_oom(self, namespace: str, cid: str) -> None:
        """An OOM began in the container's cgroup: once the kernel has killed, say so."""
        run = self._runs.get((namespace, cid), 0)
        for delay in KILL_CHECKS:
            await asyncio.sleep(delay)  # the kill follows the OOM notification by a moment
            try:
                task = self.tasks.get(namespace, cid)
            except NotFound:
                return
            if await self._judge(task.bundle, task.runtime, run):
                return

    async def _judge_all(self) -> None:
        for task in self.tasks.all():
            await self._judge(task.bundle, task.runtime, self._runs.get((task.namespace, task.id), 0))

    # -- the verdict ---------------------------------------------------------------------------

    async def _judge(self, bundle: Bundle, runtime: str, run: int) -> bool | None:
        """Read the task's counter; if the OOM killer struck, mark the container (unless a new run
        began since `run` was taken). True when it struck, None when that could not be told.
        Never raises a DockyardError."""
        key = (bundle.namespace, bundle.id)
        try:
            if not await self.tasks.oom_killed(bundle, runtime):
                return False
            async with self._lock(key):
                if self._runs.get(key, 0) != run:
                    return False  # the task read was an earlier run's
                try:
                    container = await self.containers.get(*key)
                except NotFound:
                    return True
                if not oomkilled.killed(container.labels):
                    await self._set(*key, "true")
                    log.info("container %s/%s: its run was OOM-killed", *key)
            return True
        except DockyardError as exc:
            log.warning("oom recorder: container %s/%s: %s", *key, exc)
            return None

    async def _set(self, namespace: str, cid: str, value: str) -> None:
        """Set the label (with "": remove it); a container gone meanwhile is no error."""
        patch = Container(id=cid, runtime_name="", spec=None, labels={oomkilled.LABEL: value})
        try:
            await self.containers.update(namespace, patch, [f"labels.{oomkilled.LABEL}"])
        except NotFound:
            pass
        except DockyardError as exc:
            log.warning("oom recorder: container %s/%s: %s", namespace, cid, exc)
