"""Server-side image transfer in the SDK: `client.transfer` (Dockyard's Transfer service).

    async with Client(address) as c:
        result = await c.transfer.import_archive("busybox.tar", unpack=True)
        [i.name for i in result.images]                      # e.g. docker.io/library/busybox:latest
        async for event in c.transfer.import_stream(open("x.tar", "rb")):    # progress as it happens
            ...
        await c.transfer.export_to("out.tar", ["docker.io/library/busybox:latest"])
        info = await c.transfer.inspect("docker.io/library/busybox:latest")
        info.config["config"]["Cmd"], info.layers, info.size
        for r in await c.transfer.check():                   # every image of the namespace
            print(r.name, r.complete, r.unpacked)

The archive is read in CHUNK pieces (never whole) from a path, a binary file, bytes, or an
(async) iterable of bytes. Errors are the daemon's kinds (`dockyard_common.errors`).
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dock.upload import Sent, Source, Upload
from dockyard_api.containerd.types import descriptor_pb2, platform_pb2
from dockyard_api.dockyard.images.v1 import images_pb2 as pb
from dockyard_api.dockyard.images.v1 import images_pb2_grpc as pb_grpc
from dockyard_common.codes import error_from_status
from dockyard_common.errors import Internal, InvalidArgument
from dockyard_common.imagespec import Descriptor
from dockyard_common.jsonutil import json_object

if TYPE_CHECKING:
    from dock.client import Client



@dataclass
class BlobProgress:
    path: str
    offset: int
    total: int
    digest: str = ""  # set once the file is stored


@dataclass
class ImportedImage:
    name: str
    target: Descriptor
    created: bool


@dataclass
class LayerProgress:
    index: int
    total: int
    layer: Descriptor
    diff_id: str
    chain_id: str
    state: str  # extracting, extracted, exists


@dataclass
class UnpackResult:
    manifest: Descriptor
    chain_id: str
    snapshotter: str
    extracted: int
    reused: int


@dataclass
class ImportResult:
    format: str
    index: Descriptor
    images: list[ImportedImage]
    bytes_read: int


@dataclass
class SentProgress:
    """Archive bytes this client has sent so far (for a progress bar)."""

    sent: int


ImportEvent = SentProgress | BlobProgress | ImportedImage | LayerProgress | UnpackResult | ImportResult
UnpackEvent = LayerProgress | UnpackResult


@dataclass
class LayerInfo:
    descriptor: Descriptor
    diff_id: str
    chain_id: str


@dataclass
class ImageInspection:
    name: str
    target: Descriptor
    manifest: Descriptor
    config_descriptor: Descriptor
    config: dict[str, Any]  # the whole image config document
    layers: list[LayerInfo]
    size: int
    platform: str
    platforms: list[str]
    unpacked: list[str] = field(default_factory=list)


@dataclass
class ImageCheck:
    name: str
    target: Descriptor
    complete: bool
    present_size: int
    total_size: int
    missing: list[Descriptor]
    unpacked: bool
    platforms: list[str]
    error: str = ""


def _desc(d: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


def _config_document(name: str, data: bytes) -> dict[str, Any]:
    """The image config the daemon sent, as an object; anything else is an error in words."""
    return json_object(data or b"{}", f"image {name}: the daemon sent an image config; it", Internal)


def _platform(p: platform_pb2.Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def _unpack_event(m: pb.UnpackProgress) -> UnpackEvent:
    if m.WhichOneof("progress") == "layer":
        la = m.layer
        return LayerProgress(la.index, la.total, _desc(la.layer), la.diff_id, la.chain_id, la.state)
    d = m.done
    return UnpackResult(_desc(d.manifest), d.chain_id, d.snapshotter, d.extracted, d.reused)


def _imported(m: pb.ImportedImage) -> ImportedImage:
    return ImportedImage(m.name, _desc(m.target), m.created)


def _import_event(m: pb.ImportProgress) -> ImportEvent:
    kind = m.WhichOneof("progress")
    if kind == "blob":
        return BlobProgress(m.blob.path, m.blob.offset, m.blob.total, m.blob.digest)
    if kind == "image":
        return _imported(m.image)
    if kind == "unpack":
        return _unpack_event(m.unpack)
    if kind == "done":
        d = m.done
        return ImportResult(d.format, _desc(d.index), [_imported(i) for i in d.images], d.bytes_read)
    if kind == "error":
        raise error_from_status(m.error.code, m.error.message)
    raise InvalidArgument(f"import: unexpected progress message {m!r}")


class TransferAPI:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.TransferStub(client.channel)

    async def import_stream(self, source: Source, *, index_name: str = "", base_name: str = "",
                            all_platforms: bool = False, platform: str = "", unpack: bool = False,
                            snapshotter: str = "", digests: bool = False,
                            labels: dict[str, str] | None = None) -> AsyncIterator[ImportEvent]:
        """Send the archive; yield progress as it comes (SentProgress for what went out), ending
        with one ImportResult. Nothing is imported unless that ImportResult arrives."""
        options = pb.ImportOptions(index_name=index_name, base_name=base_name, all_platforms=all_platforms,
                                   platform=platform, unpack=unpack, snapshotter=snapshotter, digests=digests,
                                   labels=labels or {})
        upload = Upload(self._stub.Import, pb.ImportRequest(options=options), lambda data: pb.ImportRequest(chunk=data))
        async for message in upload.run(self._client, source):
            yield SentProgress(message.sent) if isinstance(message, Sent) else _import_event(message)

    async def import_archive(self, source: Source, **options: Any) -> ImportResult:
        """Import and wait for the result; options as for `import_stream`."""
        result = None
        async for event in self.import_stream(source, **options):
            if isinstance(event, ImportResult):
                result = event
        if result is None:
            raise InvalidArgument("import: the daemon ended the stream without a result")
        return result

    async def export_stream(self, names: builtins.list[str], *, platform: str = "", all_platforms: bool = False,
                            format: str = "docker") -> AsyncIterator[bytes]:
        """The archive of `names` (stored names, exactly), in chunks."""
        req = pb.ExportRequest(names=names, platform=platform, all_platforms=all_platforms, format=format)
        async for chunk in self._client.stream(self._stub.Export, req):
            yield chunk.data

    async def export_to(self, dest: str | os.PathLike[str] | IO[bytes], names: builtins.list[str],
                        **options: Any) -> int:
        """Write the archive to a path (removed again if the export fails) or a binary file;
        returns the bytes written."""
        if not isinstance(dest, str | os.PathLike):
            return await self._export_into(dest, names, options)
        path = Path(dest)
        f = await asyncio.to_thread(open, path, "wb")
        try:
            with f:
                return await self._export_into(f, names, options)
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise

    async def _export_into(self, f: IO[bytes], names: builtins.list[str], options: dict[str, Any]) -> int:
        written = 0
        async for chunk in self.export_stream(names, **options):
            await asyncio.to_thread(f.write, chunk)
            written += len(chunk)
        return written

    async def unpack_stream(self, name: str, *, snapshotter: str = "",
                            platform: str = "") -> AsyncIterator[UnpackEvent]:
        req = pb.UnpackRequest(name=name, snapshotter=snapshotter, platform=platform)
        async for m in self._client.stream(self._stub.Unpack, req):
            yield _unpack_event(m)

    async def unpack(self, name: str, *, snapshotter: str = "", platform: str = "") -> UnpackResult:
        result = None
        async for event in self.unpack_stream(name, snapshotter=snapshotter, platform=platform):
            if isinstance(event, UnpackResult):
                result = event
        if result is None:
            raise InvalidArgument("unpack: the daemon ended the stream without a result")
        return result

    async def inspect(self, name: str, *, platform: str = "") -> ImageInspection:
        r = await self._client.call(self._stub.Inspect, pb.InspectRequest(name=name, platform=platform))
        return ImageInspection(
            r.name, _desc(r.target), _desc(r.manifest), _desc(r.config), _config_document(r.name, r.config_json),
            [LayerInfo(_desc(la.descriptor), la.diff_id, la.chain_id) for la in r.layers], r.size,
            _platform(r.platform), [_platform(p) for p in r.platforms], list(r.unpacked))

    async def check(self, names: builtins.list[str] | None = None, *, platform: str = "",
                    snapshotter: str = "") -> builtins.list[ImageCheck]:
        """Completeness of the named images (all of the namespace's when none are named)."""
        r = await self._client.call(self._stub.Check, pb.CheckRequest(names=names or [], platform=platform,
                                                                      snapshotter=snapshotter))
        return [ImageCheck(i.name, _desc(i.target), i.complete, i.present_size, i.total_size,
                           [_desc(d) for d in i.missing], i.unpacked, [_platform(p) for p in i.platforms], i.error)
                for i in r.images]
