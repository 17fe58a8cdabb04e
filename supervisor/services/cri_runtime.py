"""runtime.v1.RuntimeService (Kubernetes CRI): Version, Status, pod sandboxes
(supervisor/cri/sandbox.py; messages converted in cri_sandbox_pb.py) and containers
(supervisor/cri/containers.py; cri_containers_pb.py).

Exec, Attach and PortForward answer with one-time URLs of the streaming server
(supervisor/cri/streams.py). A call not served yet answers UNIMPLEMENTED naming the call, so
kubelet and crictl say what is missing instead of failing with a bare "Method not implemented!".
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
from supervisor.cri.containers import CriContainers
from supervisor.cri.metrics import PodMetricsCollector
from supervisor.cri.podstats import PodStats
from supervisor.cri.sandbox import HANDLERS, PodSandboxes
from supervisor.cri.sandbox_types import SandboxState
from supervisor.cri.streaming.types import AttachRequest, ExecRequest, PortForwardRequest
from supervisor.cri.streams import CriStreams
from supervisor.services import cri_containers_pb as cpb
from supervisor.services.cri_metrics_pb import descriptors_pb, pod_metrics_pb
from supervisor.services.cri_podstats_pb import pod_stats_pb
from supervisor.services.cri_sandbox_pb import pod_config, sandbox_pb, status_pb
from supervisor.services.status import rpc, rpc_stream

METRICS_CHUNK = 64  # pods per StreamPodSandboxMetrics message: far below the message size limit


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    def __init__(self, sandboxes: PodSandboxes, containers: CriContainers, streams: CriStreams) -> None:
        self.sandboxes = sandboxes
        self.containers = containers
        self.streams = streams
        self.pod_stats = PodStats(containers)
        self.metrics = PodMetricsCollector(containers)

    @rpc
    async def Version(self, request: pb.VersionRequest, context: grpc.aio.ServicerContext) -> pb.VersionResponse:
        v = runtime.RuntimeVersion()
        return pb.VersionResponse(version=v.version, runtime_name=v.runtime_name,
                                  runtime_version=v.runtime_version, runtime_api_version=v.runtime_api_version)

    @rpc
    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        conditions = [pb.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
                      for c in runtime.conditions()]
        userns = await self.sandboxes.user_namespaces_problem() is None
        handlers = [pb.RuntimeHandler(name=h.name, features=pb.RuntimeHandlerFeatures(
                        recursive_read_only_mounts=h.recursive_read_only_mounts, user_namespaces=h.user_namespaces))
                    for h in runtime.runtime_handlers(HANDLERS, self.sandboxes.settings.runtimes, userns)]
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), runtime_handlers=handlers,
                                 features=pb.RuntimeFeatures(supplemental_groups_policy=True))

    @rpc
    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest,
                            context: grpc.aio.ServicerContext) -> pb.RuntimeConfigResponse:
        # Pods' cgroup parents are cgroupfs paths (sandbox_spec.cgroups_path), never systemd slices.
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=pb.CGROUPFS))

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
        sandbox = await self.sandboxes.status(request.pod_sandbox_id, reported=True)
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

    # -- containers ----------------------------------------------------------------------

    @rpc
    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateContainerResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("create container: pod_sandbox_id must not be empty")
        if not request.HasField("config"):
            raise InvalidArgument("create container: config is missing")
        cid = await self.containers.create(request.pod_sandbox_id, cpb.container_config(request.config))
        return pb.CreateContainerResponse(container_id=cid)

    @rpc
    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: grpc.aio.ServicerContext) -> pb.StartContainerResponse:
        await self.containers.start(request.container_id)
        return pb.StartContainerResponse()

    @rpc
    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: grpc.aio.ServicerContext) -> pb.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument("stop container: timeout must not be negative")
        await self.containers.stop(request.container_id, float(request.timeout))  # gone: success
        return pb.StopContainerResponse()

    @rpc
    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.RemoveContainerResponse:
        await self.containers.remove(request.container_id)
        return pb.RemoveContainerResponse()

    @rpc
    async def ContainerStatus(self, request: pb.ContainerStatusRequest,
                              context: grpc.aio.ServicerContext) -> pb.ContainerStatusResponse:
        found = await self.containers.status(request.container_id)
        info = {"info": json.dumps(await self.containers.info(found))} if request.verbose else {}
        return pb.ContainerStatusResponse(status=cpb.status_pb(found), info=info)

    @rpc
    async def ListContainers(self, request: pb.ListContainersRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListContainersResponse:
        f = request.filter
        state = cpb.state_of(f.state.state) if f.HasField("state") else None
        found = await self.containers.list(f.id, state, f.pod_sandbox_id, dict(f.label_selector))
        return pb.ListContainersResponse(containers=[cpb.container_pb(c) for c in found])

    @rpc
    async def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.aio.ServicerContext) -> pb.ExecSyncResponse:
        if request.timeout < 0:
            raise InvalidArgument("exec sync: timeout must not be negative")
        result = await self.containers.exec_sync(request.container_id, list(request.cmd), float(request.timeout))
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    @rpc
    async def Exec(self, request: pb.ExecRequest, context: grpc.aio.ServicerContext) -> pb.ExecResponse:
        url = await self.streams.exec(ExecRequest(request.container_id, tuple(request.cmd), request.tty,
                                                  request.stdin, request.stdout, request.stderr))
        return pb.ExecResponse(url=url)

    @rpc
    async def Attach(self, request: pb.AttachRequest, context: grpc.aio.ServicerContext) -> pb.AttachResponse:
        url = await self.streams.attach(AttachRequest(request.container_id, request.tty, request.stdin,
                                                      request.stdout, request.stderr))
        return pb.AttachResponse(url=url)

    @rpc
    async def PortForward(self, request: pb.PortForwardRequest,
                          context: grpc.aio.ServicerContext) -> pb.PortForwardResponse:
        url = await self.streams.port_forward(PortForwardRequest(request.pod_sandbox_id, tuple(request.port)))
        return pb.PortForwardResponse(url=url)

    @rpc
    async def ContainerStats(self, request: pb.ContainerStatsRequest,
                             context: grpc.aio.ServicerContext) -> pb.ContainerStatsResponse:
        return pb.ContainerStatsResponse(stats=cpb.stats_pb(await self.containers.stats(request.container_id)))

    @rpc
    async def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ListContainerStatsResponse:
        f = request.filter
        found = await self.containers.list_stats(f.id, f.pod_sandbox_id, dict(f.label_selector))
        return pb.ListContainerStatsResponse(stats=[cpb.stats_pb(u) for u in found])

    @rpc
    async def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                       context: grpc.aio.ServicerContext) -> pb.UpdateContainerResourcesResponse:
        if not request.HasField("linux"):
            raise InvalidArgument("update container resources: linux resources are missing")
        await self.containers.update_resources(request.container_id, cpb.resources_of(request.linux))
        return pb.UpdateContainerResourcesResponse()

    @rpc
    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                              context: grpc.aio.ServicerContext) -> pb.PodSandboxStatsResponse:
        return pb.PodSandboxStatsResponse(stats=pod_stats_pb(await self.pod_stats.stats(request.pod_sandbox_id)))

    @rpc
    async def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        found = await self.pod_stats.list(f.id, dict(f.label_selector))
        return pb.ListPodSandboxStatsResponse(stats=[pod_stats_pb(u) for u in found])

    # -- metrics (supervisor/cri/metrics.py): the descriptors are fixed, kubelet reads them once --

    @rpc
    async def ListMetricDescriptors(self, request: pb.ListMetricDescriptorsRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=descriptors_pb())

    @rpc
    async def ListPodSandboxMetrics(self, request: pb.ListPodSandboxMetricsRequest,
                                    context: grpc.aio.ServicerContext) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=[pod_metrics_pb(p) for p in await self.metrics.list()])

    @rpc_stream
    async def StreamPodSandboxMetrics(self, request: pb.StreamPodSandboxMetricsRequest,
                                      context: grpc.aio.ServicerContext
                                      ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        # ListPodSandboxMetrics in lists of at most METRICS_CHUNK pods (none sent when no pod is ready).
        found = await self.metrics.list()
        for i in range(0, len(found), METRICS_CHUNK):
            yield pb.StreamPodSandboxMetricsResponse(
                pod_sandbox_metrics=[pod_metrics_pb(p) for p in found[i:i + METRICS_CHUNK]])

    @rpc
    async def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ReopenContainerLogResponse:
        await self.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()


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
