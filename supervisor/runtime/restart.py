"""The restart monitor: tasks of containers whose labels carry a restart policy come back after
they exit, in the daemon (so every client, `dock`, `ctr` or nerdctl-style labels, gets it).

Words (labels and rules: dockyard_common/restartpolicy.py, containerd's names):
- An *exit* is the /tasks/exit event of a task's init. The monitor records it on the container
  (exit status and time), and if the policy says so schedules a *restart* after a back-off.
- A restart deletes the stopped task, raises the restart count and creates and starts a new
  task of the same container: rootfs from its snapshot, the same runtime and runtime options,
  the same labels (so its network and its `dock logs` log come back too), stdout/stderr to the
  `containerd.io/restart.loguri` label's URI (or `.logpath`), else none (the shim's own log,
  `dock logs`, still captures it).
- An *explicit stop* is a user's Tasks/Kill of the init with a stopping signal: marked on the
  container before the signal goes, it holds every policy while this daemon runs.
- A *user start* (Tasks/Create by a client) begins a new series: count 0, not stopped, and
  the start time recorded (dockyard.restart.started-at).
- At the daemon's start, after the runtime has found its shims again, every container with
  restart labels whose task is stopped or gone is judged as if it had just exited, and started
  without delay if its policy says so. A run that began and was never seen to end (a reboot,
  the shims killed) ended with status 255; a task deleted after its recorded exit is judged by
  that exit; a container never started stays so.

A pending restart is cancelled by an explicit stop, a user start, the container's delete and the
daemon's stop; nothing the monitor starts outlives its container.

The same exits drive `--rm` (dockyard_common/autoremove.py): a container with the auto-remove
label and no restart policy is handed to the `remover` (autoremove.py) when its init exits; at
the daemon's start, one whose task is stopped, or gone and made before this daemon started, is
removed too (Docker's daemon removes them at its start); a catch-up reconcile removes the stopped
ones.

    monitor = RestartMonitor(containers, tasks, snapshots, namespaces, events)
    await monitor.start()    # after tasks.recover(); subscribed on return, reconciles in the background
    ...
    await monitor.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_common import autoremove
from dockyard_common import restartpolicy as rp
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound
from dockyard_common.ocispec import SPEC_TYPE_URL, STOP_SIGNAL_LABEL
from dockyard_common.types import Container
from supervisor.events import Event, Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.types import CreateOptions, Mount, Status

log = logging.getLogger("dockyard.restart")

EXIT_FILTER = 'topic=="/tasks/exit"'
# Signals whose default action ends a process: a user sending one means "stop"; others (HUP,
# USR1, WINCH, ...) usually ask a running server to do something and are not stops.
STOPPING_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
LOST_STATUS = 255  # the exit status of a task whose shim is gone (containerd's choice too)

Key = tuple[str, str]


def _exit_of(event: Event) -> tuple[str, int, int | None, int] | None:
    """(container id, exit status, exited at in ns, pid) of an init's exit; None for an exec's
    exit or a bad payload."""
    try:
        exit = task_events.TaskExit.FromString(event.value)
    except DecodeError:
        return None
    if not exit.container_id or exit.id not in ("", exit.container_id):
        return None
    stamp = exit.exited_at.ToNanoseconds() if exit.HasField("exited_at") else None
    return exit.container_id, exit.exit_status, stamp or None, exit.pid


async def _observed(observer: Callable[[str, str], Awaitable[None]], namespace: str, cid: str) -> None:
    try:
        await observer(namespace, cid)
    except DockyardError as exc:
        log.warning("exit of container %s/%s: %s", namespace, cid, exc)


def _signal_number(text: str) -> int | None:
    text = text.strip().upper()
    if text.isdigit():
        return int(text)
    with contextlib.suppress(KeyError):
        return int(signal.Signals[text if text.startswith("SIG") else f"SIG{text}"])
    return None


def is_stop(signum: int, labels: Mapping[str, str]) -> bool:
    """Does sending `signum` to the init stop the container, as its user means it?"""
    return signum in STOPPING_SIGNALS or signum == _signal_number(labels.get(STOP_SIGNAL_LABEL, ""))


def _has_restart_labels(labels: Mapping[str, str]) -> bool:
    return rp.POLICY_LABEL in labels or rp.STATUS_LABEL in labels


class Remover(Protocol):
    async def remove(self, namespace: str, judged: Container) -> bool: ...


class RestartMonitor:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, snapshots: SnapshotStore,
                 namespaces: NamespaceStore, events: Exchange) -> None:
        self.containers = containers
        self.tasks = tasks
        self.snapshots = snapshots
        self.namespaces = namespaces
        self.events = events
        self._pending: dict[Key, asyncio.Task[None]] = {}  # a restart waiting or under way
        self._jobs: set[asyncio.Task[None]] = set()  # every job of ours not done yet (restarts, reconciles)
        self._delay: dict[Key, float] = {}  # the last back-off, for the doubling
        self._started: dict[Key, float] = {}  # monotonic time we started its current task
        self._waiting: set[asyncio.Task[None]] = set()  # pending restarts still in their back-off
        self._exit_pids: dict[Key, int] = {}  # the init pid of the last exit judged
        self._follower: asyncio.Task[None] | None = None
        self._closed = False
        self.remover: Remover | None = None  # `--rm`: set by the daemon before `start`
        # Told of every init's exit, in the background (the CRI frees an exited container's shim).
        self.exit_observers: list[Callable[[str, str], Awaitable[None]]] = []
        self._removing: set[Key] = set()
        self._removals: set[asyncio.Task[None]] = set()  # finished, not cancelled, at close: half a removal
        # would leave anonymous volumes no container names (the next start no longer sees them)
        self._born = datetime.now(UTC)  # a container made before this is no client's run still being set up
        self.reconciled = asyncio.Event()  # set once the start-up reconcile is done

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow exits from now on, then bring back what the policies want (in the background:
        the daemon serves meanwhile). Returns once the subscription is in place: no exit after
        this is missed."""
        daemon_start = True

        async def in_place() -> None:  # now a reconcile misses no exit (again, after falling behind)
            nonlocal daemon_start
            self._spawn_reconcile(daemon_start)
            daemon_start = False

        self._follower = await self.events.start_following(
            [EXIT_FILTER], self._on_exit, in_place, who="restart monitor", on_closed=self._stop_jobs)

    async def close(self) -> None:
        """Daemon stop: no more restarts; the tasks that run keep running (their shims do)."""
        self._stop_jobs()
        jobs = [j for j in [self._follower, *self._jobs] if j is not None]
        if self._follower is not None:
            self._follower.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        self._follower = None

    def _stop_jobs(self) -> None:
        """No restart from now on (the daemon stops): cancel the waiting and running ones."""
        self._closed = True
        for job in list(self._jobs):
            if job not in self._removals:
                job.cancel()
        self._pending.clear()

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _on_exit(self, event: Event) -> None:
        found = _exit_of(event)
        if found is not None:
            try:
                await self._exited(event.namespace, *found)
            except DockyardError as exc:  # one bad record must not end the monitor
                log.warning("restart monitor: container %s/%s: %s", event.namespace, found[0], exc)

    def _spawn_reconcile(self, daemon_start: bool) -> None:
        async def reconcile() -> None:
            try:
                await self.reconcile(daemon_start=daemon_start)
            except Exception:  # a bug must not pass silently in a task nobody awaits
                log.exception("restart monitor: reconcile failed")
            finally:
                self.reconciled.set()

        self._spawn(reconcile())

    # -- the API's hooks (supervisor/services/tasks.py) -------------------------------------

    async def user_killing(self, namespace: str, cid: str, signum: int, exec_id: str) -> None:
        """Before a user's Tasks/Kill goes out: a stopping signal to the init is an explicit stop."""
        if exec_id:
            return
        try:
            container = await self.containers.get(namespace, cid)
        except NotFound:
            return
        if not _has_restart_labels(container.labels) or not is_stop(signum, container.labels):
            return
        self._cancel((namespace, cid))
        if container.labels.get(rp.EXPLICITLY_STOPPED_LABEL) != "true":
            await self._set_labels(namespace, cid, {rp.EXPLICITLY_STOPPED_LABEL: "true"})

    async def user_created(self, namespace: str, container: Container) -> None:
        """After a user's Tasks/Create: a new run series; a pending restart of ours is moot."""
        key = (namespace, container.id)
        self._cancel(key)
        self._delay.pop(key, None)
        labels = container.labels
        if not _has_restart_labels(labels):
            return
        self._started[key] = time.monotonic()
        reset = {rp.STARTED_AT_LABEL: rp.rfc3339(time.time_ns())}
        if labels.get(rp.COUNT_LABEL, "0") != "0":
            reset[rp.COUNT_LABEL] = "0"
        if labels.get(rp.EXPLICITLY_STOPPED_LABEL, "false") != "false":
            reset[rp.EXPLICITLY_STOPPED_LABEL] = "false"
        await self._set_labels(namespace, container.id, reset)

    async def container_deleted(self, namespace: str, cid: str) -> None:
        """The container's record is gone: so is any restart of it."""
        key = (namespace, cid)
        if self._cancel(key):
            log.info("container %s/%s deleted: its pending restart is cancelled", namespace, cid)
        self._delay.pop(key, None)
        self._started.pop(key, None)
        self._exit_pids.pop(key, None)

    def _cancel(self, key: Key) -> bool:
        """Cancel a pending restart of `key`; True if there was one."""
        job = self._pending.pop(key, None)
        if job is None or job is asyncio.current_task():
            return False
        job.cancel()
        return True

    # -- exits -------------------------------------------------------------------------------

    async def _exited(self, namespace: str, cid: str, status: int, exited_at_ns: int | None = None,
                      pid: int = 0, daemon_start: bool = False) -> None:
        """Record the exit on the container; schedule a restart if its policy wants one (at the
        daemon's start at once, else after the back-off)."""
        for observer in self.exit_observers:
            self._spawn(_observed(observer, namespace, cid))
        key = (namespace, cid)
        if pid and self._exit_pids.get(key) == pid:
            return  # the same exit told twice (the shim's event, then its cleanup's)
        job = self._pending.get(key)
        if job is not None and job is not asyncio.current_task():
            if job not in self._waiting:
                # Our restart is under way and the task it started has ended already: judge
                # this exit once the restart is done.
                self._spawn(self._exited_after(job, namespace, cid, status, exited_at_ns, pid))
            return  # else a restart is coming already
        try:
            container = await self.containers.get(namespace, cid)
        except NotFound:
            return
        restarts = _has_restart_labels(container.labels)
        if not restarts and not autoremove.wanted(container.labels):
            return
        if pid:
            if self._exit_pids.get(key) == pid:
                return  # told twice while we read the record
            self._exit_pids[key] = pid
        if not restarts:
            self._remove(namespace, container)
            return
        when = rp.rfc3339(exited_at_ns if exited_at_ns is not None else time.time_ns())
        container = await self._set_labels(namespace, cid, {rp.EXIT_STATUS_LABEL: str(status),
                                                            rp.EXITED_AT_LABEL: when}) or container
        state = rp.State.of(container.labels)
        if not rp.should_restart(state, status, daemon_start=daemon_start):
            log.info("container %s/%s exited (%d): not restarted (policy %s%s)", namespace, cid, status,
                     state.policy, ", stopped by a user" if state.explicitly_stopped else "")
            return
        if daemon_start:
            log.info("container %s/%s: restarting at the daemon's start (policy %s, last exit %d)", namespace, cid,
                     state.policy, status)
            self._schedule(key, 0, status, daemon_start=True)
            return
        started = self._started.get(key)
        ran_for = time.monotonic() - started if started is not None else None
        delay = rp.next_delay(self._delay.get(key), ran_for)
        self._delay[key] = delay
        log.info("container %s/%s exited (%d): restarting in %.1f s (policy %s, restart %d)", namespace, cid,
                 status, delay, state.policy, state.count + 1)
        self._schedule(key, delay, status, daemon_start=False)

    async def _exited_after(self, job: asyncio.Task[None], namespace: str, cid: str, status: int,
                            exited_at_ns: int | None, pid: int) -> None:
        await asyncio.wait({job})
        try:
            await self._exited(namespace, cid, status, exited_at_ns, pid)
        except DockyardError as exc:
            log.warning("restart monitor: container %s/%s: %s", namespace, cid, exc)

    def _schedule(self, key: Key, delay: float, status: int, daemon_start: bool) -> None:
        if self._closed:
            return
        self._pending[key] = self._spawn(self._restart_later(key, delay, status, daemon_start))

    async def _restart_later(self, key: Key, delay: float, status: int, daemon_start: bool) -> None:
        try:
            me = asyncio.current_task()
            if me is not None:
                self._waiting.add(me)
            try:
                await asyncio.sleep(delay)  # the back-off itself, not a wait for something
            finally:
                self._waiting.discard(me)
            await self._restart(key, status, daemon_start)
        except DockyardError as exc:
            log.warning("restarting container %s/%s failed: %s", key[0], key[1], exc)
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]
            # Counted as a run that failed at once: the policy and the back-off decide again.
            self._started[key] = time.monotonic()
            try:
                await self._exited(key[0], key[1], LOST_STATUS)
            except DockyardError as again:
                log.warning("container %s/%s: no further restart: %s", key[0], key[1], again)
        except Exception:  # a bug must not pass silently in a task nobody awaits
            log.exception("restarting container %s/%s failed", key[0], key[1])
        finally:
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]

    async def _restart(self, key: Key, status: int, daemon_start: bool) -> None:
        namespace, cid = key
        try:
            container = await self.containers.get(namespace, cid)
        except NotFound:
            return
        state = rp.State.of(container.labels)
        if not rp.should_restart(state, status, daemon_start=daemon_start):
            return  # the labels changed meanwhile (a user's stop, status=stopped, a new policy)
        with contextlib.suppress(NotFound):
            old = self.tasks.get(namespace, cid)
            if (await old.state()).status != Status.STOPPED:
                return  # someone started it again meanwhile
            await self.tasks.delete(namespace, cid)
        update = {rp.COUNT_LABEL: str(state.count + 1), rp.STARTED_AT_LABEL: rp.rfc3339(time.time_ns())}
        if state.explicitly_stopped:  # only `always` at the daemon's start gets here so
            update[rp.EXPLICITLY_STOPPED_LABEL] = "false"
        container = await self._set_labels(namespace, cid, update) or container
        await self._create_and_start(namespace, container)
        self._started[key] = time.monotonic()
        log.info("container %s/%s restarted (restart %d)", namespace, cid, state.count + 1)

    async def _create_and_start(self, namespace: str, container: Container) -> None:
        """A new task of `container`, as a client's Tasks/Create then Start would make it."""
        if container.spec is None or container.spec.type_url != SPEC_TYPE_URL:
            raise InvalidArgument(f"container {container.id}: spec must be an OCI runtime spec ({SPEC_TYPE_URL})")
        rootfs: list[Mount] = []
        if container.snapshot_key:
            rootfs = await self.snapshots.mounts(namespace, container.snapshotter, container.snapshot_key)
        options = b""
        if container.runtime_options is not None:  # as the Tasks service hands them to the shim
            options = any_pb2.Any(type_url=container.runtime_options.type_url,
                                  value=container.runtime_options.value).SerializeToString()
        uri = rp.log_uri(container.labels)
        opts = CreateOptions(rootfs=rootfs, stdout=uri, stderr=uri, options=options)
        task = await self.tasks.create(namespace, container.id, container.runtime_name, container.spec.value, opts,
                                       labels=container.labels)
        try:
            await task.start()
        except BaseException:
            with contextlib.suppress(DockyardError):
                await self.tasks.delete(namespace, container.id)
            raise

    # -- the daemon's start ------------------------------------------------------------------

    async def reconcile(self, daemon_start: bool = True) -> None:
        """Judge every container with restart labels whose task is stopped or gone, as if it had
        just exited; restart those the policy wants back (at the daemon's start: at once)."""
        judged = 0
        for namespace in [ns.name for ns in await self.namespaces.list()]:
            for container in await self.containers.list(namespace):
                if self._closed:
                    return
                if not _has_restart_labels(container.labels):
                    if autoremove.wanted(container.labels):
                        try:
                            await self._judge_removal(namespace, container, daemon_start)
                        except DockyardError as exc:
                            log.warning("restart monitor: container %s/%s: %s", namespace, container.id, exc)
                    continue
                if (namespace, container.id) in self._pending:
                    continue
                judged += 1
                try:
                    await self._judge(namespace, container, daemon_start)
                except DockyardError as exc:
                    log.warning("restart monitor: container %s/%s: %s", namespace, container.id, exc)
        log.info("restart monitor: %s reconcile done (%d containers with a restart policy judged)",
                 "start-up" if daemon_start else "catch-up", judged)

    async def _judge(self, namespace: str, container: Container, daemon_start: bool) -> None:
        labels = container.labels
        try:
            task = self.tasks.get(namespace, container.id)
        except NotFound:
            if rp.run_lost(labels):  # gone while no daemon watched: a reboot, its shim killed
                await self._exited(namespace, container.id, LOST_STATUS, daemon_start=daemon_start)
            elif daemon_start and labels.get(rp.EXIT_STATUS_LABEL, "").isdigit():
                # It ended, and its task was deleted since: judged by the exit recorded.
                state = rp.State.of(labels)
                status = int(labels[rp.EXIT_STATUS_LABEL])
                if rp.should_restart(state, status, daemon_start=True):
                    self._schedule((namespace, container.id), 0, status, daemon_start=True)
            return  # else never started: a created container is not started by a daemon's start
        now = await task.state()
        if now.status == Status.STOPPED:
            await self._exited(namespace, container.id, now.exit_status, now.exited_at_ns, now.pid,
                               daemon_start=daemon_start)

    # -- --rm ----------------------------------------------------------------------------------

    async def _judge_removal(self, namespace: str, container: Container, daemon_start: bool) -> None:
        """At a reconcile: remove an --rm container whose task is stopped; at the daemon's start
        also one whose task is gone (ended while none watched), unless it was made since."""
        try:
            task = self.tasks.get(namespace, container.id)
        except NotFound:
            made = container.created_at
            if daemon_start and made is not None and made < self._born:
                self._remove(namespace, container)
            return
        if (await task.state()).status == Status.STOPPED:
            self._remove(namespace, container)

    def _remove(self, namespace: str, container: Container) -> None:
        """Hand the container to the remover, in the background (once at a time)."""
        key = (namespace, container.id)
        if self.remover is None or self._closed or key in self._removing:
            return
        remover = self.remover
        self._removing.add(key)

        async def remove() -> None:
            try:
                await remover.remove(namespace, container)
            except DockyardError as exc:
                log.warning("removing container %s/%s (--rm) failed: %s", namespace, container.id, exc)
            except Exception:  # a bug must not pass silently in a task nobody awaits
                log.exception("removing container %s/%s (--rm) failed", namespace, container.id)
            finally:
                self._removing.discard(key)

        job = self._spawn(remove())
        self._removals.add(job)
        job.add_done_callback(self._removals.discard)

    # -- labels ------------------------------------------------------------------------------

    async def _set_labels(self, namespace: str, cid: str, labels: Mapping[str, str]) -> Container | None:
        """Set (or, with "", remove) some labels; None when the container is gone."""
        patch = Container(id=cid, runtime_name="", spec=None, labels=dict(labels))
        try:
            return await self.containers.update(namespace, patch, [f"labels.{k}" for k in labels])
        except NotFound:
            return None
