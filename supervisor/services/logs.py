"""dockyard.logs.v1.Logs: stream a container's log (reading: supervisor/logs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dockyard_api.dockyard.logs.v1 import logs_pb2 as pb
from dockyard_api.dockyard.logs.v1 import logs_pb2_grpc as pb_grpc
from dockyard_common.containerlog import DRIVER, LABEL_DRIVER
from dockyard_common.errors import FailedPrecondition, Unavailable
from supervisor.logs import LogStore, ReadOptions, read_log
from supervisor.metadata.containers import ContainerStore
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc_stream


def _ns(request: pb.ReadRequest, field: str) -> int:
    return getattr(request, field).ToNanoseconds() if request.HasField(field) else 0  # type: ignore[no-any-return]


class LogsService(pb_grpc.LogsServicer):
    def __init__(self, containers: ContainerStore, logs: LogStore | None) -> None:
        self.containers = containers
        self.logs = logs

    @rpc_stream
    async def Read(self, request: pb.ReadRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ReadResponse]:
        ns = namespace_of(context)
        container = await self.containers.get(ns, request.container_id)
        if self.logs is None:
            raise Unavailable("this daemon keeps no container logs")
        if not self.logs.wanted(container.labels):
            raise FailedPrecondition(f"container {container.id} was created without a log "
                                     f"(dock run logs by default; other clients set the label {LABEL_DRIVER}={DRIVER})")
        opts = ReadOptions(follow=request.follow, tail=request.tail if request.HasField("tail") else None,
                           since_ns=_ns(request, "since"), until_ns=_ns(request, "until"))
        async for batch in read_log(self.logs.dir(ns, container.id), opts):
            out = pb.ReadResponse()
            for rec in batch:
                entry = out.entries.add(stream=rec.stream, data=rec.content if rec.partial else rec.content + b"\n",
                                        partial=rec.partial)
                entry.time.FromNanoseconds(rec.time_ns)
            yield out
