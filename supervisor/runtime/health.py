"""The health monitor: Docker's container health checks, run in the daemon (so every client,
`dock` or any gRPC one, gets them), structured as the restart monitor (restart.py) is.

Words (labels, defaults and the config's rules: dockyard_common/healthcheck.py):
- A *check* is the label `dockyard.healthcheck` of a container (Docker's HealthConfig as JSON).
- A *watch* follows one run of a container's task: it begins at the init's /tasks/start event (a
  user's start, a restart policy's restart) and ends at its /tasks/exit or /tasks/delete, the
  container's delete or the daemon's stop. It waits an interval (the start interval while the
  run is in its start period and still `starting`), then *probes*, records the result, and so on.
- A *probe* is an exec in the running task through its shim, as Tasks/Exec does: the init's
  process spec (user, env, cwd, capabilities) with the check's argv (CMD-SHELL under the image's
  SHELL, else /bin/sh -c); stdout and stderr into one FIFO the loop drains (so output keeps its
  order, capped at 4 KiB as Docker keeps it); killed (SIGKILL) when it overruns the timeout;
  always killed if still running and deleted from its shim, its FIFO dir removed, on every path
  (an error of the shim, the watch cancelled under it). At most PROBES_AT_ONCE probes run at
  once across the daemon; everything is asynchronous, so probes of many containers never hold
  the loop.
- A probe's exec id starts with EXEC_PREFIX, and its FIFO dir, made before the exec, is named
  `<namespace>@<container>@<exec id>` (`@` is in no namespace or container id): so a daemon
  killed mid-probe leaves on disk what it left in which shim. The next daemon's monitor reads
  those names at start and, before it resumes a container's watch, kills and deletes those execs
  and any other of ours its shim still lists (Tasks/ListPids).
- A *result* is Docker's: exit 0 healthy; anything else a failure, -1 when the probe could not
  run or overran. Status `starting` until the first success; a failure raises FailingStreak
  (not while `starting` inside the start period), `unhealthy` once it reaches Retries; a success
  resets it. The last 5 results are kept.

Where it is kept: the container record (any containerd client reads it): the label
`dockyard.health.status` (filterable), and the extension `dockyard.health`
(dockyard.containers.v1.Health: status, streak, the log, and the pid and start time of the run
it belongs to). A change of status is published as /containers/health_status
(dockyard.containers.v1.HealthStatus), Docker's `health_status: healthy` event. When a watch
ends with its run, the status becomes `unhealthy` (Docker's rule: a stopped monitor reports
unhealthy); a new run starts again at `starting`, keeping the log. A daemon that starts again
resumes the watch of every running container with a check, keeping the stored state when it
belongs to the same run (same init pid), else starting again.

    monitor = HealthMonitor(containers, tasks, namespaces, events, state_dir / "health")
    await monitor.start()    # after tasks.recover(); subscribed on return
    ...
    await monitor.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_api.containerd.runtime.v2.runc.options import oci_pb2
from dockyard_api.dockyard.containers.v1 import health_pb2
from dockyard_common import healthcheck as hc
from dockyard_common.aio import uninterrupted
from dockyard_common.errors import DockyardError, Internal, NotFound
from dockyard_common.jsonutil import json_value
from dockyard_common.types import AnyValue, Container
from supervisor.events import Event, Exchange
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.task import Task
from supervisor.runtime.types import ExecOptions, Status

log = logging.getLogger("dockyard.health")

FILTERS = ['topic=="/tasks/start"', 'topic=="/tasks/exit"', 'topic=="/tasks/delete"']
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
PROBES_AT_ONCE = 32  # probes running at once across the daemon; others wait their turn
EXEC_PREFIX = "dockyard-health-"  # a probe's exec id: this, then 12 hex digits
_SEP = "@"  # in a FIFO dir's name, between namespace, container and exec id (in none of them)
KILL_WAIT = 5.0  # seconds for a killed probe to be reported gone
Key = tuple[str, str]


@dataclass(frozen=True)
class Result:
    start_ns: int
    end_ns: int
    exit_code: int
    output: str


@dataclass
class HealthState:
    status: str = hc.STARTING
    failing_streak: int = 0
    log: list[Result] = field(default_factory=list)
    pid: int = 0
    started_at_ns: int = 0


# -- the rules (pure) ---------------------------------------------------------------------------


def next_interval_ns(check: hc.HealthConfig, state: HealthState, now_ns: int) -> int:
    """Docker's getInterval: the start interval while in the start period and still starting."""
    if now_ns - state.started_at_ns >= check.start_period_ns:
        return check.interval_ns
    return check.start_interval_ns if state.status == hc.STARTING else check.interval_ns


def apply_result(check: hc.HealthConfig, state: HealthState, result: Result) -> HealthState:
    """Docker's handleProbeResult: the new state after `result`."""
    entries = [*state.log, result][-hc.MAX_LOG_ENTRIES:]
    if result.exit_code == 0:
        return replace(state, status=hc.HEALTHY, failing_streak=0, log=entries)
    streak, status = state.failing_streak, state.status
    in_start_period = result.start_ns - state.started_at_ns < check.start_period_ns
    if not (status == hc.STARTING and in_start_period):
        streak += 1
        if streak >= check.retries_n:
            status = hc.UNHEALTHY
    return replace(state, status=status, failing_streak=streak, log=entries)


# -- the extension's bytes ----------------------------------------------------------------------


def _stamp(ns: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(ns)
    return out


def encode(state: HealthState) -> bytes:
    return health_pb2.Health(
        status=state.status, failing_streak=state.failing_streak, pid=state.pid,
        started_at=_stamp(state.started_at_ns),
        log=[health_pb2.HealthcheckResult(start=_stamp(r.start_ns), end=_stamp(r.end_ns), exit_code=r.exit_code,
                                          output=r.output) for r in state.log]).SerializeToString()


def decode(container: Container) -> HealthState | None:
    """The state stored on a container record; None when there is none (or it is unreadable)."""
    ext = container.extensions.get(hc.EXTENSION)
    if ext is None or ext.type_url != hc.TYPE_URL:
        return None
    try:
        msg = health_pb2.Health.FromString(ext.value)
    except DecodeError:
        return None
    return HealthState(msg.status or hc.STARTING, msg.failing_streak,
                       [Result(r.start.ToNanoseconds(), r.end.ToNanoseconds(), r.exit_code, r.output) for r in msg.log],
                       msg.pid, msg.started_at.ToNanoseconds())


def _check_of(container: Container) -> hc.HealthConfig | None:
    try:
        return hc.of_labels(container.labels)
    except DockyardError as exc:
        log.warning("container %s: health check not run: %s", container.id, exc)
        return None


# -- the monitor --------------------------------------------------------------------------------


class HealthMonitor:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, namespaces: NamespaceStore,
                 events: Exchange, fifo_root: Path) -> None:
        self.containers = containers
        self.tasks = tasks
        self.namespaces = namespaces
        self.events = events
        self.fifo_root = fifo_root  # per-probe FIFO dirs: <state>/health
        self._watches: dict[Key, asyncio.Task[None]] = {}
        self._pids: dict[Key, int] = {}  # the init pid each watch follows
        self._jobs: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(PROBES_AT_ONCE)
        self._follower: asyncio.Task[None] | None = None
        self._closed = False
        self.probes_running = 0  # for tests and the log: execs of ours alive right now
        self._live: set[str] = set()  # exec ids of this daemon's probes under way
        self._leftovers: dict[Key, set[str]] = {}  # exec ids a previous daemon left, by container
        self.reconciled = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow task starts and exits from now on, then resume the watches of the running
        containers with a check (in the background). Returns once subscribed."""
        # FIFO dirs a previous daemon left (it died mid-probe): their names say which execs it
        # left in which shims (cleared by reconcile); the dirs themselves nothing uses now.
        self._leftovers = await asyncio.to_thread(_left_in, self.fifo_root)
        await asyncio.to_thread(shutil.rmtree, self.fifo_root, True)
        async def in_place() -> None:
            self._spawn(self._reconcile_logged())

        self._follower = await self.events.start_following(FILTERS, self._on_event_logged, in_place,
                                                           who="health monitor")

    async def close(self) -> None:
        """Daemon stop: every watch ends (a probe under way is killed and deleted first); the
        stored state stays as it is, for the next daemon."""
        self._closed = True
        jobs = [j for j in [self._follower, *self._watches.values(), *self._jobs] if j is not None]
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        self._watches.clear()
        self._follower = None

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        job: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _on_event_logged(self, event: Event) -> None:
        try:
            await self._on_event(event)
        except DockyardError as exc:
            log.warning("health monitor: %s event: %s", event.topic, exc)

    async def _on_event(self, event: Event) -> None:
        if event.topic == "/tasks/start":
            try:
                start = task_events.TaskStart.FromString(event.value)
            except DecodeError:
                return
            if start.container_id:
                await self._begin(event.namespace, start.container_id, start.pid,
                                  int(event.timestamp.timestamp() * 1e9), keep=False)
            return
        try:
            msg: Any = (task_events.TaskExit if event.topic == "/tasks/exit" else task_events.TaskDelete
                        ).FromString(event.value)
        except DecodeError:
            return
        if msg.container_id and msg.id in ("", msg.container_id):  # the init's, not an exec's
            self._end((event.namespace, msg.container_id), pid=msg.pid)

    async def container_deleted(self, namespace: str, cid: str) -> None:
        """The record is gone: so is its watch."""
        self._end((namespace, cid), record=False)

    # -- watches -----------------------------------------------------------------------------

    async def _begin(self, namespace: str, cid: str, pid: int, started_at_ns: int, keep: bool) -> None:
        """A run of `cid` began (or, `keep`, is found running at the daemon's start): watch it."""
        key = (namespace, cid)
        if self._closed or (key in self._watches and self._pids.get(key) == pid):
            return
        try:
            container = await self.containers.get(namespace, cid)
        except NotFound:
            return
        check = _check_of(container)
        if check is None:
            return
        stored = decode(container)
        if keep and stored is not None and stored.pid == pid and stored.status in (hc.STARTING, hc.HEALTHY,
                                                                                      hc.UNHEALTHY):
            state = stored
        else:  # a new run: starting again, the log kept (Docker's initHealthMonitor)
            state = HealthState(hc.STARTING, 0, stored.log if stored else [], pid, started_at_ns)
        previous = self._watches.pop(key, None)
        if previous is not None:
            previous.cancel()
        self._pids[key] = pid
        self._watches[key] = asyncio.get_running_loop().create_task(
            self._watch(key, container, check, state, previous, fresh=state is not stored))

    def _end(self, key: Key, pid: int = 0, record: bool = True) -> None:
        """The run ended (its init's exit or delete with `pid`, or the record's delete): the
        watch stops; its status becomes unhealthy once the watch is done (unless a new run began)."""
        job = self._watches.get(key)
        if job is None or (pid and self._pids.get(key) not in (pid, None)):
            return
        del self._watches[key]
        self._pids.pop(key, None)
        job.cancel()
        if record and not self._closed:
            self._spawn(self._stopped(key, job))

    async def _stopped(self, key: Key, job: asyncio.Task[None]) -> None:
        await asyncio.wait({job})
        if key in self._watches or self._closed:
            return
        try:
            container = await self.containers.get(*key)
        except NotFound:
            return
        state = decode(container)
        if state is not None and state.status != hc.UNHEALTHY:
            state.status = hc.UNHEALTHY  # Docker: a monitor that stopped reports unhealthy
            await self._store(key, state)

    async def _watch(self, key: Key, container: Container, check: hc.HealthConfig, state: HealthState,
                     previous: asyncio.Task[None] | None, fresh: bool) -> None:
        try:
            if previous is not None:  # the old run's watch finishes (kills its probe) first
                await asyncio.wait({previous})
            if fresh:
                await self._store(key, state)
            process = {**_process_of(container), "args": check.argv(hc.shell_of_labels(container.labels)),
                       "terminal": False}
            while True:
                wait_ns = next_interval_ns(check, state, time.time_ns())
                await asyncio.sleep(wait_ns / 1e9)  # the check's interval itself
                result = await self._probe(key, process, check)
                old = state.status
                state = apply_result(check, state, result)
                await self._store(key, state)
                if state.status != old:
                    self._publish(key, state.status)
                    log.info("container %s/%s is %s (exit %d)", key[0], key[1], state.status, result.exit_code)
        except asyncio.CancelledError:
            raise
        except DockyardError as exc:
            log.warning("health check of %s/%s stopped: %s", key[0], key[1], exc)
        except Exception:  # a bug must not pass silently in a task nobody awaits
            log.exception("health check of %s/%s failed", key[0], key[1])

    async def _store(self, key: Key, state: HealthState) -> None:
        patch = Container(id=key[1], runtime_name="", spec=None, labels={hc.STATUS_LABEL: state.status},
                          extensions={hc.EXTENSION: AnyValue(hc.TYPE_URL, encode(state))})
        with contextlib.suppress(NotFound):
            await self.containers.update(key[0], patch, [f"labels.{hc.STATUS_LABEL}", f"extensions.{hc.EXTENSION}"])

    def _publish(self, key: Key, status: str) -> None:
        msg = health_pb2.HealthStatus(container_id=key[1], status=status)
        self.events.publish(key[0], hc.EVENT_TOPIC, msg.DESCRIPTOR.full_name, msg.SerializeToString(),
                            {"container_id": key[1], "status": status})

    # -- probes ------------------------------------------------------------------------------

    async def _probe(self, key: Key, process: dict[str, Any], check: hc.HealthConfig) -> Result:
        start = time.time_ns()
        try:
            task = self.tasks.get(*key)
            if (await task.state()).status == Status.PAUSED:
                raise Internal(f"Container {key[1]} is paused, unpause the container before exec")
            async with self._slots:
                code, output = await self._exec(key, task, process, check)
        except DockyardError as exc:
            code, output = hc.EXIT_UNKNOWN, str(exc)
        return Result(start, time.time_ns(), code, output)

    async def _exec(self, key: Key, task: Task, process: dict[str, Any], check: hc.HealthConfig
                    ) -> tuple[int, str]:
        """Run the probe's `process` in the task: (exit status, output); the timeout's result when
        it overruns (the process killed)."""
        exec_id = f"{EXEC_PREFIX}{secrets.token_hex(6)}"
        # On the loop, with no await between making the dir and the `try` that removes it: a
        # cancellation cannot come between (a worker thread's mkdtemp could be cancelled after
        # it made the dir). Two syscalls on the state dir's tmpfs. Made before the exec: its
        # name is how the next daemon finds the exec should this one die (see the docstring).
        fifo_dir = self.fifo_root / _SEP.join((*key, exec_id))
        try:
            self.fifo_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fifo_dir.mkdir(mode=0o700)
        except OSError as exc:
            raise Internal(f"health check: its FIFO dir: {exc.strerror or exc}") from None
        output: _Output | None = None
        self.probes_running += 1
        self._live.add(exec_id)
        try:
            output = _Output(fifo_dir / "output")
            path = str(output.path)
            exited = False
            try:
                # Each shim call runs to its end even when the watch is cancelled meanwhile, so
                # the `finally` knows whether the exec was made and started (no guessing).
                await uninterrupted(task.exec(exec_id, ExecOptions(
                    spec=AnyValue(PROCESS_TYPE_URL, json.dumps(process).encode()), stdout=path, stderr=path)))
                pid = await uninterrupted(task.start(exec_id))
                try:
                    exit_ = await asyncio.wait_for(task.wait(exec_id), check.timeout_ns / 1e9)
                except TimeoutError:
                    await uninterrupted(self._kill(task, exec_id, pid))
                    return hc.EXIT_UNKNOWN, f"Health check exceeded timeout ({hc.format_duration(check.timeout_ns)})"
                exited = True
                return exit_.exit_status, hc.cap_output(output.finish())
            finally:  # every path: done, timed out, an error of the shim, cancelled
                await uninterrupted(self._discard(task, exec_id, exited))
        finally:
            self.probes_running -= 1
            self._live.discard(exec_id)
            if output is not None:
                output.close()
            shutil.rmtree(fifo_dir, ignore_errors=True)  # a FIFO and its dir, as above

    @classmethod
    async def _discard(cls, task: Task, exec_id: str, exited: bool) -> bool:
        """Delete the exec from its shim, killed first if it may be running (`exited`: it is
        known to have exited); whether it was there. An error is logged."""
        try:
            if not exited:
                state = await task.state(exec_id)
                if state.status not in (Status.CREATED, Status.STOPPED):
                    await cls._kill(task, exec_id, state.pid)
            await task.delete(exec_id)
        except NotFound:
            return False
        except DockyardError as exc:
            log.warning("health check of %s/%s: its exec %s not deleted: %s", task.namespace, task.id, exec_id, exc)
        return True

    @staticmethod
    async def _kill(task: Task, exec_id: str, pid: int) -> None:
        """The probe and every process it started: a shell's child (`sh -c 'x; sleep 99'`) would
        otherwise outlive it in the container, holding its output open (Docker leaves those)."""
        await asyncio.to_thread(kill_tree, pid)
        with contextlib.suppress(DockyardError):
            await task.kill(signal.SIGKILL, exec_id=exec_id)
        with contextlib.suppress(DockyardError, TimeoutError):
            await asyncio.wait_for(task.wait(exec_id), KILL_WAIT)

    async def _clear_leftovers(self, key: Key, task: Task, running: bool) -> None:
        """Kill and delete the probes a previous daemon left in this task's shim (it was killed
        mid-probe): those its FIFO dirs named, and (`running`: the task's processes are there to
        list) any other exec of ours the shim lists."""
        found = self._leftovers.pop(key, set())
        if running:
            with contextlib.suppress(DockyardError):
                found.update(exec_id for p in await task.pids() if (exec_id := _exec_id_of(p.info)))
        for exec_id in sorted(e for e in found if e.startswith(EXEC_PREFIX) and e not in self._live):
            if await uninterrupted(self._discard(task, exec_id, exited=False)):
                log.info("health monitor: container %s/%s: probe %s left by a previous daemon removed",
                         key[0], key[1], exec_id)

    # -- the daemon's start ------------------------------------------------------------------

    async def _reconcile_logged(self) -> None:
        try:
            await self.reconcile()
        except Exception:
            log.exception("health monitor: reconcile failed")
        finally:
            self.reconciled.set()

    async def reconcile(self) -> None:
        """Resume the watch of every running container with a check; a stored `starting` or
        `healthy` of a container whose run ended while none watched becomes unhealthy."""
        resumed = 0
        for namespace in [ns.name for ns in await self.namespaces.list()]:
            for container in await self.containers.list(namespace):
                if self._closed:
                    return
                key = (namespace, container.id)
                if hc.CONFIG_LABEL not in container.labels and key not in self._leftovers:
                    continue
                try:
                    task = self.tasks.get(*key)
                    state = await task.state()
                    # before its watch resumes (and probes again)
                    await self._clear_leftovers(key, task, state.status in (Status.RUNNING, Status.PAUSED))
                except NotFound:
                    state = None
                except DockyardError as exc:
                    log.warning("health monitor: container %s/%s: %s", namespace, container.id, exc)
                    continue
                if hc.CONFIG_LABEL not in container.labels:
                    continue
                if state is not None and state.status in (Status.RUNNING, Status.PAUSED):
                    stored = decode(container)
                    started = stored.started_at_ns if stored and stored.pid == state.pid else time.time_ns()
                    await self._begin(namespace, container.id, state.pid, started, keep=True)
                    resumed += 1
                elif key not in self._watches:
                    stored = decode(container)
                    if stored is not None and stored.status != hc.UNHEALTHY:
                        stored.status = hc.UNHEALTHY
                        await self._store(key, stored)
        log.info("health monitor: %d container(s) with a health check watched", resumed)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`'s descendants, then `pid` (host pids: the shim's pid namespace is ours).
    Read from /proc (each process's parent), only when a probe overruns."""
    if pid <= 0:
        return
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in reversed(tree):  # the leaves first: a parent cannot wait and start another meanwhile
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def _left_in(fifo_root: Path) -> dict[Key, set[str]]:
    """The probes a previous daemon left, by container: read from its FIFO dirs' names."""
    found: dict[Key, set[str]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(fifo_root):
            parts = entry.name.split(_SEP)
            if len(parts) == 3 and parts[2].startswith(EXEC_PREFIX):
                found.setdefault((parts[0], parts[1]), set()).add(parts[2])
    return found


def _exec_id_of(info: AnyValue | None) -> str:
    """The exec id in a ListPids entry's details (runc's ProcessDetails, as our shim sends it)."""
    if info is None or not info.type_url.endswith("ProcessDetails"):
        return ""
    try:
        return oci_pb2.ProcessDetails.FromString(info.value).exec_id
    except DecodeError:
        return ""


def _process_of(container: Container) -> dict[str, Any]:
    """The init's process spec: where a probe starts from (user, env, cwd, capabilities)."""
    if container.spec is None:
        raise Internal(f"container {container.id} has no spec")
    try:
        process = json_value(container.spec.value, "its spec")["process"]  # any client wrote it
    except (ValueError, KeyError, TypeError):
        raise Internal(f"container {container.id}: its spec has no process") from None
    if not isinstance(process, dict):
        raise Internal(f"container {container.id}: its spec's process is not an object")
    process.pop("consoleSize", None)
    return process


class _Output:
    """A probe's stdout and stderr: one FIFO (both streams in their order), drained by the loop as
    bytes come (the probe never blocks on a full pipe), keeping one byte past the cap to tell a
    cut. Made on the loop: mkfifo and a non-blocking open do not wait."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.path = path
        self.fd = -1
        self.data = bytearray()
        try:
            os.mkfifo(path, 0o600)
            # O_RDWR: opening never blocks, and no EOF is seen before the shim opened it.
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self.loop.add_reader(self.fd, self._drain)
        except OSError as exc:
            self.close()
            raise Internal(f"health check: its output pipe: {exc.strerror or exc}") from None

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self.fd, 65536):
                room = hc.MAX_OUTPUT + 1 - len(self.data)
                if room > 0:
                    self.data += chunk[:room]

    def finish(self) -> bytes:
        self._drain()
        return bytes(self.data)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
