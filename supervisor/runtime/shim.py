"""Talking to one shim: containerd's runtime v2 contract, from the daemon's side.

The runtime's wire edge to its shims: the only module of the runtime that speaks their
protobufs; everything it returns is a value of `supervisor.runtime.types`.

`start` runs `<binary> -namespace NS -address SOCK -publish-binary BIN -id ID start` in the
bundle, with TTRPC_ADDRESS naming our events endpoint and the runtime options on stdin; the
binary prints the ttrpc address of the shim it left running. `delete` runs the same binary
with `delete` when the shim is gone, to clean up and learn the exit status. That contract, and
our own shim's zygote protocol, are `dockyard_common.shimlaunch`: the daemon never imports the
shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from dockyard_api.containerd.events import task_pb2 as task_events
from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.containerd.types import mount_pb2
from dockyard_api.dockyard.shim.v1 import log_pb2, stats_pb2
from dockyard_common import shimlaunch
from dockyard_common.errors import DeadlineExceeded, Internal, NotFound, Unavailable
from dockyard_common.ttrpc import ConnectionClosed, TTRPCClient
from supervisor.runtime.bundle import Bundle
from supervisor.runtime.types import AnyValue, CreateOptions, ExecOptions, Exit, ProcessInfo, Status, TaskState

log = logging.getLogger("dockyard.runtime")
TASK_SERVICE = "containerd.task.v2.Task"
STATS_SERVICE = "dockyard.shim.v1.Stats"
LOG_SERVICE = "dockyard.shim.v1.Log"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
START_TIMEOUT = 30.0
DISCONNECT_GRACE = 5.0  # how long a task's calls in flight may take once the task is deleted
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class ShimBinary:
    """How to run a shim: the command (a path, or our own `python -m shim`) and where we listen."""

    command: tuple[str, ...]
    daemon_address: str  # the gRPC socket, passed as -address
    ttrpc_address: str  # our events endpoint, passed as TTRPC_ADDRESS
    publish_binary: str
    foreign: bool = False  # not Dockyard's own shim: it takes the spec exactly as written

    def args(self, bundle: Bundle, action: str, debug: bool = False) -> list[str]:
        return shimlaunch.command_line(self.command, namespace=bundle.namespace, address=self.daemon_address,
                                       publish_binary=self.publish_binary, cid=bundle.id, action=action,
                                       debug=debug)

    async def _run(self, bundle: Bundle, action: str, stdin: bytes) -> bytes:
        # subprocess in a worker thread, not the event loop's spawner: CPython's fork path
        # closes every inherited fd (close_fds), so no descriptor of the daemon's (gRPC's
        # wakeup pipes, sockets) can leak into a shim that outlives it.
        args = self.args(bundle, action)
        env = shimlaunch.environment(self.ttrpc_address)
        try:
            res = await asyncio.to_thread(subprocess.run, args, cwd=bundle.path, input=stdin, capture_output=True,
                                          env=env, timeout=START_TIMEOUT, close_fds=True, check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"shim {action} for {bundle.id} did not finish in {START_TIMEOUT:.0f}s") from None
        except OSError as exc:
            raise Internal(f"shim {action} for {bundle.id}: cannot run {args[0]}: {exc.strerror}") from None
        if res.returncode != 0:
            detail = (res.stderr or res.stdout).decode(errors="replace").strip()
            raise Internal(f"shim {action} for {bundle.id} failed (exit {res.returncode}): {detail}")
        return res.stdout

    async def start(self, bundle: Bundle, options: bytes) -> str:
        """Launch the shim; returns the ttrpc address it serves on.

        Dockyard's own shim has a fast path: when its zygote is warm, the daemon hands it the
        listening socket directly instead of running `python -m shim start` (which costs an
        interpreter start, ~100 ms); the command runs when there is no zygote yet."""
        if self.command[-2:] == shimlaunch.RUN_MODULE:  # Dockyard's own shim, run by this interpreter
            address = await asyncio.to_thread(_start_via_zygote, bundle, self.ttrpc_address)
            if address:
                return address
        return (await self._run(bundle, "start", options)).decode().strip()

    async def delete(self, bundle: Bundle) -> shim_pb2.DeleteResponse:
        """Clean up after a shim that is gone; the response carries the exit status it knew."""
        return shim_pb2.DeleteResponse.FromString(await self._run(bundle, "delete", b""))

    async def cleanup(self, bundle: Bundle) -> Exit:
        """`delete`, as a value."""
        resp = await self.delete(bundle)
        return _exit(resp, resp.pid)


def _start_via_zygote(bundle: Bundle, events: str) -> str | None:
    try:
        return shimlaunch.start_via_zygote(shimlaunch.launch_for(bundle.namespace, bundle.id, str(bundle.path), events))
    except shimlaunch.NoAnswer as exc:
        raise Unavailable(f"shim start for {bundle.id}: {exc}") from None


def _ts_ns(message: Message, name: str) -> int | None:
    return getattr(message, name).ToNanoseconds() if message.HasField(name) else None  # type: ignore[no-any-return]


def _any(value: AnyValue | None) -> any_pb2.Any | None:
    return None if value is None else any_pb2.Any(type_url=value.type_url, value=value.value)


def _any_value(message: Message, name: str) -> AnyValue | None:
    if not message.HasField(name):
        return None
    a = getattr(message, name)
    return AnyValue(a.type_url, a.value)


def _exit(resp: shim_pb2.DeleteResponse | shim_pb2.WaitResponse, pid: int) -> Exit:
    return Exit(pid, resp.exit_status, _ts_ns(resp, "exited_at"))


def task_exit_events(cid: str, pid: int, exit_status: int, exited_at_ns: int) -> list[tuple[str, str, bytes]]:
    """The /tasks/exit and /tasks/delete events (topic, type, payload) for a task whose shim died."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(exited_at_ns)
    out: list[tuple[str, str, bytes]] = []
    for topic, event in (
            ("/tasks/exit", task_events.TaskExit(container_id=cid, id=cid, pid=pid, exit_status=exit_status,
                                                  exited_at=stamp)),
            ("/tasks/delete", task_events.TaskDelete(container_id=cid, pid=pid, exit_status=exit_status,
                                                      exited_at=stamp))):
        out.append((topic, event.DESCRIPTOR.full_name, event.SerializeToString()))
    return out


def event_container_id(type_url: str, value: bytes) -> str:
    """The container a containerd task event (containerd.events.Task*) is about; "" otherwise.

    Every task event has the container id as field 1, so one message type reads them all."""
    if not type_url.startswith("containerd.events.Task"):
        return ""
    try:
        return task_events.TaskPaused.FromString(value).container_id
    except DecodeError:
        return ""


class ShimClient:
    """The Task API of one connected shim, typed: the runtime's only wire edge to a shim.

    Every call takes a timeout (None: wait as long as it takes); a shim that does not answer in
    time raises DeadlineExceeded naming the task and the call, a dropped connection Unavailable."""

    def __init__(self, conn: TTRPCClient, bundle: Bundle, address: str = "") -> None:
        self.conn = conn
        self.bundle = bundle
        self.address = address  # shared by the tasks of one shim group (a pod)
        self.retired = False  # disconnected from a shim that serves other tasks on

    @classmethod
    async def connect(cls, address: str, bundle: Bundle, on_close: Callable[[], object],
                      timeout: float = 5.0) -> ShimClient:
        conn = await TTRPCClient.connect(address, timeout=timeout, on_close=on_close)
        return cls(conn, bundle, address)

    async def call(self, method: str, request: Message, response: type[M], timeout: float | None = None,
                   service: str = TASK_SERVICE) -> M:
        if self.retired:  # as the shim answers for a container it deleted
            raise NotFound(f"task {self.bundle.id}: not found")
        try:
            return await self.conn.call(service, method, request, response, timeout=timeout,
                                        metadata={NAMESPACE_KEY: self.bundle.namespace})
        except DeadlineExceeded:
            if timeout is None:
                raise
            raise DeadlineExceeded(f"task {self.bundle.id}: its shim did not answer {method} "
                                   f"within {timeout:g} s") from None

    # -- containerd.task.v2.Task ---------------------------------------------------------

    async def create(self, opts: CreateOptions, timeout: float | None) -> int:
        cid = self.bundle.id
        req = shim_pb2.CreateTaskRequest(
            id=cid, bundle=str(self.bundle.path), terminal=opts.terminal, stdin=opts.stdin, stdout=opts.stdout,
            stderr=opts.stderr,
            rootfs=[mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
                    for m in opts.rootfs])
        if opts.task_options is not None:
            req.options.CopyFrom(_any(opts.task_options))
        return (await self.call("Create", req, shim_pb2.CreateTaskResponse, timeout)).pid

    async def connect_task(self, timeout: float | None) -> tuple[int, int]:
        """(shim pid, task pid) of a shim found again after a daemon restart."""
        resp = await self.call("Connect", shim_pb2.ConnectRequest(id=self.bundle.id), shim_pb2.ConnectResponse,
                               timeout)
        return resp.shim_pid, resp.task_pid

    async def state(self, exec_id: str, timeout: float | None) -> TaskState:
        r = await self.call("State", shim_pb2.StateRequest(id=self.bundle.id, exec_id=exec_id),
                            shim_pb2.StateResponse, timeout)
        return TaskState(id=r.id or self.bundle.id, exec_id=r.exec_id or exec_id, pid=r.pid,
                         status=Status(r.status) if r.status in _STATUSES else Status.UNKNOWN,
                         stdin=r.stdin, stdout=r.stdout, stderr=r.stderr, terminal=r.terminal,
                         exit_status=r.exit_status, exited_at_ns=_ts_ns(r, "exited_at"))

    async def start(self, exec_id: str, timeout: float | None) -> int:
        return (await self.call("Start", shim_pb2.StartRequest(id=self.bundle.id, exec_id=exec_id),
                                shim_pb2.StartResponse, timeout)).pid

    async def delete(self, exec_id: str, timeout: float | None) -> Exit:
        resp = await self.call("Delete", shim_pb2.DeleteRequest(id=self.bundle.id, exec_id=exec_id),
                               shim_pb2.DeleteResponse, timeout)
        return _exit(resp, resp.pid)

    async def kill(self, exec_id: str, signal: int, all: bool, timeout: float | None) -> None:
        await self.call("Kill", shim_pb2.KillRequest(id=self.bundle.id, exec_id=exec_id, signal=signal, all=all),
                        empty_pb2.Empty, timeout)

    async def exec(self, exec_id: str, opts: ExecOptions, timeout: float | None) -> None:
        await self.call("Exec", shim_pb2.ExecProcessRequest(
            id=self.bundle.id, exec_id=exec_id, terminal=opts.terminal, stdin=opts.stdin, stdout=opts.stdout,
            stderr=opts.stderr, spec=_any(opts.spec)), empty_pb2.Empty, timeout)

    async def resize_pty(self, exec_id: str, width: int, height: int, timeout: float | None) -> None:
        await self.call("ResizePty", shim_pb2.ResizePtyRequest(id=self.bundle.id, exec_id=exec_id, width=width,
                                                               height=height), empty_pb2.Empty, timeout)

    async def close_io(self, exec_id: str, stdin: bool, timeout: float | None) -> None:
        await self.call("CloseIO", shim_pb2.CloseIORequest(id=self.bundle.id, exec_id=exec_id, stdin=stdin),
                        empty_pb2.Empty, timeout)

    async def pause(self, timeout: float | None) -> None:
        await self.call("Pause", shim_pb2.PauseRequest(id=self.bundle.id), empty_pb2.Empty, timeout)

    async def resume(self, timeout: float | None) -> None:
        await self.call("Resume", shim_pb2.ResumeRequest(id=self.bundle.id), empty_pb2.Empty, timeout)

    async def pids(self, timeout: float | None) -> list[ProcessInfo]:
        resp = await self.call("Pids", shim_pb2.PidsRequest(id=self.bundle.id), shim_pb2.PidsResponse, timeout)
        return [ProcessInfo(p.pid, _any_value(p, "info")) for p in resp.processes]

    async def update(self, resources: AnyValue | None, annotations: dict[str, str], timeout: float | None) -> None:
        await self.call("Update", shim_pb2.UpdateTaskRequest(id=self.bundle.id, resources=_any(resources),
                                                             annotations=annotations), empty_pb2.Empty, timeout)

    async def wait(self, exec_id: str, timeout: float | None) -> Exit:
        resp = await self.call("Wait", shim_pb2.WaitRequest(id=self.bundle.id, exec_id=exec_id),
                               shim_pb2.WaitResponse, timeout)
        return _exit(resp, 0)

    async def stats(self, timeout: float | None) -> AnyValue | None:
        """The cgroup metrics (containerd's io.containerd.cgroups.v1/v2.Metrics), serialised."""
        resp = await self.call("Stats", shim_pb2.StatsRequest(id=self.bundle.id), shim_pb2.StatsResponse, timeout)
        return _any_value(resp, "stats")

    # -- dockyard.shim.v1.Stats (our extension: a stream of samples) ---------------------

    async def watch_stats(self, interval_ms: int, timeout: float | None) -> None:
        await self.call("Watch", stats_pb2.WatchRequest(id=self.bundle.id, interval_ms=interval_ms),
                        empty_pb2.Empty, timeout, service=STATS_SERVICE)

    async def unwatch_stats(self, timeout: float | None) -> None:
        await self.call("Unwatch", stats_pb2.UnwatchRequest(id=self.bundle.id), empty_pb2.Empty, timeout,
                        service=STATS_SERVICE)

    # -- dockyard.shim.v1.Log (our extension: the container log the shim writes) ------------

    async def reopen_log(self, timeout: float | None) -> None:
        await self.call("Reopen", log_pb2.ReopenRequest(id=self.bundle.id), empty_pb2.Empty, timeout,
                        service=LOG_SERVICE)

    async def disconnect(self) -> None:
        """Drop this task's connection, leaving the shim to the other tasks it serves: calls in
        flight get their answers first, later ones NotFound."""
        self.retired = True
        await self.conn.close_when_idle(DISCONNECT_GRACE)

    async def shutdown(self) -> None:
        """Ask the shim to exit, and wait for it to close the connection."""
        await self.ask_shutdown()
        await self.wait_closed()

    async def ask_shutdown(self) -> None:
        """Ask the shim to exit (it does with no container left, and stops listening before it
        answers); it may drop the connection before answering, which is fine."""
        if not self.retired:
            with contextlib.suppress(ConnectionClosed, Unavailable, DeadlineExceeded):
                await self.call("Shutdown", shim_pb2.ShutdownRequest(id=self.bundle.id), empty_pb2.Empty,
                                timeout=10)
            self.retired = True

    async def wait_closed(self) -> None:
        """Wait (10 s at most) for the shim to close the connection, then close our side."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.conn.wait_closed(), 10)
        await self.conn.close()


_STATUSES = frozenset(int(s) for s in Status)
