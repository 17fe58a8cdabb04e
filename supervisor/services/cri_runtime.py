"""runtime.v1.RuntimeService (Kubernetes CRI): Version, Status and pod sandboxes
(supervisor/cri/sandbox.py; messages converted in cri_sandbox_pb.py).

Containers, streaming and stats are not served yet: each such call answers
UNIMPLEMENTED naming the call, so kubelet and crictl say what is missing instead of failing
with a bare "Method not implemented!".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument, Unimplemented
from supervisor.cri import runtime
from supervisor.cri.sandbox import PodSandboxes
from supervisor.cri.sandbox_types import SandboxState
from supervisor.services.cri_sandbox_pb import pod_config, sandbox_pb, status_pb
from supervisor.services.status import rpc, rpc_stream


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    def __init__(self, sandboxes: PodSandboxes) -> None:
        self.sandboxes = sandboxes

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

    @rpc
    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest,
                            context: grpc.aio.ServicerContext) -> pb.RunPodSandboxResponse:
        if not request.HasField("config"):
            raise InvalidArgument("run pod sandbox: config is missing")
        pod_id = await self.sandboxes.run(pod_config(request.config, request.runtime_handler))
        return pb.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    @rpc
    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.StopPodSandboxResponse:
        await self.sandboxes.stop(request.pod_sandbox_id)  # a pod that is gone: success, as the CRI asks
        return pb.StopPodSandboxResponse()

    @rpc
    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                               context: grpc.aio.ServicerContext) -> pb.RemovePodSandboxResponse:
        await self.sandboxes.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    @rpc
    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                               context: grpc.aio.ServicerContext) -> pb.PodSandboxStatusResponse:
        sandbox = await self.sandboxes.status(request.pod_sandbox_id)
        info = {"info": json.dumps(await self.sandboxes.info(sandbox))} if request.verbose else {}
        return pb.PodSandboxStatusResponse(status=status_pb(sandbox), info=info)

    @rpc
    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListPodSandboxResponse:
        f = request.filter
        state = None
        if f.HasField("state"):
            if f.state.state not in {int(v) for v in SandboxState}:
                raise InvalidArgument(f"list pod sandbox: unknown state {f.state.state}")
            state = SandboxState(f.state.state)
        found = await self.sandboxes.list(f.id, state, dict(f.label_selector))
        return pb.ListPodSandboxResponse(items=[sandbox_pb(s) for s in found])


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
