"""Writing images: new layers diffed from snapshots, then config, manifest and the image record.

Commit and the Dockerfile builder both end here. Words:

    base     the image the new one grows from (`BaseImage`: its manifest and config), or None
             for `scratch` (no layers; the host's platform).
    step     one history entry, with the layer it added or none (a config-only change such as
             ENV or CMD: the entry says `empty_layer`, as Docker writes it).

    writer = ImageWriter(content, images, differ)
    async with temporary_lease(leases, ns) as lease:
        layer = await writer.diff(ns, lower_mounts, upper_mounts, Compression.GZIP, lease)
        written = await writer.write(ns, "docker.io/library/app:1", base,
                                     [Step(History(created_by="commit"), layer)], run_config, lease)

`write` stores the config (history and rootfs.diff_ids grown by one entry per step and per
layer), then the manifest with containerd's gc labels (`containerd.io/gc.ref.content.config`,
`.l.<i>`), all under the caller's lease, and only then creates the image record or points an
existing one at the new manifest. The manifest keeps the base's media-type family (OCI, or
Docker schema 2), except that zstd layers make it OCI: Docker's media types have no zstd layer,
and containerd's converters switch such an image to OCI too. Nothing is written before the
name is checked; a failure leaves no image record and only content the lease holds.

A base image's config is untrusted: `check_base` refuses one holding text that is not valid
Unicode (JSON's `\udcff` escapes decode to lone surrogates, which no UTF-8 writer takes), before
a build or commit starts work on it; and `write` refuses a config or manifest larger than
MAX_DOCUMENT_SIZE, which Dockyard itself would then refuse to read (InvalidArgument, both).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dockyard_common.errors import AlreadyExists, DockyardError, InvalidArgument, NotFound
from dockyard_common.imagespec import (
    LABEL_UNCOMPRESSED,
    MAX_DOCUMENT_SIZE,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_FOREIGN,
    MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE,
    MEDIA_TYPE_OCI_MANIFEST,
    Compression,
    Descriptor,
    ImageConfig,
    Manifest,
    child_gc_labels,
    compression_for_media_type,
    default_platform,
    encode,
    manifest_json,
    media_type_for,
    sha256_digest,
)
from dockyard_common.jsonutil import utf8_encodable
from dockyard_common.reference import dangling_name
from dockyard_common.types import Mount
from supervisor.differ import Differ
from supervisor.metadata import images as records
from supervisor.metadata.content import NamespacedContentStore
from supervisor.timeutil import now

# Docker layer media types and their OCI equivalents (the bytes are the same).
_DOCKER_TO_OCI = {
    MEDIA_TYPE_DOCKER_LAYER: MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP: MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_LAYER_FOREIGN: MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE,
    MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP: MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE + "+gzip",
}
# Fields of a base config that describe the container that made the base, not the new image.
_STALE_FIELDS = ("container", "container_config", "docker_version", "id", "parent")
_READ_CHUNK = 1 << 20


@dataclass
class Layer:
    """A layer blob in the content store and the digest of its uncompressed tar."""

    descriptor: Descriptor
    diff_id: str


@dataclass
class History:
    created_by: str = ""
    comment: str = ""
    author: str = ""
    created: datetime | None = None  # None: the image's `created`


@dataclass
class Step:
    history: History
    layer: Layer | None = None  # None: a config-only step (an `empty_layer` history entry)


@dataclass
class BaseImage:
    manifest: Manifest
    config: ImageConfig


@dataclass
class Written:
    name: str
    target: Descriptor  # the manifest
    config: Descriptor
    layers: list[Descriptor] = field(default_factory=list)
    created: bool = True  # False: an existing image record now points here


def rfc3339(t: datetime) -> str:
    """`t` in UTC as Go's RFC3339Nano writes it (what image configs carry); naive means UTC."""
    u = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)
    text = u.strftime("%Y-%m-%dT%H:%M:%S")
    if u.microsecond:
        text += f".{u.microsecond:06d}".rstrip("0")
    return text + "Z"


class ImageWriter:
    def __init__(self, content: NamespacedContentStore, images: records.ImageStore, differ: Differ) -> None:
        self.content = content
        self.images = images
        self.differ = differ

    # -- layers ----------------------------------------------------------------------------------

    async def diff(self, ns: str, lower: Sequence[Mount], upper: Sequence[Mount], compression: Compression,
                   lease: str, *, docker: bool = False, mtime_clamp: int | None = None,
                   from_upperdir: bool = False) -> Layer:
        """The changes from `lower` (empty: from nothing) to `upper` as a layer blob under `lease`
        (`mtime_clamp`: SOURCE_DATE_EPOCH, no entry newer than it; `from_upperdir`: see Differ.diff)."""
        media_type = media_type_for(compression, docker=docker)
        desc = await self.differ.diff(ns, lower, upper, media_type=media_type, lease=lease, mtime_clamp=mtime_clamp,
                                      from_upperdir=from_upperdir)
        return Layer(desc, await self._diff_id(ns, desc))

    async def _diff_id(self, ns: str, desc: Descriptor) -> str:
        """The differ labels what it writes with the diff ID; a blob that was there already
        (the same change committed before) keeps its label, or is hashed once here."""
        info = await self.content.info(ns, desc.digest)
        found = info.labels.get(LABEL_UNCOMPRESSED, "")
        if found:
            return found
        diff_id = await self._hash_uncompressed(ns, desc)
        await self.content.update(ns, desc.digest, {LABEL_UNCOMPRESSED: diff_id}, [f"labels.{LABEL_UNCOMPRESSED}"])
        return diff_id

    async def _hash_uncompressed(self, ns: str, desc: Descriptor) -> str:
        compression = compression_for_media_type(desc.media_type)
        decompress: Any
        if compression is Compression.GZIP:
            decompress = zlib.decompressobj(wbits=31)
        elif compression is Compression.ZSTD:
            import zstandard

            decompress = zstandard.ZstdDecompressor().decompressobj()
        else:
            decompress = None
        hasher = hashlib.sha256()
        reader = await self.content.reader(ns, desc.digest)
        try:
            offset = 0
            while offset < reader.size:
                chunk = await reader.read_at(offset, _READ_CHUNK)
                if not chunk:
                    break
                offset += len(chunk)
                hasher.update(decompress.decompress(chunk) if decompress is not None else chunk)
        finally:
            await reader.close()
        return "sha256:" + hasher.hexdigest()

    # -- documents and the record ------------------------------------------------------------------

    async def write(self, ns: str, name: str, base: BaseImage | None, steps: Sequence[Step],
                    run_config: dict[str, Any], lease: str, *, author: str = "",
                    created: datetime | None = None, labels: dict[str, str] | None = None) -> Written:
        """Config, manifest and image record for `base` plus `steps`; see the module docstring.
        `run_config` is the new image's `config` object (Cmd, Env, ...) as the caller made it;
        `name` "" stores the image as `dangling_name(<manifest digest>)`."""
        placeholder = Descriptor(MEDIA_TYPE_OCI_MANIFEST, sha256_digest(b""), 1)
        # before anything is written; "" names the image by its manifest digest (dangling_name)
        records.validate(records.Image(name or dangling_name(placeholder.digest), placeholder, dict(labels or {})))
        when = created or now()
        layers = [s.layer for s in steps if s.layer is not None]
        oci = base is None or base.manifest.media_type == MEDIA_TYPE_OCI_MANIFEST or any(
            compression_for_media_type(la.descriptor.media_type) is Compression.ZSTD for la in layers)
        base_layers = list(base.manifest.layers) if base is not None else []
        if oci:
            base_layers = [_as_oci(d) for d in base_layers]

        document = self._config(base, steps, run_config, when, author)
        config_bytes = _encode(document, "image config")
        config_desc = Descriptor(MEDIA_TYPE_OCI_CONFIG if oci else MEDIA_TYPE_DOCKER_CONFIG,
                                 sha256_digest(config_bytes), len(config_bytes))
        all_layers = [*base_layers, *(_as_oci(la.descriptor) if oci else la.descriptor for la in layers)]
        manifest = Manifest(MEDIA_TYPE_OCI_MANIFEST if oci else MEDIA_TYPE_DOCKER_MANIFEST, config_desc,
                            [Descriptor(d.media_type, d.digest, d.size, dict(d.annotations), urls=list(d.urls))
                             for d in all_layers])
        manifest_bytes = _encode(manifest_json(manifest), "manifest")
        target = Descriptor(manifest.media_type, sha256_digest(manifest_bytes), len(manifest_bytes))

        await self.put(ns, config_bytes, lease)
        await self.put(ns, manifest_bytes, lease, child_gc_labels([config_desc, *manifest.layers]))
        name = name or dangling_name(target.digest)
        created_record = await self._name(ns, records.Image(name, target.record(), dict(labels or {})))
        return Written(name, target, config_desc, manifest.layers, created_record)

    def _config(self, base: BaseImage | None, steps: Sequence[Step], run_config: dict[str, Any],
                when: datetime, author: str) -> dict[str, Any]:
        if base is not None:
            document = copy.deepcopy(base.config.raw)
            for key in _STALE_FIELDS:
                document.pop(key, None)
        else:
            document = default_platform().to_json()
        diff_ids = list(base.config.diff_ids) if base is not None else []
        history = list(document.get("history") or [])
        for step in steps:
            entry: dict[str, Any] = {"created": rfc3339(step.history.created or when)}
            if step.history.created_by:
                entry["created_by"] = step.history.created_by
            if step.history.author:
                entry["author"] = step.history.author
            if step.history.comment:
                entry["comment"] = step.history.comment
            if step.layer is None:
                entry["empty_layer"] = True
            else:
                diff_ids.append(step.layer.diff_id)
            history.append(entry)
        document["created"] = rfc3339(when)
        if author:
            document["author"] = author
        else:
            document.pop("author", None)  # Docker: the author is the new image's, none if not given
        document["config"] = run_config
        document["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        document["history"] = history
        return document

    async def put(self, ns: str, data: bytes, lease: str, labels: dict[str, str] | None = None) -> str:
        """Store a small blob we made (a config, a manifest) under `lease`, with `labels`."""
        digest = sha256_digest(data)
        try:
            writer = await self.content.writer(ns, f"build-{lease}-{digest}", total=len(data), expected=digest,
                                               lease=lease)
        except AlreadyExists:
            writer = None  # the namespace has it; the lease now holds it too
        if writer is not None:
            try:
                if not writer.shared:
                    await writer.write(data, 0)
                await writer.commit(len(data), digest)
            except AlreadyExists:
                pass
            except BaseException:
                with contextlib.suppress(DockyardError):
                    await asyncio.shield(writer.close())
                with contextlib.suppress(DockyardError):
                    await asyncio.shield(self.content.abort(ns, writer.ref))
                raise
        if labels:
            await self.content.update(ns, digest, labels, [f"labels.{k}" for k in labels])
        return digest

    async def _name(self, ns: str, image: records.Image) -> bool:
        """Create the record, or point an existing one at the new target; True if created."""
        try:
            await self.images.update(ns, image, ["target", *(f"labels.{k}" for k in image.labels)])
            return False
        except NotFound:
            pass
        try:
            await self.images.create(ns, image)
            return True
        except AlreadyExists:  # made meanwhile by someone else: point it here too
            await self.images.update(ns, image, ["target"])
            return False


def check_base(base: BaseImage | None, what: str) -> None:
    """InvalidArgument naming the field when the base's config holds text that is not valid
    Unicode: the new config could not be written (and build cache keys not computed)."""
    if base is None:
        return
    where = unencodable(base.config.raw)
    if where is not None:
        raise InvalidArgument(f"{what}: config field {_short(where)} is not valid Unicode text (a lone surrogate, "
                              "as a \\udXXX escape in its JSON gives)")


def check_config(base: BaseImage | None, run_config: dict[str, Any]) -> None:
    """Before any work: InvalidArgument when the config `write` would make from `base` and
    `run_config` could not be stored (too large, or text that is not valid Unicode). The
    history entries and diff IDs the steps add are small; `write` checks the exact document."""
    document = dict(base.config.raw) if base is not None else {}
    document["config"] = run_config
    _encode(document, "image config")


def unencodable(value: Any) -> str | None:
    """Where in the JSON value `value` the first string (key or value) that UTF-8 cannot encode
    is (`config.Env[2]`), or None. A stack, not recursion: the value may nest deeply."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not utf8_encodable(item):
                return path or "(the whole document)"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not utf8_encodable(key):
                    return f"{path or '(top)'} key {key!r}"
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."



def _encode(document: Any, what: str) -> bytes:
    """`document` as stored, if it is one Dockyard reads back (MAX_DOCUMENT_SIZE, valid text)."""
    try:
        data = encode(document)
    except UnicodeEncodeError:
        where = unencodable(document)
        raise InvalidArgument(f"the new {what}: field {_short(where or '')} is not valid Unicode text") from None
    if len(data) > MAX_DOCUMENT_SIZE:
        raise InvalidArgument(f"the new {what} would be {len(data)} bytes, more than the limit of {MAX_DOCUMENT_SIZE} "
                              "for a document (its labels, environment or changes are too large)")
    return data


def _as_oci(desc: Descriptor) -> Descriptor:
    media_type = _DOCKER_TO_OCI.get(desc.media_type, desc.media_type)
    if media_type == desc.media_type:
        return desc
    return Descriptor(media_type, desc.digest, desc.size, dict(desc.annotations), desc.platform, list(desc.urls))



def docker_layers(base: BaseImage | None, compression: Compression) -> bool:
    """Whether a new layer over `base` gets Docker's media type (the base is Docker schema 2 and
    the compression has a Docker media type) rather than OCI's."""
    return (base is not None and base.manifest.media_type == MEDIA_TYPE_DOCKER_MANIFEST
            and compression is not Compression.ZSTD)
