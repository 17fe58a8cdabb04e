"""CRI Exec, Attach and PortForward: check the request (as containerd does), then hand out a
one-time URL of the streaming server (supervisor/cri/streaming/server.py) that serves it.

    streams = CriStreams(StreamServer(CriStreamBackend(containers, pods)), containers, pods)
    url = await streams.exec(ExecRequest(cid, ("sh",), tty=True, stdin=True, stdout=True))
"""

from __future__ import annotations

from dataclasses import replace

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from supervisor.cri.containers import CriContainers
from supervisor.cri.inputs import no_nul
from supervisor.cri.sandbox import PodSandboxes
from supervisor.cri.sandbox_types import SandboxState
from supervisor.cri.streaming.server import StreamServer
from supervisor.cri.streaming.types import AttachRequest, ExecRequest, PortForwardRequest


def _check_stdio(call: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        raise InvalidArgument(f"{call}: tty and stderr cannot both be true (a terminal has one output)")
    if not (stdin or stdout or stderr):
        raise InvalidArgument(f"{call}: one of stdin, stdout or stderr must be set")


class CriStreams:
    def __init__(self, server: StreamServer, containers: CriContainers, pods: PodSandboxes) -> None:
        self.server = server
        self.containers = containers
        self.pods = pods

    async def exec(self, request: ExecRequest) -> str:
        if not request.cmd:
            raise InvalidArgument("exec: cmd must not be empty")
        no_nul("exec: cmd", request.cmd)
        _check_stdio("exec", request.tty, request.stdin, request.stdout, request.stderr)
        cid, _, _ = await self.containers.exec_target(request.container_id)  # it runs
        return await self.server.url(replace(request, container_id=cid))

    async def attach(self, request: AttachRequest) -> str:
        _check_stdio("attach", request.tty, request.stdin, request.stdout, request.stderr)
        cid, _, _ = await self.containers.exec_target(request.container_id)  # it runs
        return await self.server.url(replace(request, container_id=cid))

    async def port_forward(self, request: PortForwardRequest) -> str:
        bad = [p for p in request.ports if not 0 < p < 65536]
        if bad:
            raise InvalidArgument(f"port forward: invalid port {bad[0]}")
        pod = await self.pods.status(request.pod_id)
        if pod.state != SandboxState.READY:
            raise FailedPrecondition(f"port forward: pod sandbox {pod.id} is not ready")
        return await self.server.url(replace(request, pod_id=pod.id))

    async def close(self) -> None:
        await self.server.close()
