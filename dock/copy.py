"""Files in and out of containers, and their processes, in the SDK (dockyard.containers.v1.Copy).

    files = CopyAPI(client)
    st = await files.stat("web", "/etc/hostname")                  # NotFound when missing
    async with files.copy_from("web", "/etc", follow=False) as (st, chunks):
        async for piece in chunks: ...                              # a tar whose top entry is "etc"
    await files.copy_to("web", "/tmp", tar_chunks, copy_uid_gid=False)   # into an existing directory
    result = await files.top("web", ["-ef"])                        # titles and rows, as docker top

Paths are container paths (absolute, or relative to its `/`), resolved inside its root: symlinks
are followed as the container sees them. Works for running and stopped containers; the daemon
mounts a stopped container's snapshot for the call. See proto/dockyard/containers/v1/copy.proto.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from dockyard_api.dockyard.containers.v1 import copy_pb2 as pb
from dockyard_api.dockyard.containers.v1 import copy_pb2_grpc as pb_grpc
from dockyard_common.errors import Internal

if TYPE_CHECKING:
    from dock.client import Client


@dataclass(frozen=True)
class PathStat:
    """What a container path is; `mode` is the Linux st_mode (type bits included)."""

    name: str
    size: int
    mode: int
    mtime_ns: int
    link_target: str = ""
    uid: int = 0
    gid: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(frozen=True)
class TopResult:
    titles: list[str]
    processes: list[list[str]]


def _stat(m: pb.PathStat) -> PathStat:
    return PathStat(m.name, m.size, m.mode, m.mtime_ns, m.link_target, m.uid, m.gid)


class CopyAPI:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = pb_grpc.CopyStub(client.channel)

    async def stat(self, container_id: str, path: str, *, follow: bool = False) -> PathStat:
        req = pb.StatRequest(container_id=container_id, path=path, follow_link=follow)
        return _stat(await self.client.call(self.stub.Stat, req))

    @contextlib.asynccontextmanager
    async def copy_from(self, container_id: str, path: str, *, follow: bool = False
                        ) -> AsyncIterator[tuple[PathStat, AsyncIterator[bytes]]]:
        """The stat of `path` and the pieces of its tar; leaving the block ends the call."""
        req = pb.CopyFromRequest(container_id=container_id, path=path, follow_link=follow)
        call = self.stub.CopyFrom(req, metadata=self.client.metadata())
        try:
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise self.client._error(exc) from None
            if first is grpc.aio.EOF or not first.HasField("stat"):
                raise Internal("copy from the container: the daemon sent no stat first")

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    while (msg := await call.read()) is not grpc.aio.EOF:
                        yield msg.data
                except grpc.aio.AioRpcError as exc:
                    raise self.client._error(exc) from None

            yield _stat(first.stat), chunks()
        finally:
            call.cancel()

    async def copy_to(self, container_id: str, path: str, chunks: AsyncIterable[bytes], *,
                      copy_uid_gid: bool = False) -> None:
        """Extract the tar `chunks` into the existing directory `path` of the container."""
        async def requests() -> AsyncIterator[pb.CopyToRequest]:
            yield pb.CopyToRequest(header=pb.CopyToHeader(container_id=container_id, path=path,
                                                          copy_uid_gid=copy_uid_gid))
            async for piece in chunks:
                if piece:
                    yield pb.CopyToRequest(data=piece)

        try:
            await self.stub.CopyTo(requests(), metadata=self.client.metadata(), timeout=self.client.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.client._error(exc) from None

    async def top(self, container_id: str, ps_args: list[str] | None = None) -> TopResult:
        resp = await self.client.call(self.stub.Top, pb.TopRequest(container_id=container_id,
                                                                   ps_args=ps_args or []))
        return TopResult(list(resp.titles), [list(r.fields) for r in resp.processes])
