"""Tasks in the SDK: `client.tasks`, over containerd's Tasks service.

A task is the running instance of a container (its init process, id = the container id);
exec processes live inside it under their own exec ids.

    await client.tasks.create("web", rootfs=mounts, stdout=fifo_out, stderr=fifo_err)
    await client.tasks.start("web")
    status = await client.tasks.wait("web")          # blocks until the process exits
    await client.tasks.delete("web")
    for m in await client.tasks.metrics("web"):
        print(m.data["memory"]["usage"]["usage"])   # cgroups v1 (or v2) stats, as a dict

Errors are the daemon's kinds: NotFound when there is no task, FailedPrecondition for a
call the task's state refuses.
"""

from __future__ import annotations

import base64
import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.services.tasks.v1 import tasks_pb2 as pb
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import mount_pb2
from dockyard_api.containerd.types.task import task_pb2
from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import RESOURCES_TYPE_URL
from dockyard_common.types import Mount, Status

if TYPE_CHECKING:
    from dock.client import Client

PROCESS_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
METRICS_V1_TYPE_URL = "io.containerd.cgroups.v1.Metrics"
METRICS_V2_TYPE_URL = "io.containerd.cgroups.v2.Metrics"


def _metrics_types() -> dict[str, type[Message]]:
    # imported when metrics are decoded: `dock run` and most task calls never need them
    from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as cgroups_v1
    from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as cgroups_v2
    return {METRICS_V1_TYPE_URL: cgroups_v1.Metrics, METRICS_V2_TYPE_URL: cgroups_v2.Metrics}


@dataclass
class Process:
    """A task's init process, or one of its exec processes (`id` is then the exec id)."""

    id: str
    pid: int
    status: Status
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: datetime | None = None


@dataclass
class ExitStatus:
    code: int
    exited_at: datetime | None = None


@dataclass
class ProcessPid:
    pid: int
    info: dict[str, Any] | None = None  # a shim's extra process info, when it sends any


@dataclass
class TaskMetrics:
    """One task's cgroup statistics; `data` is the decoded Metrics message (protobuf field names)."""

    id: str
    timestamp: datetime | None
    type_url: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def cgroup_version(self) -> int:
        return 2 if self.type_url == METRICS_V2_TYPE_URL else 1


def _time(msg: Message, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, name)
    if ts.seconds <= 0 and ts.nanos == 0:  # Go's zero time (or unset): "never"
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _status(value: int) -> Status:
    return Status(value) if value in Status._value2member_map_ else Status.UNKNOWN


def _process(msg: task_pb2.Process) -> Process:
    return Process(msg.id, msg.pid, _status(msg.status), msg.stdin, msg.stdout, msg.stderr, msg.terminal,
                   msg.exit_status, _time(msg, "exited_at"))


def decode_metrics(type_url: str, value: bytes) -> dict[str, Any]:
    """A cgroups v1 or v2 Metrics payload as a dict; other types are refused, as ctr does."""
    kind = _metrics_types().get(type_url.removeprefix("type.googleapis.com/"))
    if kind is None:
        raise InvalidArgument(f"cannot convert metric data of type {type_url!r}")
    msg = kind()
    msg.ParseFromString(value)
    return message_dict(msg)


def message_dict(msg: Message) -> dict[str, Any]:
    """Set fields by their proto names, integers kept as integers (protobuf's JSON mapping
    turns 64-bit ones into strings, which is no use for numbers people add up)."""
    out: dict[str, Any] = {}
    for desc, value in msg.ListFields():
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            out[desc.name] = {k: _value(v) for k, v in value.items()}
        elif desc.is_repeated:
            out[desc.name] = [_value(v) for v in value]
        else:
            out[desc.name] = _value(value)
    return out


def _value(value: Any) -> Any:
    if isinstance(value, timestamp_pb2.Timestamp):
        return value.ToDatetime(tzinfo=UTC).isoformat()
    if isinstance(value, Message):
        return message_dict(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # JSON has no bytes
    return value


def _any_to_dict(value: any_pb2.Any) -> dict[str, Any]:
    return {"type_url": value.type_url, "bytes": len(value.value)}


class TasksAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.TasksStub(client.channel)

    async def create(self, container_id: str, rootfs: Sequence[Mount] = (), stdin: str = "", stdout: str = "",
                     stderr: str = "", terminal: bool = False) -> int:
        """Create the task of `container_id` (its spec comes from the container record); the
        shim opens the stdio FIFOs given. Returns the init process' pid (not yet running)."""
        req = pb.CreateTaskRequest(
            container_id=container_id,
            rootfs=[mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
                    for m in rootfs],
            stdin=stdin, stdout=stdout, stderr=stderr, terminal=terminal)
        return (await self.client.call(self.stub.Create, req)).pid

    async def start(self, container_id: str, exec_id: str = "") -> int:
        resp = await self.client.call(self.stub.Start, pb.StartRequest(container_id=container_id, exec_id=exec_id))
        return resp.pid

    async def wait(self, container_id: str, exec_id: str = "") -> ExitStatus:
        """Block until the process exits (or has exited): its exit status. No deadline applies,
        whatever the client's timeout: a process may run for as long as it likes."""
        req = pb.WaitRequest(container_id=container_id, exec_id=exec_id)
        try:
            resp = await self.stub.Wait(req, metadata=self.client.metadata())
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None
        return ExitStatus(resp.exit_status, _time(resp, "exited_at"))

    async def kill(self, container_id: str, signal: int, exec_id: str = "", all: bool = False) -> None:
        """Send `signal`; `all` signals every process in the task, not just its init."""
        await self.client.call(self.stub.Kill, pb.KillRequest(container_id=container_id, exec_id=exec_id,
                                                              signal=signal, all=all))

    async def delete(self, container_id: str) -> ExitStatus:
        """Delete a stopped (or never started) task; its exit status."""
        resp = await self.client.call(self.stub.Delete, pb.DeleteTaskRequest(container_id=container_id))
        return ExitStatus(resp.exit_status, _time(resp, "exited_at"))

    async def delete_process(self, container_id: str, exec_id: str) -> ExitStatus:
        resp = await self.client.call(self.stub.DeleteProcess,
                                      pb.DeleteProcessRequest(container_id=container_id, exec_id=exec_id))
        return ExitStatus(resp.exit_status, _time(resp, "exited_at"))

    async def exec(self, container_id: str, exec_id: str, process: dict[str, Any], stdin: str = "",
                   stdout: str = "", stderr: str = "", terminal: bool = False) -> None:
        """Add an exec process (an OCI `process` object: args, env, cwd, user, ...); start it with
        `start(container_id, exec_id)`."""
        spec = any_pb2.Any(type_url=PROCESS_SPEC_TYPE_URL, value=json.dumps(process).encode())
        await self.client.call(self.stub.Exec, pb.ExecProcessRequest(
            container_id=container_id, exec_id=exec_id, spec=spec, stdin=stdin, stdout=stdout, stderr=stderr,
            terminal=terminal))

    async def get(self, container_id: str, exec_id: str = "") -> Process:
        resp = await self.client.call(self.stub.Get, pb.GetRequest(container_id=container_id, exec_id=exec_id))
        return _process(resp.process)

    async def list(self, filter: str = "") -> builtins.list[Process]:
        """Tasks in the namespace, e.g. filter `status==running`."""
        resp = await self.client.call(self.stub.List, pb.ListTasksRequest(filter=filter))
        return [_process(p) for p in resp.tasks]

    async def pids(self, container_id: str) -> builtins.list[ProcessPid]:
        resp = await self.client.call(self.stub.ListPids, pb.ListPidsRequest(container_id=container_id))
        return [ProcessPid(p.pid, _any_to_dict(p.info) if p.HasField("info") else None) for p in resp.processes]

    async def pause(self, container_id: str) -> None:
        await self.client.call(self.stub.Pause, pb.PauseTaskRequest(container_id=container_id))

    async def resume(self, container_id: str) -> None:
        await self.client.call(self.stub.Resume, pb.ResumeTaskRequest(container_id=container_id))

    async def update(self, container_id: str, resources: dict[str, Any],
                     annotations: dict[str, str] | None = None) -> None:
        """Change a live task's cgroup limits: `resources` is an OCI `linux.resources` object; the
        shim writes only what it names (the rest stays). The container record is not touched."""
        req = pb.UpdateTaskRequest(container_id=container_id, annotations=annotations or {},
                                   resources=any_pb2.Any(type_url=RESOURCES_TYPE_URL,
                                                         value=json.dumps(resources).encode()))
        await self.client.call(self.stub.Update, req)

    async def metrics(self, *ids: str) -> builtins.list[TaskMetrics]:
        """Cgroup stats of the given tasks (all tasks in the namespace when none is given)."""
        req = pb.MetricsRequest(filters=[f"id=={i}" for i in ids])
        resp = await self.client.call(self.stub.Metrics, req)
        return [TaskMetrics(m.id, _time(m, "timestamp"), m.data.type_url,
                            decode_metrics(m.data.type_url, m.data.value)) for m in resp.metrics]

    async def resize(self, container_id: str, width: int, height: int, exec_id: str = "") -> None:
        await self.client.call(self.stub.ResizePty, pb.ResizePtyRequest(
            container_id=container_id, exec_id=exec_id, width=width, height=height))

    async def close_io(self, container_id: str, exec_id: str = "", stdin: bool = True) -> None:
        """Close the process' stdin (the shim holds the FIFO open until told)."""
        await self.client.call(self.stub.CloseIO, pb.CloseIORequest(container_id=container_id, exec_id=exec_id,
                                                                    stdin=stdin))
