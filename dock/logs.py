"""Container logs in the SDK: `client.logs.read(id, ...)`, over dockyard.logs.v1.Logs.

    async for e in client.logs.read("web", tail=100, follow=True):
        sys.stdout.buffer.write(e.data)

Entries come oldest first: `data` is a line with its newline (without one when `partial`: a
piece of a line longer than 16 KiB), `stream` "stdout" or "stderr", `time_ns` when the shim read
it. With `follow` the iterator goes on until the container's task has exited and everything was
sent. Works for running and stopped containers; NotFound for an unknown one, FailedPrecondition
for one created without a log.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from dockyard_api.dockyard.logs.v1 import logs_pb2 as pb
from dockyard_api.dockyard.logs.v1 import logs_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from dock.client import Client


@dataclass(frozen=True)
class LogEntry:
    time_ns: int
    stream: str
    data: bytes
    partial: bool = False


class LogsAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.LogsStub(client.channel)

    async def read(self, container_id: str, *, follow: bool = False, tail: int | None = None,
                   since_ns: int = 0, until_ns: int = 0, timestamps: bool = False
                   ) -> AsyncGenerator[LogEntry, None]:
        req = pb.ReadRequest(container_id=container_id, follow=follow, timestamps=timestamps)
        if tail is not None:
            req.tail = tail
        if since_ns:
            req.since.FromNanoseconds(since_ns)
        if until_ns:
            req.until.FromNanoseconds(until_ns)
        call = self.stub.Read(req, metadata=self.client.metadata())
        try:
            async for msg in call:
                for e in msg.entries:
                    yield LogEntry(e.time.ToNanoseconds(), e.stream, e.data, e.partial)
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None
        finally:
            call.cancel()
