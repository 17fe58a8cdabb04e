"""dockyard.system.v1.System: the daemon describes itself (our extension)."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

import grpc

from dockyard_api.dockyard.system.v1 import system_pb2 as pb
from dockyard_api.dockyard.system.v1 import system_pb2_grpc as pb_grpc
from dockyard_common.cgroups import detect_cgroup_driver
from dockyard_common.version import REVISION, VERSION
from supervisor import ksm
from supervisor.services.events import timestamp
from supervisor.services.status import rpc

if TYPE_CHECKING:
    from supervisor.server import Daemon

SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1"


class SystemService(pb_grpc.SystemServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @rpc
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        cfg = self.daemon.config
        snapshotters = [
            p.id for p in self.daemon.registry.all() if p.type == SNAPSHOTTER_PLUGIN and not p.init_error
        ]
        return pb.InfoResponse(
            version=VERSION, revision=REVISION, root=str(cfg.root), state=str(cfg.state),
            address=str(cfg.address), pid=os.getpid(), started_at=timestamp(self.daemon.started_at),
            snapshotters=snapshotters, default_snapshotter=cfg.default_snapshotter,
            cgroup_driver=detect_cgroup_driver(), python_version=platform.python_version(),
            ksm=ksm.state(),
        )
