"""Image records in the SDK: `client.images`.

    img = await client.images.create("docker.io/library/busybox:latest",
                                     Descriptor(OCI_MANIFEST, "sha256:…", 528), labels={"a": "b"})
    await client.images.set_labels(img.name, {"a": "", "team": "infra"})   # "" removes a label
    await client.images.tag(img.name, "busybox:stable")                     # normalized: docker.io/…
    found = await client.images.list("labels.team==infra")
    await client.images.delete(img.name, sync=True)     # returns after garbage collection
    size = await client.images.size(img)    # content bytes for this platform, unpacked bytes by snapshotter

Names are sent as given, except where a method says it normalizes (`tag`'s target, `find`).
Errors arrive as the daemon's kinds (NotFound, AlreadyExists, InvalidArgument, ...).
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from dockyard_api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_common import imagespec as docs
from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.imagespec import Descriptor
from dockyard_common.reference import InvalidReference, normalize

if TYPE_CHECKING:
    from dock.client import Client

# The SDK's short names for the media types an image target has.
OCI_INDEX = docs.MEDIA_TYPE_OCI_INDEX
OCI_MANIFEST = docs.MEDIA_TYPE_OCI_MANIFEST
DOCKER_MANIFEST_LIST = docs.MEDIA_TYPE_DOCKER_MANIFEST_LIST
DOCKER_MANIFEST = docs.MEDIA_TYPE_DOCKER_MANIFEST


@dataclass
class ImageInfo:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class ImageSize:
    """How big an image is, the two ways one asks.

    `content`: the bytes of its blobs for one platform - the target, the platform's manifest
    (through nested indexes), its config and layers (compressed) - what `ctr images ls` shows
    (containerd's Image.Size). Like ctr it is the sum of what could be walked: a manifest
    missing from the content store ends the walk there. `unpacked`: per snapshotter that has
    the image's layers unpacked, the disk usage of that chain of snapshots (each layer's own
    usage, as `ctr snapshots usage` reports them, summed), as `docker images` shows its size."""

    content: int
    unpacked: dict[str, int] = field(default_factory=dict)


def _descriptor_pb(d: Descriptor) -> descriptor_pb2.Descriptor:
    return descriptor_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=d.annotations)


def _image_pb(image: ImageInfo) -> images_pb2.Image:
    # Timestamps are the daemon's; leaving them unset is what "ignore" looks like on the wire.
    return images_pb2.Image(name=image.name, labels=image.labels, target=_descriptor_pb(image.target))


def _image(msg: images_pb2.Image) -> ImageInfo:
    t = msg.target
    return ImageInfo(
        msg.name,
        Descriptor(t.media_type, t.digest, t.size, dict(t.annotations)),
        dict(msg.labels),
        msg.created_at.ToDatetime(tzinfo=UTC) if msg.HasField("created_at") else None,
        msg.updated_at.ToDatetime(tzinfo=UTC) if msg.HasField("updated_at") else None,
    )


class ImagesAPI:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = images_pb2_grpc.ImagesStub(client.channel)

    async def get(self, name: str) -> ImageInfo:
        resp = await self._client.call(self._stub.Get, images_pb2.GetImageRequest(name=name))
        return _image(resp.image)

    async def find(self, ref: str) -> ImageInfo:
        """The image named exactly `ref`, else the one its normalized form names
        (`busybox` finds `docker.io/library/busybox:latest`)."""
        try:
            return await self.get(ref)
        except NotFound as exact:
            try:
                full = normalize(ref)
            except InvalidReference:
                raise exact from None
            if full == ref:
                raise
            try:
                return await self.get(full)
            except NotFound:
                raise exact from None  # name what the caller asked for

    async def list(self, *filters: str) -> builtins.list[ImageInfo]:
        """Images matching any of the containerd filters (`name==x`, `target.digest==sha256:…`,
        `target.mediatype~=index`, `labels.k==v`); none lists every image, ordered by name."""
        resp = await self._client.call(self._stub.List, images_pb2.ListImagesRequest(filters=list(filters)))
        return [_image(m) for m in resp.images]

    async def create(self, name: str, target: Descriptor, labels: dict[str, str] | None = None) -> ImageInfo:
        image = ImageInfo(name, target, dict(labels or {}))
        resp = await self._client.call(self._stub.Create, images_pb2.CreateImageRequest(image=_image_pb(image)))
        return _image(resp.image)

    async def update(self, image: ImageInfo, paths: builtins.list[str] | None = None) -> ImageInfo:
        """Store `image`'s fields named by `paths` (`labels`, `labels.<k>`, `target`, `annotations`,
        `annotations.<k>`); no paths replaces target and labels as a whole."""
        req = images_pb2.UpdateImageRequest(image=_image_pb(image),
                                            update_mask=field_mask_pb2.FieldMask(paths=paths or []))
        resp = await self._client.call(self._stub.Update, req)
        return _image(resp.image)

    async def set_labels(self, name: str, labels: dict[str, str]) -> ImageInfo:
        """Set the given labels (an empty value removes one), leaving the others alone."""
        if not labels:  # an empty mask would mean "replace everything" to the daemon
            return await self.get(name)
        image = ImageInfo(name, Descriptor("", "", 0), dict(labels))
        return await self.update(image, [f"labels.{k}" for k in labels])

    async def set_target(self, name: str, target: Descriptor) -> ImageInfo:
        return await self.update(ImageInfo(name, target), ["target"])

    async def delete(self, name: str, sync: bool = False) -> None:
        """Delete an image record; with `sync` the daemon collects garbage before answering."""
        await self._client.call(self._stub.Delete, images_pb2.DeleteImageRequest(name=name, sync=sync))

    async def size(self, image: ImageInfo, platform: str = "") -> ImageSize:
        """The image's content size for `platform` (this host's by default) and its unpacked
        size per snapshotter (see ImageSize)."""
        matcher = docs.Matcher.parse(platform)
        desc = image.target
        content = 0
        config: docs.Descriptor | None = None
        for _ in range(docs.MAX_INDEX_DEPTH):
            content += desc.size
            try:
                doc = docs.parse_document(await self._client.content.read_all(desc.digest), desc.media_type,
                                          f"image {image.name} {desc.digest}")
            except DockyardError:
                break  # missing or unreadable: what ctr counts is what it walked
            if isinstance(doc, docs.Manifest):
                content += doc.config.size + sum(layer.size for layer in doc.layers)
                config = doc.config
                break
            best = matcher.best(doc.manifests)
            if best is None:
                break
            desc = best
        unpacked: dict[str, int] = {}
        if config is not None:
            unpacked = await self._unpacked(config.digest)
        return ImageSize(content, unpacked)

    async def _unpacked(self, config_digest: str) -> dict[str, int]:
        """Per snapshotter the config's gc label names (set by whoever unpacked it), the usage
        of the chain of snapshots from that top layer down."""
        try:
            labels = (await self._client.content.info(config_digest)).labels
        except NotFound:
            return {}
        prefix = docs.LABEL_GC_REF_SNAPSHOT + "."
        chains = {k.removeprefix(prefix): v for k, v in labels.items() if k.startswith(prefix) and v}

        async def chain_usage(snapshotter: str, key: str) -> int | None:
            snaps = self._client.snapshots.using(snapshotter)
            total = 0
            try:
                while key:
                    total += (await snaps.usage(key)).size
                    key = (await snaps.stat(key)).parent
            except DockyardError:
                return None  # the label outlived the snapshots (or names no snapshotter): not unpacked there
            return total

        sizes = await asyncio.gather(*(chain_usage(sn, chain) for sn, chain in chains.items()))
        return {sn: size for sn, size in zip(chains, sizes, strict=True) if size is not None}

    async def tag(self, source: str, target: str, normalize_target: bool = True) -> ImageInfo:
        """A new name for `source`'s target and labels, as `ctr images tag` does (Get, then
        Create; AlreadyExists if the name is taken). The new name is normalized unless told not."""
        src = await self.find(source)
        name = normalize(target) if normalize_target else target
        return await self.create(name, src.target, src.labels)

    async def commit(self, container_id: str, ref: str, *, pause: bool = True,
                     changes: builtins.list[str] | None = None, message: str = "", author: str = "",
                     compression: str = "") -> CommitResult:
        """An image named `ref` (normalized) of the container's filesystem changes, made by the
        daemon as `docker commit` makes one: `changes` are Dockerfile instructions (CMD, ENTRYPOINT,
        ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL); a running container is paused for the
        diff unless `pause` is False; `compression` is "gzip" (default) or "zstd"."""
        from dockyard_api.dockyard.images.v1 import builder_pb2, builder_pb2_grpc

        req = builder_pb2.CommitRequest(container_id=container_id, ref=ref, pause=pause, changes=changes or [],
                                        message=message, author=author, compression=compression)
        resp = await self._client.call(builder_pb2_grpc.BuilderStub(self._client.channel).Commit, req)

        def desc(d: descriptor_pb2.Descriptor) -> Descriptor:
            return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))

        return CommitResult(resp.name, desc(resp.target), desc(resp.config), desc(resp.layer), resp.diff_id,
                            resp.created)


@dataclass
class CommitResult:
    """What a commit made: the image record's name and target (the manifest), its config, the
    new layer and its diff ID; `created` is False when an image of that name now points here."""

    name: str
    target: Descriptor
    config: Descriptor
    layer: Descriptor
    diff_id: str
    created: bool
