"""dockyard.attach.v1.Attach: a client attached to a container's stdio (domain: supervisor/runtime/attach)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from dockyard_api.dockyard.attach.v1 import attach_pb2 as pb
from dockyard_api.dockyard.attach.v1 import attach_pb2_grpc as pb_grpc
from dockyard_common.errors import DockyardError, InvalidArgument, Unavailable
from supervisor.metadata.containers import ContainerStore
from supervisor.runtime.attach import AttachSession, Exited, Output, open_session
from supervisor.runtime.manager import TaskManager
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc_bidi

log = logging.getLogger("dockyard.attach")

QUEUE = 64  # output chunks between the shim's connection and the client's stream
_DETACHED = object()
_GONE = object()


class AttachService(pb_grpc.AttachServicer):
    def __init__(self, containers: ContainerStore, tasks: TaskManager) -> None:
        self.containers = containers
        self.tasks = tasks

    @rpc_bidi
    async def Attach(self, request_iterator: AsyncIterator[pb.AttachRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AttachResponse]:
        ns = namespace_of(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "open":
            raise InvalidArgument("the first message of an attach must be `open`")
        opened = first.open
        await self.containers.get(ns, opened.container_id)  # NotFound for an unknown container
        session = await open_session(self.tasks, ns, opened.container_id, stdin=opened.stdin,
                                     detach_keys=opened.detach_keys)
        queue: asyncio.Queue[object] = asyncio.Queue(QUEUE)
        jobs = [asyncio.ensure_future(self._output(session, queue)),
                asyncio.ensure_future(self._input(session, requests, queue))]
        try:
            yield pb.AttachResponse(attached=pb.Attached(tty=session.tty, stdin=session.stdin))
            while True:
                item = await queue.get()
                if isinstance(item, Output):
                    yield pb.AttachResponse(output=pb.Output(stream=item.stream, data=item.data))
                elif isinstance(item, Exited):
                    end = pb.End(exit_status=item.status)
                    if item.exited_at_ns:
                        end.exited_at.FromNanoseconds(item.exited_at_ns)
                    yield pb.AttachResponse(end=end)
                    return
                elif item is _DETACHED:
                    yield pb.AttachResponse(end=pb.End(detached=True))
                    return
                else:
                    raise Unavailable(f"attach to {opened.container_id}: the container's shim ended the "
                                      "connection (it went away, or this client fell too far behind)")
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await session.close()

    @staticmethod
    async def _output(session: AttachSession, queue: asyncio.Queue[object]) -> None:
        async for item in session.output():
            await queue.put(item)
        await queue.put(_GONE)

    @staticmethod
    async def _input(session: AttachSession, requests: AsyncIterator[pb.AttachRequest],
                     queue: asyncio.Queue[object]) -> None:
        """The client's messages, until it detaches or half-closes (which only ends its input)."""
        async for req in requests:
            kind = req.WhichOneof("request")
            if kind == "stdin":
                if await session.write(req.stdin):
                    break
            elif kind == "resize":
                try:
                    await session.resize(req.resize.width, req.resize.height)
                except DockyardError as exc:  # the task may be exiting: not the client's error
                    log.debug("attach: resize of %s: %s", session.task.id, exc)
            elif kind == "close_stdin":
                await session.close_stdin()
            elif kind == "detach":
                break
        else:
            return
        # Ahead of any output still queued: the client asked to go.
        with contextlib.suppress(asyncio.QueueFull):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_DETACHED)
