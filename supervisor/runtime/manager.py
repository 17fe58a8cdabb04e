"""The tasks the daemon runs: one shim each, found again from the state dir after a restart.

A task lives from Tasks/Create to Tasks/Delete. The shim outlives the daemon; on start the
manager reconnects to every bundle's shim, and cleans up after shims that are gone. A shim
that disconnects while the daemon runs is cleaned up the same way, with its exit published
(status 255 when nobody knows better), as containerd does.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

from dockyard_common import shimlaunch
from dockyard_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DockyardError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from supervisor.events import Exchange
from supervisor.logs import LogStore
from supervisor.network.wiring import ContainerNetworks, PendingNetwork
from supervisor.runtime.bundle import Bundle, confine_cgroup, create_bundle, list_bundles, parse_spec, remove_bundle
from supervisor.runtime.cgroups import CgroupPruner, cgroup_rel, oom_kills, read_cgroup_rel
from supervisor.runtime.fanout import each_within
from supervisor.runtime.shim import ShimBinary, ShimClient, event_container_id, task_exit_events
from supervisor.runtime.shimgate import ShimGate
from supervisor.runtime.task import Task
from supervisor.runtime.types import AnyValue, CreateOptions, Exit, Status, TaskState

__all__ = ["CreateOptions", "Task", "TaskManager"]

log = logging.getLogger("dockyard.runtime")
LIST_DEADLINE = 2.0  # seconds one shim gets to answer for a listing (List, Metrics)
LIST_CONCURRENCY = 128  # shims asked at once for a listing
R = TypeVar("R")


class RunWatch(Protocol):
    """Told where a container's run begins and ends (supervisor/runtime/oom.py): awaited, must not raise."""

    async def run_began(self, namespace: str, cid: str, labels: Mapping[str, str] | None) -> None:
        """A task was created: a new run of the container (its labels as the creator gave them)."""

    async def run_ending(self, bundle: Bundle, runtime: str, pid: int) -> None:
        """The task of `bundle` (its init `pid`, 0 if unknown) is about to be deleted, or cleaned up
        after its shim died: its cgroup is still there."""


class TaskManager:
    def __init__(self, state: Path, binary_for: Callable[[str], ShimBinary], events: Exchange,
                 network: ContainerNetworks | None = None, logs: LogStore | None = None) -> None:
        self.state = state
        self.logs = logs  # containers whose labels ask for a log get one (supervisor/logs)
        self.binary_for = binary_for
        self.events = events
        # Networks for containers whose labels ask for one (see supervisor/network/wiring.py);
        # None: every task runs with its spec's own namespaces, as under containerd.
        self.network = network
        self._tasks: dict[tuple[str, str], Task] = {}
        self._creating: set[tuple[str, str]] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self.cgroups = CgroupPruner()
        self.gate = ShimGate()  # joining a group's shim vs. its last task shutting it down
        # Told (namespace, id, present) when a task appears (create, recover) and goes (delete,
        # dead shim): stats streams join and end by it. Called synchronously; must not raise.
        self.observers: list[Callable[[str, str, bool], None]] = []
        self._follower: asyncio.Task[None] | None = None
        self.runs: RunWatch | None = None  # the OOM recorder (set by the daemon before `recover`)

    def _follow(self) -> None:
        """Start invalidating tasks' cached states on their events (once, on a running loop)."""
        if self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(self._follow_events())

    async def _follow_events(self) -> None:
        while True:
            try:
                async for event in self.events.subscribe([]):
                    if event.topic.startswith("/tasks/"):
                        task = self._tasks.get((event.namespace, event_container_id(event.type_url, event.value)))
                        if task is not None:
                            task.invalidate()
                            if event.topic == "/tasks/exit" and self.network is not None \
                                    and self.network.networked(task.namespace, task.id):
                                self._spawn(self._release_if_stopped(task))
                return  # the exchange closed (daemon shutdown)
            except ResourceExhausted:  # we fell behind and missed events: trust no cached state
                log.warning("task event follower fell behind: dropping every cached task state")
                for task in list(self._tasks.values()):
                    task.invalidate()

    def _spawn(self, coro: Awaitable[None]) -> None:
        job = asyncio.ensure_future(coro)
        self._cleanups.add(job)
        job.add_done_callback(self._cleanups.discard)

    async def _release_if_stopped(self, task: Task) -> None:
        """An exit in a networked container: if it was the init's, the task can never run again,
        so its address and host ports are freed now (as Docker and Podman do on exit)."""
        try:
            state = await task.state()
        except DockyardError:
            return  # the shim is gone: its cleanup releases the network
        if state.status == Status.STOPPED:
            await self._release_network(task.namespace, task.id)

    async def running(self, deadline: float = LIST_DEADLINE) -> dict[tuple[str, str], Path]:
        """Every task whose init has not exited (or whose shim did not say), with its bundle's
        config.json: what keeps its network at the daemon's start."""
        tasks = self.all()
        answers = await self._ask_all(tasks, functools.partial(Task.state, timeout=deadline))
        return {(t.namespace, t.id): t.bundle.path / "config.json" for t, a in zip(tasks, answers, strict=True)
                if not (isinstance(a, TaskState) and a.status == Status.STOPPED)}

    def _notify(self, namespace: str, cid: str, present: bool) -> None:
        for observer in self.observers:
            try:
                observer(namespace, cid, present)
            except Exception:
                log.exception("task observer failed for %s/%s", namespace, cid)

    # -- lookup --------------------------------------------------------------------------

    def get(self, namespace: str, cid: str) -> Task:
        task = self._tasks.get((namespace, cid))
        if task is None or task.deleting:
            raise NotFound(f"task {cid} not found")
        return task

    def list(self, namespace: str) -> list[Task]:
        return [t for (ns, _), t in sorted(self._tasks.items()) if ns == namespace and not t.deleting]

    def all(self) -> builtins.list[Task]:
        return [t for t in self._tasks.values() if not t.deleting]

    # -- many tasks at once ----------------------------------------------------------------

    async def _ask_all(self, tasks: builtins.list[Task], ask: Callable[[Task], Awaitable[R]]
                       ) -> builtins.list[R | DockyardError]:
        """`ask` each task's shim (with its own call timeout), LIST_CONCURRENCY at a time; an
        error comes back in its place."""
        return await each_within(tasks, ask, None, LIST_CONCURRENCY, what=lambda t: f"task {t.id}")

    async def _events_applied(self) -> None:
        """Before trusting cached states: the follower runs, and events already delivered to it
        have invalidated theirs."""
        self._follow()
        await asyncio.sleep(0)

    async def reported_state(self, namespace: str, cid: str) -> TaskState:
        """The init's state for a status call (the CRI's ContainerStatus, PodSandboxStatus): as
        `states` lists it, the state cached since the task's last event, else asked of its shim.
        Not for deciding what to do next: a control path asks the shim (`get(...).state()`)."""
        task = self.get(namespace, cid)
        await self._events_applied()
        cached = task.cached_state()
        return cached if cached is not None else await task.state()

    async def states(self, namespace: str, deadline: float = LIST_DEADLINE) -> builtins.list[TaskState]:
        """The init state of every task in `namespace`, sorted by id, for listing.

        A state cached since the task's last event is used as it is; the others are asked of
        their shims concurrently, `deadline` seconds each. A shim that does not answer in time
        (stopped, overloaded) is listed with status UNKNOWN instead of holding up the list; a
        task deleted meanwhile is left out."""
        await self._events_applied()
        tasks = self.list(namespace)
        found: dict[str, TaskState] = {}
        ask: builtins.list[Task] = []
        for task in tasks:
            cached = task.cached_state()
            if cached is None:
                ask.append(task)
            else:
                found[task.id] = cached
        if ask:
            t0 = time.perf_counter()
            answers = await self._ask_all(ask, functools.partial(Task.state, timeout=deadline))
            for task, answer in zip(ask, answers, strict=True):
                if isinstance(answer, TaskState):
                    found[task.id] = answer
                elif isinstance(answer, (DeadlineExceeded, Unavailable)) and not task.deleting:
                    log.warning("task %s/%s: %s; listed as UNKNOWN", task.namespace, task.id, answer)
                    found[task.id] = TaskState(id=task.id, exec_id="", pid=task.pid, status=Status.UNKNOWN)
                elif not isinstance(answer, NotFound) and not task.deleting:
                    raise answer
            log.debug("states of %d tasks: %d asked in %.1f ms", len(tasks), len(ask),
                      (time.perf_counter() - t0) * 1e3)
        return [found[t.id] for t in tasks if t.id in found]

    async def metrics(self, tasks: builtins.list[Task], deadline: float = LIST_DEADLINE
                      ) -> builtins.list[tuple[Task, AnyValue | None]]:
        """Each task's cgroup metrics, asked of the shims concurrently, `deadline` seconds each;
        a task whose shim did not answer in time or that is gone is left out (and logged)."""
        answers = await self._ask_all(tasks, functools.partial(Task.stats, timeout=deadline))
        out: builtins.list[tuple[Task, AnyValue | None]] = []
        for task, answer in zip(tasks, answers, strict=True):
            if not isinstance(answer, DockyardError):
                out.append((task, answer))
            elif isinstance(answer, (DeadlineExceeded, Unavailable)):
                log.warning("task %s/%s: no metrics: %s", task.namespace, task.id, answer)
            elif not isinstance(answer, NotFound) and not task.deleting:
                raise answer
        return out

    # -- lifecycle -----------------------------------------------------------------------

    async def create(self, namespace: str, cid: str, runtime: str, spec_json: bytes, opts: CreateOptions,
                     labels: Mapping[str, str] | None = None) -> Task:
        """Create the task of container `cid`; its `labels` may ask for a network (attached
        here, released again if anything after fails)."""
        key = (namespace, cid)
        if key in self._tasks or key in self._creating:
            raise AlreadyExists(f"task {cid}")
        self._creating.add(key)
        rel: str | None = None  # a foreign shim's cgroup below our parent
        held: list[str] = []
        created = False
        pending: PendingNetwork | None = None
        try:
            binary = self.binary_for(runtime)
            if binary.foreign:
                spec = parse_spec(spec_json)
                spec_json = confine_cgroup(spec, namespace, cid)
                rel = cgroup_rel(spec, namespace, cid, foreign=True)
                held = self.cgroups.hold(rel)
            if self.network is not None and labels:
                spec = parse_spec(spec_json)
                # the plugins go on while the shim starts and creates the task in the new netns
                pending = await self.network.begin(namespace, cid, labels, spec, self._pid_of)
                if pending is not None:
                    spec_json = json.dumps(spec).encode()
            bundle, group = await asyncio.to_thread(_new_bundle, self.state, namespace, cid, spec_json)
            task: Task | None = None
            log_fd = self._follow_log(bundle)
            try:
                if self.logs is not None and labels:  # before the shim starts: it reads this with the spec
                    await asyncio.to_thread(self.logs.prepare, bundle.path, namespace, cid, labels)
                async with self.gate.joining(group) if group else contextlib.nullcontext():
                    address = await binary.start(bundle, opts.options)
                    log.debug("task %s/%s: shim serving on %s", namespace, cid, address)
                    await asyncio.to_thread(bundle.write, "address", address)
                    await asyncio.to_thread(bundle.write, "runtime", runtime)
                    shim = await ShimClient.connect(address, bundle, functools.partial(self._shim_closed, key))
                    task = Task(bundle, runtime, shim, 0, log_fd=log_fd, group=group)
                    self._tasks[key] = task
                log.debug("task %s/%s: creating in the shim", namespace, cid)
                await task.create(opts)
                if pending is not None:
                    await pending.settle()  # the task's process may start only with its network
                if self.runs is not None:  # a new run: the last one's OOM verdict goes
                    await self.runs.run_began(namespace, cid, labels)
                self._notify(namespace, cid, True)
                created = True
                return task
            except BaseException as exc:
                # a failed attach is the cause when both failed (it took the netns away)
                cause = await pending.abandon() if pending is not None else None
                await self._abandon(key, task, bundle, binary, log_fd)
                if cause is not None and cause is not exc:
                    raise cause from None
                raise
        finally:
            if pending is not None and not created:
                await self._release_network(namespace, cid)
            self._creating.discard(key)
            self.cgroups.release(held)
            if not created:
                self.cgroups.prune(rel)

    async def oom_killed(self, bundle: Bundle, runtime: str) -> bool:
        """Whether the kernel's OOM killer killed a process in the cgroup of `bundle`'s task during
        this run (its `oom_kill` counter; the cgroup lives from the task's create to its delete)."""
        try:
            foreign = self.binary_for(runtime).foreign
        except DockyardError:
            foreign = False
        config = str(bundle.path / "config.json")

        def read() -> int:
            return oom_kills(read_cgroup_rel(config, bundle.namespace, bundle.id, foreign=foreign))

        return await asyncio.to_thread(read) > 0

    def _pid_of(self, namespace: str, cid: str) -> int | None:
        task = self._tasks.get((namespace, cid))
        return task.pid if task is not None and not task.deleting and task.pid else None

    async def container_deleted(self, namespace: str, cid: str) -> None:
        """The container's record is gone: so goes its network, unless its task still runs (the
        task's delete releases it then)."""
        if (namespace, cid) not in self._tasks and (namespace, cid) not in self._creating:
            await self._release_network(namespace, cid)
        if self.logs is not None:
            await asyncio.to_thread(self.logs.remove, namespace, cid)

    async def _release_network(self, namespace: str, cid: str) -> None:
        """The task is gone (or never came): its network goes too. A failure is logged; the
        attachment's record stays for the next release or the next start's reconcile."""
        if self.network is None:
            return
        try:
            await self.network.release(namespace, cid)
        except DockyardError as exc:
            log.warning("task %s/%s: releasing its network: %s", namespace, cid, exc)

    async def delete(self, namespace: str, cid: str) -> Exit:
        """Delete the init process in the shim, stop the shim, remove the bundle."""
        task = self.get(namespace, cid)
        if self.runs is not None:  # before the shim removes the cgroup, and with it its OOM counter
            await self.runs.run_ending(task.bundle, task.runtime, task.pid)
        resp = await task.delete()
        task.deleting = True
        await self._retire(task)
        await self._release_network(namespace, cid)
        return resp

    async def _abandon(self, key: tuple[str, str], task: Task | None, bundle: Bundle, binary: ShimBinary,
                       log_fd: int | None) -> None:
        """Undo a failed create: nothing of it may stay behind (shim, mounts, bundle)."""
        self._tasks.pop(key, None)
        if task is not None:
            task.deleting = True
            with contextlib.suppress(DockyardError):
                await task.shim.delete("", timeout=10)
            await self._release_shim(task)
        if bundle.read("address"):
            with contextlib.suppress(DockyardError):
                await binary.delete(bundle)
        self._close_log(log_fd)
        await asyncio.to_thread(remove_bundle, bundle)

    async def _retire(self, task: Task) -> None:
        await self._release_shim(task)
        self._tasks.pop((task.namespace, task.id), None)
        self._notify(task.namespace, task.id, False)
        self._close_log(task.log_fd)
        await self._prune_cgroup(task.bundle, task.runtime)
        await asyncio.to_thread(remove_bundle, task.bundle)

    async def _release_shim(self, task: Task) -> None:
        """The task (deleted in its shim) is done with the shim: the shim is asked to exit unless
        it still serves another live task of ours (a pod's shim serves all of the pod's
        containers, and the last one out shuts it down). A task marked deleting has no container
        in the shim any more, so two tasks of a group retiring at once both send the Shutdown,
        and the shim exits on the first."""
        address, group = task.shim.address, task.group
        async with self.gate.leaving(group) if group else contextlib.nullcontext():
            shared = bool(address) and any(t is not task and not t.deleting and t.shim.address == address
                                           for t in self._tasks.values())
            if not shared:
                await task.shim.ask_shutdown()
        if shared:
            await task.shim.disconnect()
        else:
            await task.shim.wait_closed()

    async def _prune_cgroup(self, bundle: Bundle, runtime: str) -> None:
        """After a foreign shim's task is gone: the levels above its cgroup, if empty now (our
        own shim does this itself when it removes the cgroup)."""
        try:
            foreign = self.binary_for(runtime).foreign
        except DockyardError:
            return
        if foreign:
            rel = await asyncio.to_thread(read_cgroup_rel, str(bundle.path / "config.json"), bundle.namespace,
                                          bundle.id, foreign=True)
            self.cgroups.prune(rel)

    # -- shims that go away --------------------------------------------------------------

    def _shim_closed(self, key: tuple[str, str]) -> None:
        task = self._tasks.get(key)
        if task is None or task.deleting:
            return
        task.deleting = True
        self._spawn(self._cleanup_dead(task.bundle, task.runtime, task.pid, task.log_fd, task.shim, publish=True))

    async def _cleanup_dead(self, bundle: Bundle, runtime: str, pid: int, log_fd: int | None,
                            shim: ShimClient | None, publish: bool) -> None:
        log.warning("shim of task %s/%s is gone: cleaning up", bundle.namespace, bundle.id)
        status, exited = 255, time.time_ns()
        if self.runs is not None:  # `cleanup` (the shim's delete) removes the cgroup
            await self.runs.run_ending(bundle, runtime, pid)
        try:
            found = await self.binary_for(runtime).cleanup(bundle)
            pid, status = found.pid or pid, found.exit_status
            if found.exited_at_ns is not None:
                exited = found.exited_at_ns
        except DockyardError as exc:
            log.warning("cleanup of task %s/%s: %s", bundle.namespace, bundle.id, exc)
        if self._tasks.pop((bundle.namespace, bundle.id), None) is not None:
            self._notify(bundle.namespace, bundle.id, False)
        self._close_log(log_fd)
        if shim is not None:
            await shim.conn.close()
        await self._prune_cgroup(bundle, runtime)
        await asyncio.to_thread(remove_bundle, bundle)
        await self._release_network(bundle.namespace, bundle.id)
        if publish:
            for topic, type_url, payload in task_exit_events(bundle.id, pid, status, exited):
                self.events.publish(bundle.namespace, topic, type_url, payload)

    # -- restart -------------------------------------------------------------------------

    async def recover(self) -> None:
        """Reconnect to the shims of every bundle left in the state dir."""
        self._follow()
        for bundle in await asyncio.to_thread(list_bundles, self.state):
            key = (bundle.namespace, bundle.id)
            runtime = bundle.read("runtime")
            address = bundle.read("address")
            log_fd = self._follow_log(bundle)
            try:
                shim = await ShimClient.connect(address, bundle, functools.partial(self._shim_closed, key), timeout=2)
                shim_pid, task_pid = await shim.connect_task(timeout=5)
            except DockyardError as exc:
                log.warning("task %s/%s: shim unreachable (%s): cleaning up", bundle.namespace, bundle.id, exc)
                await self._cleanup_dead(bundle, runtime, 0, log_fd, None, publish=False)
                continue
            self._tasks[key] = Task(bundle, runtime, shim, task_pid, log_fd=log_fd, group=_group_of(bundle))
            self._notify(bundle.namespace, bundle.id, True)
            log.info("task %s/%s: reconnected to its shim (pid %d)", bundle.namespace, bundle.id, shim_pid)

    async def close(self) -> None:
        """Daemon shutdown: drop the connections, leave the shims (and containers) running."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        for job in list(self._cleanups):
            with contextlib.suppress(Exception):
                await job
        for task in list(self._tasks.values()):
            task.deleting = True  # a closing connection is not a dead shim now
            await task.shim.conn.close()
            self._close_log(task.log_fd)
        self._tasks.clear()

    # -- the shim's log FIFO -------------------------------------------------------------

    def _follow_log(self, bundle: Bundle) -> int | None:
        """Read the shim's log FIFO into our log (containerd's contract: the shim writes it)."""
        try:
            # O_RDWR: we never see EOF when the shim closes it, and opening never blocks.
            fd = os.open(bundle.log_fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        shim_log = logging.getLogger(f"dockyard.shim.{bundle.namespace}.{bundle.id}")

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(fd, 65536):
                    for line in chunk.decode(errors="replace").splitlines():
                        if line.strip():
                            shim_log.info("%s", line)

        asyncio.get_running_loop().add_reader(fd, drain)
        return fd

    def _close_log(self, fd: int | None) -> None:
        if fd is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def _new_bundle(state: Path, namespace: str, cid: str, spec_json: bytes) -> tuple[Bundle, tuple[str, str] | None]:
    bundle = create_bundle(state, namespace, cid, spec_json)
    return bundle, _group_of(bundle)


def _group_of(bundle: Bundle) -> tuple[str, str] | None:
    """The shim group the bundle's spec names, as (namespace, group); None for a shim of its own."""
    group = shimlaunch.group_of(str(bundle.path))
    return (bundle.namespace, group) if group else None
