"""containerd.services.version.v1.Version."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from dockyard_api.containerd.services.version.v1 import version_pb2 as pb
from dockyard_api.containerd.services.version.v1 import version_pb2_grpc as pb_grpc
from dockyard_common.version import REVISION, VERSION
from supervisor.services.status import rpc


class VersionService(pb_grpc.VersionServicer):
    @rpc
    async def Version(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
                      ) -> pb.VersionResponse:
        return pb.VersionResponse(version=VERSION, revision=REVISION)
