"""dockyard.images.v1.Builder: making images in the daemon (our extension). Commit for now.

A commit that creates or updates an image record publishes containerd's ImageCreate or
ImageUpdate event, as the Images service does.
"""

from __future__ import annotations

import grpc

from dockyard_api.containerd.events import image_pb2 as events_pb
from dockyard_api.dockyard.images.v1 import builder_pb2 as pb
from dockyard_api.dockyard.images.v1 import builder_pb2_grpc as pb_grpc
from supervisor.build.commit import CommitOptions, Committer
from supervisor.events import Exchange
from supervisor.services.context import namespace_of
from supervisor.services.events import publish
from supervisor.services.status import rpc
from supervisor.services.transfer import descriptor_pb


def commit_options(request: pb.CommitRequest) -> CommitOptions:
    return CommitOptions(container_id=request.container_id, ref=request.ref,
                         pause=request.pause if request.HasField("pause") else True,
                         changes=list(request.changes), message=request.message, author=request.author,
                         compression=request.compression)


class BuilderService(pb_grpc.BuilderServicer):
    def __init__(self, committer: Committer, events: Exchange) -> None:
        self.committer = committer
        self.events = events

    @rpc
    async def Commit(self, request: pb.CommitRequest, context: grpc.aio.ServicerContext) -> pb.CommitResponse:
        ns = namespace_of(context)
        result = await self.committer.commit(ns, commit_options(request))
        written = result.written
        if written.created:
            publish(self.events, ns, "/images/create", events_pb.ImageCreate(name=written.name))
        else:
            publish(self.events, ns, "/images/update", events_pb.ImageUpdate(name=written.name))
        return pb.CommitResponse(name=written.name, target=descriptor_pb(written.target),
                                 config=descriptor_pb(written.config),
                                 layer=descriptor_pb(result.layer.descriptor), diff_id=result.layer.diff_id,
                                 created=written.created)
