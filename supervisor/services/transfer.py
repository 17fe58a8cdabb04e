"""dockyard.images.v1.Transfer: server-side import, export, unpack, inspect and check (our extension).

Import takes the archive as a client stream (first message: options) and answers with
progress; image records it creates or updates publish containerd's ImageCreate/ImageUpdate
events, like the Images service. Export streams the archive back in chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from google.rpc import status_pb2

from dockyard_api.containerd.events import image_pb2 as events_pb
from dockyard_api.containerd.types import descriptor_pb2, platform_pb2
from dockyard_api.dockyard.images.v1 import images_pb2 as pb
from dockyard_api.dockyard.images.v1 import images_pb2_grpc as pb_grpc
from dockyard_common.errors import DockyardError, InvalidArgument
from dockyard_common.imagespec import Descriptor, Matcher, Platform
from supervisor.events import Exchange
from supervisor.images.exporter import ExportOptions
from supervisor.images.importer import BlobProgress, ImageImported, ImportDone, ImportEvent, ImportOptions
from supervisor.images.transfer import ImageTransfer
from supervisor.images.unpack import LayerProgress, UnpackEvent
from supervisor.services.context import namespace_of
from supervisor.services.events import publish
from supervisor.services.status import code_for, rpc, rpc_stream, rpc_upload


def descriptor_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=d.annotations)


def platform_pb(p: Platform) -> platform_pb2.Platform:
    return platform_pb2.Platform(os=p.os, architecture=p.architecture, variant=p.variant)


def unpack_pb(event: UnpackEvent) -> pb.UnpackProgress:
    if isinstance(event, LayerProgress):
        return pb.UnpackProgress(layer=pb.LayerProgress(
            index=event.index, total=event.total, layer=descriptor_pb(event.layer), diff_id=event.diff_id,
            chain_id=event.chain_id, state=event.state))
    return pb.UnpackProgress(done=pb.UnpackDone(
        manifest=descriptor_pb(event.manifest), chain_id=event.chain_id, snapshotter=event.snapshotter,
        extracted=event.extracted, reused=event.reused))


def _imported_pb(event: ImageImported) -> pb.ImportedImage:
    return pb.ImportedImage(name=event.name, target=descriptor_pb(event.target), created=event.created)


def import_progress_pb(event: ImportEvent) -> pb.ImportProgress:
    if isinstance(event, BlobProgress):
        return pb.ImportProgress(blob=pb.BlobProgress(path=event.path, offset=event.offset, total=event.total,
                                                      digest=event.digest))
    if isinstance(event, ImageImported):
        return pb.ImportProgress(image=_imported_pb(event))
    if isinstance(event, ImportDone):
        return pb.ImportProgress(done=pb.ImportDone(format=event.format, index=descriptor_pb(event.index),
                                                    images=[_imported_pb(i) for i in event.images],
                                                    bytes_read=event.bytes_read))
    return pb.ImportProgress(unpack=unpack_pb(event))


def import_options(message: pb.ImportOptions) -> ImportOptions:
    return ImportOptions(index_name=message.index_name, base_name=message.base_name,
                         all_platforms=message.all_platforms, platform=message.platform, unpack=message.unpack,
                         snapshotter=message.snapshotter, digests=message.digests, labels=dict(message.labels))


class TransferService(pb_grpc.TransferServicer):
    def __init__(self, transfer: ImageTransfer, events: Exchange) -> None:
        self.transfer = transfer
        self.events = events

    @rpc_upload
    async def Import(self, requests: AsyncIterator[pb.ImportRequest], context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[pb.ImportProgress]:
        ns = namespace_of(context)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "options":
            raise InvalidArgument("import: the first message must carry the options")
        opts = import_options(first.options)

        async def chunks() -> AsyncIterator[bytes]:
            async for req in requests:
                if req.WhichOneof("request") == "options":
                    raise InvalidArgument("import: options may only be sent in the first message")
                yield req.chunk

        try:
            async with aclosing(self.transfer.importer.run(ns, chunks(), opts)) as run:
                async for event in run:
                    if isinstance(event, ImageImported):
                        self._published(ns, event, opts.labels)
                    yield import_progress_pb(event)
        except Exception as exc:
            # Tell the client first, in a message: ending the call while it is still sending
            # may reach it as INTERNAL. Then read on until it stops (our SDK cancels at once).
            code = code_for(exc) if isinstance(exc, DockyardError) else grpc.StatusCode.INTERNAL
            yield pb.ImportProgress(error=status_pb2.Status(code=code.value[0], message=str(exc)))
            async for _ in requests:
                pass
            raise

    def _published(self, ns: str, event: ImageImported, labels: dict[str, str]) -> None:
        if event.created:
            publish(self.events, ns, "/images/create", events_pb.ImageCreate(name=event.name, labels=labels))
        else:
            publish(self.events, ns, "/images/update", events_pb.ImageUpdate(name=event.name, labels=labels))

    @rpc_stream
    async def Export(self, request: pb.ExportRequest, context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[pb.ExportChunk]:
        ns = namespace_of(context)
        opts = ExportOptions(platform=request.platform, all_platforms=request.all_platforms,
                             format=request.format or "docker")
        async with aclosing(self.transfer.exporter.export(ns, list(request.names), opts)) as chunks:
            async for data in chunks:
                yield pb.ExportChunk(data=data)

    @rpc_stream
    async def Unpack(self, request: pb.UnpackRequest, context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[pb.UnpackProgress]:
        ns = namespace_of(context)
        image = await self.transfer.images.get(ns, request.name)
        snapshotter = request.snapshotter or self.transfer.default_snapshotter
        run = self.transfer.unpacker.unpack(ns, image.target.record(), snapshotter,
                                            Matcher.parse(request.platform))
        async with aclosing(run) as steps:
            async for step in steps:
                yield unpack_pb(step)

    @rpc
    async def Inspect(self, request: pb.InspectRequest, context: grpc.aio.ServicerContext) -> pb.InspectResponse:
        info = await self.transfer.inspector.inspect(namespace_of(context), request.name,
                                                     Matcher.parse(request.platform))
        return pb.InspectResponse(
            name=info.name, target=descriptor_pb(info.target), manifest=descriptor_pb(info.manifest),
            config=descriptor_pb(info.config_descriptor), config_json=info.config_json,
            layers=[pb.Layer(descriptor=descriptor_pb(la.descriptor), diff_id=la.diff_id, chain_id=la.chain_id)
                    for la in info.layers],
            size=info.size, platform=platform_pb(info.platform),
            platforms=[platform_pb(p) for p in info.platforms], unpacked=info.unpacked)

    @rpc
    async def Check(self, request: pb.CheckRequest, context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        results = await self.transfer.inspector.check(
            namespace_of(context), list(request.names), Matcher.parse(request.platform),
            request.snapshotter or self.transfer.default_snapshotter)
        return pb.CheckResponse(images=[
            pb.ImageCheck(name=r.name, target=descriptor_pb(r.target), complete=r.complete,
                          present_size=r.present_size, total_size=r.total_size,
                          missing=[descriptor_pb(d) for d in r.missing], unpacked=r.unpacked,
                          platforms=[platform_pb(p) for p in r.platforms], error=r.error)
            for r in results])
