"""containerd.services.images.v1.Images over the image store.

As containerd's server: Create and Update refuse an empty name before the store sees it
(`Image.Name required`); timestamps in requests are ignored (clients send Go's zero time);
each change publishes ImageCreate/ImageUpdate/ImageDelete (package
containerd.services.images.v1) on /images/create|update|delete after it is stored.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from dockyard_api.containerd.events import image_pb2 as events_pb
from dockyard_api.containerd.services.images.v1 import images_pb2 as pb
from dockyard_api.containerd.services.images.v1 import images_pb2_grpc as pb_grpc
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from supervisor.events import Exchange
from supervisor.metadata.images import Image, ImageStore
from supervisor.services.context import namespace_of
from supervisor.services.events import publish, timestamp
from supervisor.services.list_memo import ListMemo
from supervisor.services.status import rpc


def image_to_pb(image: Image) -> pb.Image:
    t = image.target
    out = pb.Image(
        name=image.name,
        labels=image.labels,
        target=descriptor_pb2.Descriptor(media_type=t.media_type, digest=t.digest, size=t.size,
                                         annotations=t.annotations),
    )
    if image.created_at is not None:
        out.created_at.CopyFrom(timestamp(image.created_at))
    if image.updated_at is not None:
        out.updated_at.CopyFrom(timestamp(image.updated_at))
    return out


def image_from_pb(message: pb.Image) -> Image:
    """The request's image; its timestamps are the server's to set, so they are dropped."""
    t = message.target
    return Image(message.name, Descriptor(t.media_type, t.digest, t.size, dict(t.annotations)),
                 dict(message.labels))


class ImagesService(pb_grpc.ImagesServicer):
    def __init__(self, store: ImageStore, events: Exchange) -> None:
        self.store = store
        self.events = events
        self._listed: ListMemo[Image, pb.ListImagesResponse] = ListMemo(
            lambda found: pb.ListImagesResponse(images=[image_to_pb(i) for i in found]))

    @rpc
    async def Get(self, request: pb.GetImageRequest, context: grpc.aio.ServicerContext) -> pb.GetImageResponse:
        image = await self.store.get(namespace_of(context), request.name)
        return pb.GetImageResponse(image=image_to_pb(image))

    @rpc
    async def List(self, request: pb.ListImagesRequest, context: grpc.aio.ServicerContext
                   ) -> pb.ListImagesResponse:
        ns, filters = namespace_of(context), list(request.filters)
        return self._listed.get((ns, *filters), await self.store.list(ns, filters))

    @rpc
    async def Create(self, request: pb.CreateImageRequest, context: grpc.aio.ServicerContext
                     ) -> pb.CreateImageResponse:
        ns = namespace_of(context)
        if not request.image.name:
            raise InvalidArgument("Image.Name required")
        created = await self.store.create(ns, image_from_pb(request.image))
        publish(self.events, ns, "/images/create", events_pb.ImageCreate(name=created.name, labels=created.labels))
        return pb.CreateImageResponse(image=image_to_pb(created))

    @rpc
    async def Update(self, request: pb.UpdateImageRequest, context: grpc.aio.ServicerContext
                     ) -> pb.UpdateImageResponse:
        ns = namespace_of(context)
        if not request.image.name:
            raise InvalidArgument("Image.Name required")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        updated = await self.store.update(ns, image_from_pb(request.image), paths)
        publish(self.events, ns, "/images/update", events_pb.ImageUpdate(name=updated.name, labels=updated.labels))
        return pb.UpdateImageResponse(image=image_to_pb(updated))

    @rpc
    async def Delete(self, request: pb.DeleteImageRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        ns = namespace_of(context)
        # With sync the store returns after a garbage collection (so the event follows it;
        # containerd publishes first, which no client can tell apart).
        await self.store.delete(ns, request.name, sync=request.sync)
        publish(self.events, ns, "/images/delete", events_pb.ImageDelete(name=request.name))
        return empty_pb2.Empty()
