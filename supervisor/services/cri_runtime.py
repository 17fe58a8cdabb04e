"""runtime.v1.RuntimeService (Kubernetes CRI): Version and Status.

Sandboxes, containers, streaming and stats are not served yet: each such call answers
UNIMPLEMENTED naming the call, so kubelet and crictl say what is missing instead of failing
with a bare "Method not implemented!".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from dockyard_common.errors import Unimplemented
from supervisor.cri import runtime
from supervisor.services.status import rpc, rpc_stream


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    @rpc
    async def Version(self, request: pb.VersionRequest, context: grpc.aio.ServicerContext) -> pb.VersionResponse:
        v = runtime.RuntimeVersion()
        return pb.VersionResponse(version=v.version, runtime_name=v.runtime_name,
                                  runtime_version=v.runtime_version, runtime_api_version=v.runtime_api_version)

    @rpc
    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        conditions = [pb.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
                      for c in runtime.conditions()]
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions))


def unimplemented(service: str, method: str, streaming: bool) -> Callable[..., Any]:
    message = f"{service}/{method} is not implemented by dockyardd yet"

    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise Unimplemented(message)

    async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        raise Unimplemented(message)
        yield  # an async generator, as the server expects of a streaming method

    for fn in (unary, stream):
        fn.__name__ = fn.__qualname__ = method
    return rpc_stream(stream) if streaming else rpc(unary)


def fill_unimplemented(cls: type, service_name: str) -> None:
    """Give `cls` an UNIMPLEMENTED method, naming the call, for each method it does not define."""
    service = pb.DESCRIPTOR.services_by_name[service_name]
    for method in service.methods:
        if method.name not in cls.__dict__:
            setattr(cls, method.name, unimplemented(service.full_name, method.name, method.server_streaming))


fill_unimplemented(RuntimeService, "RuntimeService")
