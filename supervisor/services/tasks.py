"""containerd.services.tasks.v1.Tasks: the daemon's face of the runtime's typed tasks.

Request protobufs become calls on `supervisor.runtime.task.Task`; the values it returns become
response protobufs, in containerd's wire shape."""

from __future__ import annotations

import time

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.services.tasks.v1 import tasks_pb2 as pb
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import metrics_pb2
from dockyard_api.containerd.types.task import task_pb2
from dockyard_common.errors import InvalidArgument, Unimplemented
from dockyard_common.ocispec import SPEC_TYPE_URL
from supervisor import filters
from supervisor.metadata.containers import ContainerStore
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.restart import RestartMonitor
from supervisor.runtime.task import Task
from supervisor.runtime.types import AnyValue, CreateOptions, ExecOptions, Exit, TaskState
from supervisor.services.context import namespace_of
from supervisor.services.diff import mounts_in
from supervisor.services.status import rpc

_STATUS_WORDS = {s: task_pb2.Status.Name(s).lower() for s in task_pb2.Status.values()}


def _stamp(ns: int | None) -> timestamp_pb2.Timestamp:
    # Always present, as the shim's own responses carry it (zero when there is no exit yet).
    ts = timestamp_pb2.Timestamp()
    if ns is not None:
        ts.FromNanoseconds(ns)
    return ts


def _any_in(message: Message, name: str) -> AnyValue | None:
    if not message.HasField(name):
        return None
    a = getattr(message, name)
    return AnyValue(a.type_url, a.value)


def _any_out(value: AnyValue | None) -> any_pb2.Any | None:
    return None if value is None else any_pb2.Any(type_url=value.type_url, value=value.value)


def _process(state: TaskState, exec_id: str) -> task_pb2.Process:
    # ctr takes the task id for later calls from `id`: the container id, or the exec id
    return task_pb2.Process(
        id=exec_id or state.id, pid=state.pid, status=int(state.status),  # type: ignore[arg-type]
        stdin=state.stdin, stdout=state.stdout, stderr=state.stderr, terminal=state.terminal,
        exit_status=state.exit_status, exited_at=_stamp(state.exited_at_ns))


def _deleted(exit: Exit, exec_id: str = "") -> pb.DeleteResponse:
    return pb.DeleteResponse(id=exec_id, pid=exit.pid, exit_status=exit.exit_status,
                             exited_at=_stamp(exit.exited_at_ns))


class TasksService(pb_grpc.TasksServicer):
    def __init__(self, manager: TaskManager, containers: ContainerStore, restarts: RestartMonitor | None = None
                 ) -> None:
        self.manager = manager
        self.containers = containers
        self.restarts = restarts  # told of a user's starts and stops (restart policies)
        # namespace -> id -> (a state, its message): listed states are mostly the same cached
        # objects call after call, and building a thousand messages is most of List's time
        self._listed: dict[str, dict[str, tuple[TaskState, task_pb2.Process]]] = {}

    def _task(self, context: grpc.aio.ServicerContext, cid: str) -> Task:
        return self.manager.get(namespace_of(context), cid)

    @rpc
    async def Create(self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext
                     ) -> pb.CreateTaskResponse:
        ns = namespace_of(context)
        container = await self.containers.get(ns, request.container_id)
        if container.spec is None or container.spec.type_url != SPEC_TYPE_URL:
            raise InvalidArgument(f"container {container.id}: spec must be an OCI runtime spec ({SPEC_TYPE_URL})")
        if request.HasField("checkpoint") and request.checkpoint.digest:
            raise Unimplemented("restoring a task from a checkpoint")
        options = b""
        if container.runtime_options is not None:
            options = any_pb2.Any(type_url=container.runtime_options.type_url,
                                  value=container.runtime_options.value).SerializeToString()
        opts = CreateOptions(
            rootfs=mounts_in(request.rootfs, "rootfs"),
            stdin=request.stdin, stdout=request.stdout, stderr=request.stderr, terminal=request.terminal,
            options=options, task_options=_any_in(request, "options"))
        task = await self.manager.create(ns, container.id, request.runtime_path or container.runtime_name,
                                         container.spec.value, opts, labels=container.labels)
        if self.restarts is not None:
            await self.restarts.user_created(ns, container)
        return pb.CreateTaskResponse(container_id=container.id, pid=task.pid)

    @rpc
    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartResponse:
        pid = await self._task(context, request.container_id).start(request.exec_id)
        return pb.StartResponse(pid=pid)

    @rpc
    async def Delete(self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
                     ) -> pb.DeleteResponse:
        return _deleted(await self.manager.delete(namespace_of(context), request.container_id))

    @rpc
    async def DeleteProcess(self, request: pb.DeleteProcessRequest, context: grpc.aio.ServicerContext
                            ) -> pb.DeleteResponse:
        if not request.exec_id:
            raise InvalidArgument("DeleteProcess needs an exec id; delete the task itself with Delete")
        exit = await self._task(context, request.container_id).delete(request.exec_id)
        return _deleted(exit, request.exec_id)

    @rpc
    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        state = await self._task(context, request.container_id).state(request.exec_id)
        return pb.GetResponse(process=_process(state, request.exec_id))

    @rpc
    async def List(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ListTasksResponse:
        ns = namespace_of(context)
        match = filters.parse_all([request.filter])
        before, now = self._listed.get(ns, {}), {}
        out = []
        for state in await self.manager.states(ns):
            if request.filter and not match.match(filters.adaptor_from(
                    {"id": state.id, "status": _STATUS_WORDS.get(state.status, "unknown"), "pid": str(state.pid)})):
                continue
            entry = before.get(state.id)
            if entry is None or entry[0] is not state:
                entry = (state, _process(state, ""))
            now[state.id] = entry
            out.append(entry[1])
        if now:
            self._listed[ns] = now
        else:
            self._listed.pop(ns, None)
        return pb.ListTasksResponse(tasks=out)

    @rpc
    async def Kill(self, request: pb.KillRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        if self.restarts is not None:  # before the signal: its exit must find the stop recorded
            await self.restarts.user_killing(namespace_of(context), request.container_id, request.signal,
                                             request.exec_id)
        await self._task(context, request.container_id).kill(request.signal, request.all, request.exec_id)
        return empty_pb2.Empty()

    @rpc
    async def Exec(self, request: pb.ExecProcessRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        if not request.exec_id:
            raise InvalidArgument("exec id must not be empty")
        await self._task(context, request.container_id).exec(request.exec_id, ExecOptions(
            spec=_any_in(request, "spec"), terminal=request.terminal, stdin=request.stdin, stdout=request.stdout,
            stderr=request.stderr))
        return empty_pb2.Empty()

    @rpc
    async def ResizePty(self, request: pb.ResizePtyRequest, context: grpc.aio.ServicerContext
                        ) -> empty_pb2.Empty:
        await self._task(context, request.container_id).resize_pty(request.width, request.height, request.exec_id)
        return empty_pb2.Empty()

    @rpc
    async def CloseIO(self, request: pb.CloseIORequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._task(context, request.container_id).close_io(request.exec_id, request.stdin)
        return empty_pb2.Empty()

    @rpc
    async def Pause(self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._task(context, request.container_id).pause()
        return empty_pb2.Empty()

    @rpc
    async def Resume(self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        await self._task(context, request.container_id).resume()
        return empty_pb2.Empty()

    @rpc
    async def ListPids(self, request: pb.ListPidsRequest, context: grpc.aio.ServicerContext
                       ) -> pb.ListPidsResponse:
        found = await self._task(context, request.container_id).pids()
        return pb.ListPidsResponse(processes=[task_pb2.ProcessInfo(pid=p.pid, info=_any_out(p.info))
                                              for p in found])

    @rpc
    async def Checkpoint(self, request: pb.CheckpointTaskRequest, context: grpc.aio.ServicerContext
                         ) -> pb.CheckpointTaskResponse:
        self.manager.get(namespace_of(context), request.container_id)  # an unknown task is NotFound first
        # containerd stores a checkpoint as content (criu image tar, spec, options); no shim is
        # asked to dump what the daemon could not keep (see docs/design-notes.md, issue 12).
        raise Unimplemented("checkpoint/restore (CRIU) is not supported by dockyardd")

    @rpc
    async def Update(self, request: pb.UpdateTaskRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self._task(context, request.container_id).update(_any_in(request, "resources"),
                                                               dict(request.annotations))
        return empty_pb2.Empty()

    @rpc
    async def Metrics(self, request: pb.MetricsRequest, context: grpc.aio.ServicerContext
                      ) -> pb.MetricsResponse:
        match = filters.parse_all(list(request.filters))
        tasks: list[Task] = [t for t in self.manager.list(namespace_of(context))
                             if match.match(filters.adaptor_from({"id": t.id}))]
        out = []
        for task, data in await self.manager.metrics(tasks):
            stamp = timestamp_pb2.Timestamp()
            stamp.FromNanoseconds(time.time_ns())
            out.append(metrics_pb2.Metric(timestamp=stamp, id=task.id, data=_any_out(data) or any_pb2.Any()))
        return pb.MetricsResponse(metrics=out)

    @rpc
    async def Wait(self, request: pb.WaitRequest, context: grpc.aio.ServicerContext) -> pb.WaitResponse:
        exit = await self._task(context, request.container_id).wait(request.exec_id)
        return pb.WaitResponse(exit_status=exit.exit_status, exited_at=_stamp(exit.exited_at_ns))
