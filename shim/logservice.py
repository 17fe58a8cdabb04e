"""dockyard.shim.v1.Log (our extension, proto/dockyard/shim/v1/log.proto): Reopen, the shim's
half of the CRI's ReopenContainerLog. The shim writes the container log (shim.logfile), so it is
the one that can start a new file after kubelet renamed the old one."""

from __future__ import annotations

from google.protobuf import empty_pb2

from dockyard_api.dockyard.shim.v1 import log_pb2 as pb
from dockyard_common.errors import FailedPrecondition, NotFound
from dockyard_common.ttrpc import RequestContext
from dockyard_common.types import Status
from shim.container import Container


class LogService:
    def __init__(self, containers: dict[str, Container]) -> None:
        self.containers = containers  # the Task service's, shared

    async def Reopen(self, req: pb.ReopenRequest, ctx: RequestContext) -> empty_pb2.Empty:
        c = self.containers.get(req.id)
        if c is None:
            raise NotFound("container not created")
        io = c.init.io
        # As containerd: only a running container's log is reopened (an exited one's is complete).
        if c.init.status not in (Status.RUNNING, Status.PAUSED) or io is None:
            raise FailedPrecondition(f"container {req.id} is not running")
        await io.reopen_log()
        return empty_pb2.Empty()
