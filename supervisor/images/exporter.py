"""Export images as a tar stream: an OCI image layout, by default also readable by `docker load`.

The archive is what containerd's images/archive/exporter.go writes:

    oci-layout                      {"imageLayoutVersion":"1.0.0"}
    index.json                      one entry per image name: its target, annotated with
                                    io.containerd.image.name (the full name) and
                                    org.opencontainers.image.ref.name (the tag)
    blobs/sha256/<hex>              every blob the targets reach (sorted, each once)
    manifest.json                   format "docker" only: docker-archive's list of
                                    {Config, RepoTags, Layers} (familiar names), one per
                                    manifest, pointing into blobs/

so `ctr images import`, `docker load`, skopeo and this daemon's importer all accept it.
Platforms: an index target keeps the entries for `platform` (strictly; the host's when
unset), or all of them with `all_platforms`; the manifest a docker reader gets for an index
is the best one for the platform. Every blob is checked to be present (with its descriptor's
size) before the first byte is sent, so a missing blob is a clean NotFound, not a cut archive;
blobs are streamed from the content store in chunks and their digests checked on the way.

    async for chunk in exporter.export("default", ["docker.io/library/busybox:latest"], ExportOptions()):
        out.write(chunk)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from dockyard_common.errors import Internal, InvalidArgument, NotFound
from dockyard_common.imagespec import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    Matcher,
    default_platform,
    encode,
    is_index,
    is_manifest,
    parse_platform,
)
from dockyard_common.reference import DEFAULT_TAG, InvalidReference, Reference, familiar, parse_normalized
from supervisor.images.importer import OCI_INDEX_FILE, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION, oci_ref_name
from supervisor.images.resolve import Resolver
from supervisor.images.tarstream import END, header, padding
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.images import ImageStore

FORMATS = ("docker", "oci")
CHUNK = 1 << 20


@dataclass
class ExportOptions:
    platform: str = ""
    all_platforms: bool = False
    format: str = "docker"  # "docker": OCI layout plus manifest.json; "oci": the layout only


@dataclass
class _Record:
    path: str
    size: int = 0
    mode: int = 0o444
    data: bytes | None = None  # small files we write
    digest: str = ""  # blobs streamed from content
    directory: bool = False


@dataclass
class _DockerEntry:
    manifest: Descriptor
    names: list[str] = field(default_factory=list)


class Exporter:
    def __init__(self, content: NamespacedContentStore, image_store: ImageStore) -> None:
        self.content = content
        self.images = image_store
        self.resolver = Resolver(content)

    async def export(self, ns: str, names: list[str], opts: ExportOptions) -> AsyncGenerator[bytes, None]:
        """The archive, in chunks of at most CHUNK bytes; see the module docstring."""
        records = await self._plan(ns, names, opts)
        async for chunk in self._stream(ns, records):
            yield chunk

    async def _plan(self, ns: str, names: list[str], opts: ExportOptions) -> list[_Record]:
        if not names:
            raise InvalidArgument("export: no image names given")
        if opts.format not in FORMATS:
            raise InvalidArgument(f"export format {opts.format!r} is not one of {', '.join(FORMATS)}")
        matcher = Matcher.strict(parse_platform(opts.platform) if opts.platform else default_platform())
        targets = []
        for name in names:
            image = await self.images.get(ns, name)
            target = image.target.record()
            target.annotations.update({ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: oci_ref_name(name)})
            targets.append(target)

        blobs: dict[str, Descriptor] = {}
        docker: dict[str, _DockerEntry] = {}
        for target in targets:
            name = target.annotations[ANNOTATION_IMAGE_NAME]
            if is_manifest(target.media_type):
                await self._add_tree(ns, target, blobs)
                docker.setdefault(target.digest, _DockerEntry(target)).names.append(name)
            elif is_index(target.media_type):
                blobs.setdefault(target.digest, target)
                index = await self.resolver.index(ns, target)
                wanted = []
                for entry in index.manifests:
                    if entry.platform is None or matcher.match(entry.platform):
                        wanted.append(entry)
                    elif not opts.all_platforms:
                        continue
                    await self._add_tree(ns, entry, blobs)
                best = await self._docker_manifest(ns, wanted, matcher)
                if best is None:
                    raise NotFound(f"image {name!r}: no manifest found for platform {matcher}")
                docker.setdefault(best.digest, _DockerEntry(best)).names.append(name)
            else:
                raise InvalidArgument(f"image {name!r}: only manifests and indexes may be exported, "
                                      f"not {target.media_type!r}")
        for desc in blobs.values():
            await self._check_present(ns, desc)

        index_doc = encode({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX,
                            "manifests": [t.to_json() for t in targets]})
        layout = encode({"imageLayoutVersion": OCI_LAYOUT_VERSION})
        out = [_Record(OCI_LAYOUT_FILE, len(layout), 0o444, layout),
               _Record(OCI_INDEX_FILE, len(index_doc), 0o644, index_doc),
               _Record("blobs/", mode=0o755, directory=True),
               _Record("blobs/sha256/", mode=0o755, directory=True)]
        out += [_Record(_blob_path(d.digest), d.size, 0o444, digest=d.digest) for d in blobs.values()]
        if opts.format == "docker":
            listing = encode(await self._docker_listing(ns, list(docker.values())))
            out.append(_Record("manifest.json", len(listing), 0o644, listing))
        return sorted(out, key=lambda r: r.path)

    async def _add_tree(self, ns: str, desc: Descriptor, blobs: dict[str, Descriptor]) -> None:
        for d in await self.resolver.walk(ns, desc, Matcher.all()):
            blobs.setdefault(d.digest, d)

    async def _docker_manifest(self, ns: str, entries: list[Descriptor], matcher: Matcher) -> Descriptor | None:
        """The manifest a docker reader gets for an index: the best for the platform."""
        best = matcher.best(entries)
        if best is None or is_manifest(best.media_type):
            return best
        found = await self.resolver.manifests(ns, best, matcher)  # a nested index
        return found[0] if found else None

    async def _docker_listing(self, ns: str, entries: list[_DockerEntry]) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for entry in entries:
            manifest = await self.resolver.manifest(ns, entry.manifest)
            tags = []
            for name in entry.names:
                tag = _docker_tag(name)
                if tag and tag not in tags:
                    tags.append(tag)
            out.append({"Config": _blob_path(manifest.config.digest), "RepoTags": tags,
                        "Layers": [_blob_path(layer.digest) for layer in manifest.layers]})
        return out

    async def _check_present(self, ns: str, desc: Descriptor) -> None:
        info = await self.content.info(ns, desc.digest)  # NotFound: content digest …: not found
        if info.size != desc.size:
            raise InvalidArgument(f"{desc.media_type} {desc.digest}: stored blob has {info.size} bytes, "
                                  f"its descriptor says {desc.size}")

    async def _stream(self, ns: str, records: list[_Record]) -> AsyncIterator[bytes]:
        buf = bytearray()
        for rec in records:
            buf += header(rec.path, rec.size, mode=rec.mode, directory=rec.directory)
            if rec.data is not None:
                buf += rec.data
            elif rec.digest:
                async for piece in self._blob(ns, rec):
                    if len(buf) + len(piece) > CHUNK and buf:
                        yield bytes(buf)
                        buf.clear()
                    if len(piece) >= CHUNK:
                        yield piece
                    else:
                        buf += piece
            buf += padding(rec.size)
            if len(buf) >= CHUNK:
                yield bytes(buf)
                buf.clear()
        buf += END
        yield bytes(buf)

    async def _blob(self, ns: str, rec: _Record) -> AsyncIterator[bytes]:
        reader = await self.content.reader(ns, rec.digest)
        hasher = hashlib.sha256()
        try:
            offset = 0
            while offset < rec.size:
                data = await reader.read_at(offset, min(CHUNK, rec.size - offset))
                if not data:
                    break
                hasher.update(data)
                offset += len(data)
                yield data
        finally:
            await reader.close()
        if offset != rec.size or "sha256:" + hasher.hexdigest() != rec.digest:
            raise Internal(f"blob {rec.digest} read back wrong ({offset} of {rec.size} bytes, "
                           f"digest sha256:{hasher.hexdigest()})")


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _docker_tag(name: str) -> str:
    """The familiar `repo:tag` docker load reads ("" for a name that is no Docker reference)."""
    try:
        ref = parse_normalized(name)
    except InvalidReference:
        return ""
    if ref.digest and not ref.tag:
        return ""  # docker load takes tags only
    return familiar(Reference(ref.domain, ref.path, ref.tag or DEFAULT_TAG))
