"""containerd.services.introspection.v1.Introspection."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2

from dockyard_api.containerd.services.introspection.v1 import introspection_pb2 as pb
from dockyard_api.containerd.services.introspection.v1 import introspection_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import platform_pb2
from supervisor import filters
from supervisor.plugins import Plugin, PluginRegistry
from supervisor.services.status import rpc


def _to_pb(p: Plugin) -> pb.Plugin:
    out = pb.Plugin(
        type=p.type, id=p.id, requires=p.requires, exports=p.exports, capabilities=p.capabilities,
        platforms=[platform_pb2.Platform(os=o, architecture=a, variant=v) for o, a, v in p.platforms],
    )
    if p.init_error:
        # ctr shows "skip" for messages containing "skip plugin", "error" otherwise.
        out.init_err.CopyFrom(status_pb2.Status(code=code_pb2.UNKNOWN, message=p.init_error))
    return out


class IntrospectionService(pb_grpc.IntrospectionServicer):
    def __init__(self, registry: PluginRegistry, server_uuid: str) -> None:
        self.registry = registry
        self.server_uuid = server_uuid

    @rpc
    async def Plugins(self, request: pb.PluginsRequest, context: grpc.aio.ServicerContext
                      ) -> pb.PluginsResponse:
        match = filters.parse_all(list(request.filters))
        found = [
            _to_pb(p) for p in self.registry.all()
            if match.match(filters.adaptor_from({"type": p.type, "id": p.id}))
        ]
        return pb.PluginsResponse(plugins=found)

    @rpc
    async def Server(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext
                     ) -> pb.ServerResponse:
        return pb.ServerResponse(uuid=self.server_uuid)
