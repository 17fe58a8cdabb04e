"""dockyard.registry.v1.Registry: server-side pull, push, tag and login (our extension).

Image records a pull or tag creates or moves publish containerd's ImageCreate/ImageUpdate
events, like the Images service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from dockyard_api.containerd.events import image_pb2 as events_pb
from dockyard_api.dockyard.registry.v1 import registry_pb2 as pb
from dockyard_api.dockyard.registry.v1 import registry_pb2_grpc as pb_grpc
from dockyard_common.credentials import Credentials
from dockyard_common.errors import InvalidArgument
from supervisor.events import Exchange
from supervisor.images.unpack import LayerProgress, UnpackDone
from supervisor.remote.fetcher import BlobProgress
from supervisor.remote.pull import PullDone, PullOptions, RemoteOptions, Resolved
from supervisor.remote.push import PushDone, PushOptions
from supervisor.remote.registry import Registry
from supervisor.services.context import namespace_of
from supervisor.services.events import publish
from supervisor.services.status import rpc, rpc_stream
from supervisor.services.transfer import descriptor_pb, unpack_pb

MAX_CONCURRENCY = 16


def remote_options(message: pb.RemoteOptions) -> RemoteOptions:
    creds = None
    if message.HasField("credentials") and (message.credentials.username or message.credentials.secret):
        creds = Credentials(message.credentials.username, message.credentials.secret)
    if message.timeout_seconds < 0:
        raise InvalidArgument(f"timeout_seconds {message.timeout_seconds} must not be negative")
    return RemoteOptions(plain_http=message.plain_http, skip_verify=message.skip_verify, credentials=creds,
                         timeout=float(message.timeout_seconds))


def _concurrency(value: int, what: str) -> int:
    if value < 0 or value > MAX_CONCURRENCY:
        raise InvalidArgument(f"{what} must be between 0 and {MAX_CONCURRENCY}, not {value}")
    return value or 3


def progress_pb(event: object) -> pb.Progress:
    if isinstance(event, BlobProgress):
        return pb.Progress(blob=pb.BlobProgress(ref=event.ref, descriptor=descriptor_pb(event.descriptor),
                                                state=event.state, offset=event.offset, total=event.total))
    if isinstance(event, Resolved):
        return pb.Progress(resolved=pb.Resolved(name=event.name, target=descriptor_pb(event.target),
                                                host=event.host))
    if isinstance(event, LayerProgress | UnpackDone):
        return pb.Progress(unpack=unpack_pb(event))
    if isinstance(event, PullDone):
        return pb.Progress(done=pb.Done(name=event.name, target=descriptor_pb(event.target), created=event.created,
                                        bytes_transferred=event.bytes_received, chain_id=event.chain_id,
                                        snapshotter=event.snapshotter))
    if isinstance(event, PushDone):
        return pb.Progress(done=pb.Done(name=event.name, target=descriptor_pb(event.target), created=True,
                                        bytes_transferred=event.bytes_sent))
    raise AssertionError(f"unexpected progress event {event!r}")


class RegistryService(pb_grpc.RegistryServicer):
    def __init__(self, registry: Registry, events: Exchange) -> None:
        self.registry = registry
        self.events = events

    @rpc_stream
    async def Pull(self, request: pb.PullRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Progress]:
        ns = namespace_of(context)
        if not request.ref:
            raise InvalidArgument("pull: ref must not be empty")
        remote = remote_options(request.remote)
        opts = PullOptions(plain_http=remote.plain_http, skip_verify=remote.skip_verify,
                           credentials=remote.credentials, timeout=remote.timeout, platform=request.platform,
                           all_platforms=request.all_platforms, unpack=request.unpack,
                           snapshotter=request.snapshotter, labels=dict(request.labels),
                           max_concurrent=_concurrency(request.max_concurrent_downloads, "max_concurrent_downloads"))
        async with aclosing(self.registry.pull(ns, request.ref, opts)) as events:
            async for event in events:
                if isinstance(event, PullDone):
                    if event.created:
                        publish(self.events, ns, "/images/create",
                                events_pb.ImageCreate(name=event.name, labels=opts.labels))
                    else:
                        publish(self.events, ns, "/images/update",
                                events_pb.ImageUpdate(name=event.name, labels=opts.labels))
                yield progress_pb(event)

    @rpc_stream
    async def Push(self, request: pb.PushRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Progress]:
        ns = namespace_of(context)
        if not request.ref:
            raise InvalidArgument("push: ref must not be empty")
        if request.chunk_size < 0:
            raise InvalidArgument(f"push: chunk_size {request.chunk_size} must not be negative")
        remote = remote_options(request.remote)
        opts = PushOptions(plain_http=remote.plain_http, skip_verify=remote.skip_verify,
                           credentials=remote.credentials, timeout=remote.timeout, local=request.local,
                           platform=request.platform,
                           chunk_size=request.chunk_size,
                           max_concurrent=_concurrency(request.max_concurrent_uploads, "max_concurrent_uploads"))
        async with aclosing(self.registry.push(ns, request.ref, opts)) as events:
            async for event in events:
                yield progress_pb(event)

    @rpc
    async def Tag(self, request: pb.TagRequest, context: grpc.aio.ServicerContext) -> pb.TagResponse:
        ns = namespace_of(context)
        image, created = await self.registry.tag(ns, request.source, request.target, request.force)
        if created:
            publish(self.events, ns, "/images/create", events_pb.ImageCreate(name=image.name, labels=image.labels))
        else:
            publish(self.events, ns, "/images/update", events_pb.ImageUpdate(name=image.name, labels=image.labels))
        return pb.TagResponse(name=image.name, target=descriptor_pb(image.target), created=created)

    @rpc
    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        if not request.server:
            raise InvalidArgument("login: server must not be empty")
        remote = remote_options(request.remote)
        if remote.credentials is None:
            raise InvalidArgument("login: a username and a secret are required")
        server = await self.registry.login(request.server, remote.credentials, remote)
        return pb.LoginResponse(server=server)
