"""dockyard.containers.v1.Copy: files in and out of containers, and their processes (our extension).

The domain is supervisor/runtime/copy.py (cp) and supervisor/runtime/top.py (top).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dockyard_api.dockyard.containers.v1 import copy_pb2 as pb
from dockyard_api.dockyard.containers.v1 import copy_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument
from supervisor.runtime.copy import ContainerFiles, PathStat
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.top import top
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc, rpc_stream


def stat_pb(s: PathStat) -> pb.PathStat:
    return pb.PathStat(name=s.name, size=s.size, mode=s.mode, mtime_ns=s.mtime_ns, link_target=s.link_target,
                       uid=s.uid, gid=s.gid)


def _require(cid: str) -> str:
    if not cid:
        raise InvalidArgument("a container id is required")
    return cid


class CopyService(pb_grpc.CopyServicer):
    def __init__(self, files: ContainerFiles, tasks: TaskManager) -> None:
        self.files = files
        self.tasks = tasks

    @rpc
    async def Stat(self, request: pb.StatRequest, context: grpc.aio.ServicerContext) -> pb.PathStat:
        ns = namespace_of(context)
        return stat_pb(await self.files.stat(ns, _require(request.container_id), request.path, request.follow_link))

    @rpc_stream
    async def CopyFrom(self, request: pb.CopyFromRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.CopyFromResponse]:
        ns = namespace_of(context)
        parts = self.files.copy_from(ns, _require(request.container_id), request.path, request.follow_link)
        try:
            async for part in parts:
                if isinstance(part, PathStat):
                    yield pb.CopyFromResponse(stat=stat_pb(part))
                else:
                    yield pb.CopyFromResponse(data=part)
        finally:
            await parts.aclose()

    @rpc
    async def CopyTo(self, requests: AsyncIterator[pb.CopyToRequest], context: grpc.aio.ServicerContext
                     ) -> pb.CopyToResponse:
        ns = namespace_of(context)
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("copy to a container: the first message must be the header")
        header = first.header

        async def data() -> AsyncIterator[bytes]:
            async for req in requests:
                if req.HasField("header"):
                    raise InvalidArgument("copy to a container: a second header")
                yield req.data

        await self.files.copy_to(ns, _require(header.container_id), header.path, data(), header.copy_uid_gid)
        return pb.CopyToResponse()

    @rpc
    async def Top(self, request: pb.TopRequest, context: grpc.aio.ServicerContext) -> pb.TopResponse:
        ns = namespace_of(context)
        titles, rows = await top(self.tasks, ns, _require(request.container_id), list(request.ps_args))
        return pb.TopResponse(titles=titles, processes=[pb.TopRow(fields=r) for r in rows])
