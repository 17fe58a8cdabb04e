"""containerd.services.tasks.v1.Tasks: the daemon's face of the shims' Task API."""

from __future__ import annotations

import time
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2 as pb
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import metrics_pb2
from dockyard_api.containerd.types.task import task_pb2
from supervisor import filters
from supervisor.errors import InvalidArgument, NotFound, Unimplemented
from supervisor.metadata.containers import ContainerStore
from supervisor.runtime.manager import CreateOptions, Task, TaskManager
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
M = TypeVar("M", bound=Message)


def _process(state: shim_pb2.StateResponse, exec_id: str) -> task_pb2.Process:
    # ctr takes the task id for later calls from `id`: the container id, or the exec id
    return task_pb2.Process(
        id=exec_id or state.id, pid=state.pid, status=state.status, stdin=state.stdin, stdout=state.stdout,
        stderr=state.stderr, terminal=state.terminal, exit_status=state.exit_status, exited_at=state.exited_at)


class TasksService(pb_grpc.TasksServicer):
    def __init__(self, manager: TaskManager, containers: ContainerStore) -> None:
        self.manager = manager
        self.containers = containers

    async def _shim(self, context: grpc.aio.ServicerContext, cid: str, method: str, request: Message,
                    response: type[M]) -> M:
        task = self.manager.get(namespace_of(context), cid)
        return await task.shim.call(method, request, response)

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
        opts = CreateOptions(rootfs=list(request.rootfs), stdin=request.stdin, stdout=request.stdout,
                             stderr=request.stderr, terminal=request.terminal, options=options,
                             task_options=request.options if request.HasField("options") else None)
        task = await self.manager.create(ns, container.id, request.runtime_path or container.runtime_name,
                                         container.spec.value, opts)
        return pb.CreateTaskResponse(container_id=container.id, pid=task.pid)

    @rpc
    async def Start(self, request: pb.StartRequest, context: grpc.aio.ServicerContext) -> pb.StartResponse:
        resp = await self._shim(context, request.container_id, "Start",
                                shim_pb2.StartRequest(id=request.container_id, exec_id=request.exec_id),
                                shim_pb2.StartResponse)
        return pb.StartResponse(pid=resp.pid)

    @rpc
    async def Delete(self, request: pb.DeleteTaskRequest, context: grpc.aio.ServicerContext
                     ) -> pb.DeleteResponse:
        resp = await self.manager.delete(namespace_of(context), request.container_id)
        return pb.DeleteResponse(pid=resp.pid, exit_status=resp.exit_status, exited_at=resp.exited_at)

    @rpc
    async def DeleteProcess(self, request: pb.DeleteProcessRequest, context: grpc.aio.ServicerContext
                            ) -> pb.DeleteResponse:
        if not request.exec_id:
            raise InvalidArgument("DeleteProcess needs an exec id; delete the task itself with Delete")
        resp = await self._shim(context, request.container_id, "Delete",
                                shim_pb2.DeleteRequest(id=request.container_id, exec_id=request.exec_id),
                                shim_pb2.DeleteResponse)
        return pb.DeleteResponse(id=request.exec_id, pid=resp.pid, exit_status=resp.exit_status,
                                 exited_at=resp.exited_at)

    @rpc
    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        state = await self._shim(context, request.container_id, "State",
                                 shim_pb2.StateRequest(id=request.container_id, exec_id=request.exec_id),
                                 shim_pb2.StateResponse)
        return pb.GetResponse(process=_process(state, request.exec_id))

    @rpc
    async def List(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ListTasksResponse:
        match = filters.parse_all([request.filter])
        out = []
        for task in self.manager.list(namespace_of(context)):
            try:
                state = await task.shim.call("State", shim_pb2.StateRequest(id=task.id), shim_pb2.StateResponse)
            except NotFound:
                continue  # deleted while we listed
            proc = _process(state, "")
            status = task_pb2.Status.Name(proc.status).lower()
            if match.match(filters.adaptor_from({"id": task.id, "status": status, "pid": str(proc.pid)})):
                out.append(proc)
        return pb.ListTasksResponse(tasks=out)

    @rpc
    async def Kill(self, request: pb.KillRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "Kill", shim_pb2.KillRequest(
            id=request.container_id, exec_id=request.exec_id, signal=request.signal, all=request.all),
            empty_pb2.Empty)

    @rpc
    async def Exec(self, request: pb.ExecProcessRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        if not request.exec_id:
            raise InvalidArgument("exec id must not be empty")
        return await self._shim(context, request.container_id, "Exec", shim_pb2.ExecProcessRequest(
            id=request.container_id, exec_id=request.exec_id, terminal=request.terminal, stdin=request.stdin,
            stdout=request.stdout, stderr=request.stderr, spec=request.spec), empty_pb2.Empty)

    @rpc
    async def ResizePty(self, request: pb.ResizePtyRequest, context: grpc.aio.ServicerContext
                        ) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "ResizePty", shim_pb2.ResizePtyRequest(
            id=request.container_id, exec_id=request.exec_id, width=request.width, height=request.height),
            empty_pb2.Empty)

    @rpc
    async def CloseIO(self, request: pb.CloseIORequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "CloseIO", shim_pb2.CloseIORequest(
            id=request.container_id, exec_id=request.exec_id, stdin=request.stdin), empty_pb2.Empty)

    @rpc
    async def Pause(self, request: pb.PauseTaskRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "Pause",
                                shim_pb2.PauseRequest(id=request.container_id), empty_pb2.Empty)

    @rpc
    async def Resume(self, request: pb.ResumeTaskRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "Resume",
                                shim_pb2.ResumeRequest(id=request.container_id), empty_pb2.Empty)

    @rpc
    async def ListPids(self, request: pb.ListPidsRequest, context: grpc.aio.ServicerContext
                       ) -> pb.ListPidsResponse:
        resp = await self._shim(context, request.container_id, "Pids",
                                shim_pb2.PidsRequest(id=request.container_id), shim_pb2.PidsResponse)
        return pb.ListPidsResponse(processes=resp.processes)

    @rpc
    async def Checkpoint(self, request: pb.CheckpointTaskRequest, context: grpc.aio.ServicerContext
                         ) -> pb.CheckpointTaskResponse:
        self.manager.get(namespace_of(context), request.container_id)  # an unknown task is NotFound first
        # containerd stores a checkpoint as content (criu image tar, spec, options); no shim is
        # asked to dump what the daemon could not keep (see docs/design-notes.md, issue 12).
        raise Unimplemented("checkpoint/restore (CRIU) is not supported by dockyardd")

    @rpc
    async def Update(self, request: pb.UpdateTaskRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        return await self._shim(context, request.container_id, "Update", shim_pb2.UpdateTaskRequest(
            id=request.container_id, resources=request.resources, annotations=request.annotations),
            empty_pb2.Empty)

    @rpc
    async def Metrics(self, request: pb.MetricsRequest, context: grpc.aio.ServicerContext
                      ) -> pb.MetricsResponse:
        match = filters.parse_all(list(request.filters))
        out = []
        tasks: list[Task] = [t for t in self.manager.list(namespace_of(context))
                             if match.match(filters.adaptor_from({"id": t.id}))]
        for task in tasks:
            try:
                resp = await task.shim.call("Stats", shim_pb2.StatsRequest(id=task.id), shim_pb2.StatsResponse)
            except NotFound:
                continue
            stamp = timestamp_pb2.Timestamp()
            stamp.FromNanoseconds(time.time_ns())
            out.append(metrics_pb2.Metric(timestamp=stamp, id=task.id, data=resp.stats))
        return pb.MetricsResponse(metrics=out)

    @rpc
    async def Wait(self, request: pb.WaitRequest, context: grpc.aio.ServicerContext) -> pb.WaitResponse:
        resp = await self._shim(context, request.container_id, "Wait",
                                shim_pb2.WaitRequest(id=request.container_id, exec_id=request.exec_id),
                                shim_pb2.WaitResponse)
        return pb.WaitResponse(exit_status=resp.exit_status, exited_at=resp.exited_at)
