"""Import image archives from a byte stream: OCI image layouts and `docker save` archives.

What it reads (containerd's images/archive/importer.go, done on the server):

- **OCI image layout** (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), as `ctr images
  export`, skopeo or buildx write it. index.json becomes the imported index.
- **docker-archive** (`manifest.json` listing `{Config, RepoTags, Layers}`, as `docker save`
  writes it; `repositories` is ignored). Each image becomes a Docker schema 2 manifest with
  Docker media types (config `...container.image.v1+json`, layers `...rootfs.diff.tar` or
  `.tar.gzip` as their first bytes say), the platform from its config; all of them are listed
  in a new OCI index, one entry per RepoTag, named by the tag normalized the Docker way.

Every regular file in the tar is streamed into the content store as it arrives (the tar
order is free: `ctr images export` puts the blobs before index.json), hashed on the way;
nothing is held in memory but the small JSON files. A file named `blobs/sha256/<hex>` must
hash to that digest (the name is never trusted). Links: an OCI layout's blob paths must be
regular files; a docker-archive may point layer paths at other files of the archive by
symlink or hard link (`docker save` does for repeated layers), never outside it.

Then, as `ctr images import` does: the index's entries are filtered by platform (all with
`all_platforms`), every manifest and index that stays gets containerd's gc.ref labels
(`containerd.io/gc.ref.content.config`, `.l.<i>`, `.m.<i>`) and every blob they name must be
present with its size; optionally the images are unpacked; then each named entry becomes an
image record (Images.Update, and Create when that is NotFound). Names: the
`io.containerd.image.name` annotation as it is; else `org.opencontainers.image.ref.name` —
a full reference normalized the Docker way, a bare tag as `<base_name>:<tag>` (base name
default `import-<date>`, ctr's).

All of it happens under one temporary lease, deleted at the end whatever happens: a failed
import (a truncated or corrupt tar, a missing or wrong blob, a bad manifest, the client
going away) leaves no image record and nothing the garbage collector will not remove.

    async for event in importer.run("default", chunks, ImportOptions(unpack=True)):
        ...   # BlobProgress, ImageImported, LayerProgress/UnpackDone, finally ImportDone
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from dockyard_common.errors import AlreadyExists, DockyardError, InvalidArgument, NotFound
from dockyard_common.goquote import go_escape
from dockyard_common.imagespec import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    MAX_INDEX_DEPTH,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    Compression,
    Descriptor,
    Index,
    Matcher,
    check_size,
    child_gc_labels,
    encode,
    is_index,
    is_manifest,
    load_json,
    parse_index,
    sha256_digest,
)
from dockyard_common.reference import InvalidReference, normalize, parse
from supervisor.archive.compression import detect_compression
from supervisor.images.leasing import temporary_lease
from supervisor.images.resolve import Resolver
from supervisor.images.tarstream import ByteSource, Entry, TarReader, clean_name, link_target
from supervisor.images.unpack import LayerProgress, UnpackDone, Unpacker
from supervisor.metadata import images as records
from supervisor.metadata import leases
from supervisor.metadata.content import NamespacedContentStore, NamespacedWriter

OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT_VERSION = "1.0.0"
OCI_INDEX_FILE = "index.json"
DOCKER_MANIFEST_FILE = "manifest.json"
DOCKER_REPOSITORIES_FILE = "repositories"
_SPECIAL = frozenset({OCI_LAYOUT_FILE, OCI_INDEX_FILE, DOCKER_MANIFEST_FILE, DOCKER_REPOSITORIES_FILE})
JSON_LIMIT = 20 << 20  # containerd's limit for the archive's own JSON files
MAX_ENTRIES = 1_000_000
MAX_LINK_HOPS = 16
WRITE_CHUNK = 4 << 20
PROGRESS_EVERY = 8 << 20  # bytes between two progress events of one blob
_BLOB_PATH = re.compile(r"blobs/([a-z0-9]+)/([a-zA-Z0-9=_-]+)")


@dataclass
class ImportOptions:
    index_name: str = ""  # also name the whole index this (ctr's --index-name)
    base_name: str = ""  # bare OCI tag names become <base_name>:<tag> ("" = import-<date>)
    all_platforms: bool = False
    platform: str = ""  # keep (and unpack) only this platform, strictly; "" = the host's
    unpack: bool = False
    snapshotter: str = ""  # "" = the daemon's default
    digests: bool = False  # also name every manifest <base_name>@<digest> (ctr's --digests)
    labels: dict[str, str] = field(default_factory=dict)  # labels for the image records


@dataclass
class BlobProgress:
    """Bytes of one archive file stored so far; `digest` is set once it is complete."""

    path: str
    offset: int
    total: int
    digest: str = ""


@dataclass
class ImageImported:
    name: str
    target: Descriptor
    created: bool  # False: an existing image now points here


@dataclass
class ImportDone:
    format: str  # "oci" or "docker"
    index: Descriptor
    images: list[ImageImported]
    bytes_read: int


ImportEvent = BlobProgress | ImageImported | LayerProgress | UnpackDone | ImportDone


@dataclass
class _Blob:
    digest: str
    size: int


@dataclass
class _Archive:
    """What the tar held: blobs by path, links by path, the small JSON files."""

    blobs: dict[str, _Blob] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> target path
    hardlinks: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def lookup(self, path: str, what: str) -> _Blob:
        """The blob at `path`, following links inside the archive."""
        seen = 0
        current = clean_name(path, what)
        while current not in self.blobs:
            target = self.symlinks.get(current) or self.hardlinks.get(current)
            if target is None:
                raise InvalidArgument(f"{what} {path!r} is not in the archive")
            seen += 1
            if seen > MAX_LINK_HOPS:
                raise InvalidArgument(f"{what} {path!r}: too many levels of links")
            current = target
        return self.blobs[current]


class Importer:
    def __init__(self, content: NamespacedContentStore, image_store: records.ImageStore,
                 lease_store: leases.LeaseStore, unpacker: Unpacker, default_snapshotter: str,
                 on_release: Callable[[], None] = lambda: None) -> None:
        self.content = content
        self.images = image_store
        self.leases = lease_store
        self.unpacker = unpacker
        self.default_snapshotter = default_snapshotter
        self.on_release = on_release
        self.resolver = Resolver(content)

    async def run(self, ns: str, chunks: AsyncIterator[bytes],
                  opts: ImportOptions) -> AsyncGenerator[ImportEvent, None]:
        """Import the archive in `chunks`; see the module docstring. Consume it to the end
        (or close it: `contextlib.aclosing`), so the lease is always released."""
        matcher = _matcher(opts)
        snapshotter = opts.snapshotter or self.default_snapshotter
        if opts.unpack:
            self.unpacker.snapshots.backend(snapshotter)  # refuse an unknown one before reading
        async with temporary_lease(self.leases, ns, self.on_release) as lease:
            async for event in self._run(ns, chunks, opts, matcher, snapshotter, lease):
                yield event

    async def _run(self, ns: str, chunks: AsyncIterator[bytes], opts: ImportOptions, matcher: Matcher,
                   snapshotter: str, lease: str) -> AsyncIterator[ImportEvent]:
        source = ByteSource(chunks)
        archive = _Archive()
        async for event in self._read(ns, TarReader(source), archive, lease):
            yield event
        await source.drain()  # the zero blocks and record padding after the end marker

        if OCI_LAYOUT_FILE in archive.files:
            fmt = "oci"
            index_desc, index = await self._oci(ns, archive, lease)
        elif DOCKER_MANIFEST_FILE in archive.files:
            fmt = "docker"
            index_desc, index = await self._docker(ns, archive, lease)
        else:
            raise InvalidArgument("unrecognized image archive: it has neither an oci-layout file (OCI image "
                                  "layout) nor a manifest.json (docker save)")

        named = await self._label_and_name(ns, index_desc, index, matcher, opts, lease)
        if opts.unpack:
            unpack_matcher = Matcher.parse(opts.platform, strict=True) if opts.platform else Matcher.default()
            done: set[str] = set()
            for _, target in named:
                if target.digest in done:
                    continue
                done.add(target.digest)
                async for step in self.unpacker.unpack(ns, target, snapshotter, unpack_matcher, lease):
                    yield step

        imported = []
        for name, target in named:
            record = records.Image(name, target.record(), dict(opts.labels))
            try:
                await self.images.update(ns, record, ["target", *(f"labels.{k}" for k in opts.labels)])
                created = False
            except NotFound:
                try:
                    await self.images.create(ns, record)
                    created = True
                except AlreadyExists:  # made meanwhile by someone else: point it here too
                    await self.images.update(ns, record, ["target"])
                    created = False
            made = ImageImported(name, target, created)
            imported.append(made)
            yield made
        yield ImportDone(fmt, index_desc, imported, source.consumed)

    # -- reading the tar --------------------------------------------------------------------

    async def _read(self, ns: str, reader: TarReader, archive: _Archive, lease: str) -> AsyncIterator[BlobProgress]:
        count = 0
        while (entry := await reader.next()) is not None:
            count += 1
            if count > MAX_ENTRIES:
                raise InvalidArgument(f"archive has more than {MAX_ENTRIES} entries")
            if not (entry.is_symlink or entry.is_hardlink or entry.is_regular):
                continue  # directories, devices, fifos: nothing an image archive needs
            if not entry.name:
                raise InvalidArgument(f"archive entry {entry.raw_name!r}: a file or link with no name")
            # A later entry of the same name replaces an earlier one, as extracting the tar would.
            for table in (archive.blobs, archive.symlinks, archive.hardlinks, archive.files):
                table.pop(entry.name, None)
            if entry.is_symlink:
                archive.symlinks[entry.name] = link_target(entry.name, entry.linkname)
            elif entry.is_hardlink:
                archive.hardlinks[entry.name] = clean_name(entry.linkname, f"hard link {entry.name!r} target")
            elif entry.name in _SPECIAL:
                # Small and needed whole; index.json is stored as a blob once it is checked.
                archive.files[entry.name] = await reader.read_all(JSON_LIMIT)
            else:
                digest = ""
                async for progress in self._ingest(ns, reader, entry, lease, count):
                    digest = progress.digest
                    yield progress
                archive.blobs[entry.name] = _Blob(digest, entry.size)

    async def _ingest(self, ns: str, reader: TarReader, entry: Entry, lease: str,
                      n: int) -> AsyncIterator[BlobProgress]:
        """Stream one file into content, hashing it; a blob path's digest is checked against its name.

        When the namespace already has the named blob (or the store has it for another
        namespace) the bytes are only hashed, not written again.
        """
        named = _named_digest(entry.name)
        ref = f"import-{lease}-{n}"
        writer = await self._open(ns, ref, entry.size, named or "", lease)
        hasher = hashlib.sha256() if writer is None or writer.shared else None
        offset = last = pending = 0
        buffered: list[bytes] = []
        try:
            while True:
                data = await reader.read(WRITE_CHUNK)
                offset += len(data)
                if hasher is not None:
                    hasher.update(data)
                elif data:
                    buffered.append(data)
                    pending += len(data)
                if writer is not None and buffered and (pending >= WRITE_CHUNK or not data):
                    block = buffered[0] if len(buffered) == 1 else b"".join(buffered)
                    await writer.write(block, offset - pending)
                    buffered, pending = [], 0
                if not data:
                    break
                if offset - last >= PROGRESS_EVERY:
                    last = offset
                    yield BlobProgress(entry.name, offset, entry.size)
            digest = "sha256:" + hasher.hexdigest() if hasher is not None else writer.digest()  # type: ignore[union-attr]
            if named and digest != named:
                raise InvalidArgument(f"archive entry {entry.name!r}: its content has digest {digest}, "
                                      "not the one its name says")
            if writer is not None:
                w, writer = writer, None
                try:
                    await w.commit(entry.size, digest)
                except AlreadyExists:
                    pass  # recorded meanwhile; our lease holds it all the same
        except BaseException:
            if writer is not None:
                await asyncio.shield(self._abort(ns, writer, ref))
            raise
        yield BlobProgress(entry.name, offset, entry.size, digest)

    async def _open(self, ns: str, ref: str, size: int, expected: str, lease: str) -> NamespacedWriter | None:
        """A writer for our own ref, or None when the namespace has `expected` already (it is
        then held by our lease). Cancelled halfway, the ingest it made is removed again: a
        lease-less ingest would otherwise outlive the import by a day."""
        opening = asyncio.ensure_future(self.content.writer(ns, ref, total=size, expected=expected, lease=lease))
        try:
            return await asyncio.shield(opening)
        except AlreadyExists:
            return None
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_open(ns, ref, opening))
            raise

    async def _undo_open(self, ns: str, ref: str, opening: asyncio.Future[NamespacedWriter]) -> None:
        try:
            writer = await opening
        except BaseException:  # it failed on its own: nothing to close
            writer = None
        if writer is not None:
            await self._abort(ns, writer, ref)
        else:
            with contextlib.suppress(DockyardError):
                await self.content.abort(ns, ref)

    async def _abort(self, ns: str, writer: NamespacedWriter, ref: str) -> None:
        with contextlib.suppress(DockyardError):
            await writer.close()
        with contextlib.suppress(DockyardError):
            await self.content.abort(ns, ref)

    async def _put(self, ns: str, data: bytes, lease: str, what: str) -> str:
        """Store a small blob we made (a manifest, an index) under the lease."""
        digest = sha256_digest(data)
        writer = await self._open(ns, f"import-{lease}-{what}-{digest}", len(data), digest, lease)
        if writer is None:
            return digest
        try:
            if not writer.shared:
                await writer.write(data, 0)
            await writer.commit(len(data), digest)
        except AlreadyExists:
            pass
        except BaseException:
            await asyncio.shield(self._abort(ns, writer, writer.ref))
            raise
        return digest

    # -- the two formats ----------------------------------------------------------------------

    async def _oci(self, ns: str, archive: _Archive, lease: str) -> tuple[Descriptor, Index]:
        layout = load_json(archive.files[OCI_LAYOUT_FILE], OCI_LAYOUT_FILE)
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if version != OCI_LAYOUT_VERSION:
            raise InvalidArgument(f"{OCI_LAYOUT_FILE}: unsupported OCI image layout version {version!r} "
                                  f"(want {OCI_LAYOUT_VERSION!r})")
        for path in [*archive.symlinks, *archive.hardlinks]:
            if path.startswith("blobs/") or path == OCI_INDEX_FILE:
                raise InvalidArgument(f"archive entry {path!r}: blob paths of an OCI layout must be regular "
                                      "files, not links")
        data = archive.files.get(OCI_INDEX_FILE)
        if data is None:
            raise InvalidArgument(f"OCI image layout without {OCI_INDEX_FILE}")
        index = parse_index(data, "", OCI_INDEX_FILE)
        digest = await self._put(ns, data, lease, "index")
        return Descriptor(index.media_type, digest, len(data)), index

    async def _docker(self, ns: str, archive: _Archive, lease: str) -> tuple[Descriptor, Index]:
        listed = load_json(archive.files[DOCKER_MANIFEST_FILE], DOCKER_MANIFEST_FILE)
        if not isinstance(listed, list) or not listed:
            raise InvalidArgument(f"{DOCKER_MANIFEST_FILE}: expected a non-empty array of images")
        entries: list[Descriptor] = []
        for i, item in enumerate(listed):
            where = f"{DOCKER_MANIFEST_FILE} image {i}"
            desc = await self._docker_manifest(ns, archive, item, where, lease)
            tags = item.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise InvalidArgument(f"{where}: RepoTags must be an array of strings")
            if not tags:
                entries.append(desc)
            for tag in tags:
                try:
                    name = normalize(tag)
                except InvalidReference as exc:
                    raise InvalidArgument(f"{where}: RepoTag {tag[:100]!r}{'...' if len(tag) > 100 else ''}: "
                                          f"{exc.reason}") from None
                entries.append(Descriptor(desc.media_type, desc.digest, desc.size,
                                          {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: oci_ref_name(name)},
                                          desc.platform))
        index = Index(MEDIA_TYPE_OCI_INDEX, entries)
        data = encode({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX,
                       "manifests": [d.to_json() for d in entries]})
        digest = await self._put(ns, data, lease, "index")
        return Descriptor(MEDIA_TYPE_OCI_INDEX, digest, len(data)), index

    async def _docker_manifest(self, ns: str, archive: _Archive, item: Any, where: str, lease: str) -> Descriptor:
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where}: expected an object with Config, RepoTags and Layers")
        config_path = item.get("Config")
        if not isinstance(config_path, str) or not config_path:
            raise InvalidArgument(f"{where}: missing field 'Config'")
        layer_paths = item.get("Layers")
        if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
            raise InvalidArgument(f"{where}: field 'Layers' must be an array of paths")
        blob = archive.lookup(config_path, f"{where}: config")
        config_desc = Descriptor(MEDIA_TYPE_DOCKER_CONFIG, blob.digest, check_size(blob.size, where))
        config = await self.resolver.config(ns, config_desc)
        if len(layer_paths) != len(config.diff_ids):
            raise InvalidArgument(f"{where}: {len(layer_paths)} layers but its config lists "
                                  f"{len(config.diff_ids)} diff IDs")
        layers = []
        for i, path in enumerate(layer_paths):
            blob = archive.lookup(path, f"{where}: layer")
            media_type = await self._layer_media_type(ns, blob)
            if media_type == MEDIA_TYPE_DOCKER_LAYER and blob.digest != config.diff_ids[i]:
                raise InvalidArgument(f"{where}: layer {path!r} has digest {blob.digest} but the config's "
                                      f"diff ID {i} is {config.diff_ids[i]}")
            layers.append(Descriptor(media_type, blob.digest, blob.size))
        manifest = encode({"schemaVersion": 2, "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                           "config": config_desc.to_json(), "layers": [d.to_json() for d in layers]})
        digest = await self._put(ns, manifest, lease, "manifest")
        return Descriptor(MEDIA_TYPE_DOCKER_MANIFEST, digest, len(manifest), platform=config.platform)

    async def _layer_media_type(self, ns: str, blob: _Blob) -> str:
        """Docker's layer media types by what the bytes are (containerd's detectLayerMediaType)."""
        if blob.size == 0:
            return MEDIA_TYPE_DOCKER_LAYER
        reader = await self.content.reader(ns, blob.digest)
        try:
            head = await reader.read_at(0, 10)
        finally:
            await reader.close()
        found = detect_compression(head)
        if found is Compression.GZIP:
            return MEDIA_TYPE_DOCKER_LAYER_GZIP
        if found is Compression.ZSTD:
            return MEDIA_TYPE_OCI_LAYER_ZSTD  # Docker has no zstd layer type
        return MEDIA_TYPE_DOCKER_LAYER

    # -- labels and names ---------------------------------------------------------------------

    async def _label_and_name(self, ns: str, index_desc: Descriptor, index: Index, matcher: Matcher,
                              opts: ImportOptions, lease: str) -> list[tuple[str, Descriptor]]:
        kept = [m for m in index.manifests if m.platform is None or matcher.match(m.platform)]
        if not kept:
            # the archive's own words: escaped as Go's %q escapes, so they reach a terminal as text
            offered = sorted({go_escape(str(m.platform)) for m in index.manifests if m.platform is not None})
            raise NotFound(f"no image in the archive matches platform {matcher} (it has {', '.join(offered)}; "
                           "choose one with platform, or import all platforms)")
        await self._set_labels(ns, index_desc.digest, child_gc_labels(kept))
        for child in kept:
            await self._check_tree(ns, child, matcher, [index_desc.digest], lease)

        named: list[tuple[str, Descriptor]] = []
        if opts.index_name:
            named.append((opts.index_name, index_desc))
        base = opts.base_name or f"import-{time.strftime('%Y-%m-%d')}"
        for child in kept:
            name = image_name(child.annotations, base)
            if name:
                named.append((name, child))
            if opts.digests:
                named.append((f"{base}@{child.digest}", child))
        unique = dict(named)  # one record per name; a later entry of the same name wins, as in ctr
        for name, target in unique.items():
            records.validate(records.Image(name, target.record(), dict(opts.labels)))
        return list(unique.items())

    async def _check_tree(self, ns: str, desc: Descriptor, matcher: Matcher, path: list[str],
                          lease: str) -> None:
        """Every blob under `desc` is present with its size; manifests and indexes get gc labels."""
        await self._present(ns, desc, "manifest" if is_manifest(desc.media_type) else "index", lease)
        if is_manifest(desc.media_type):
            manifest = await self.resolver.manifest(ns, desc)
            await self._present(ns, manifest.config, "image config", lease)
            config = await self.resolver.config(ns, manifest.config)
            if len(config.diff_ids) != len(manifest.layers):
                raise InvalidArgument(f"manifest {desc.digest}: {len(manifest.layers)} layers but its config "
                                      f"lists {len(config.diff_ids)} diff IDs")
            for i, layer in enumerate(manifest.layers):
                await self._present(ns, layer, f"layer {i} of manifest {desc.digest}", lease)
            await self._set_labels(ns, desc.digest, child_gc_labels([manifest.config, *manifest.layers]))
            return
        if not is_index(desc.media_type):
            raise InvalidArgument(f"{desc.digest}: media type {desc.media_type!r} is not an image manifest or index")
        if desc.digest in path:
            raise InvalidArgument(f"index {desc.digest} refers to itself")
        if len(path) >= MAX_INDEX_DEPTH:
            raise InvalidArgument(f"index {desc.digest}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        nested = await self.resolver.index(ns, desc)
        kept = [m for m in nested.manifests if m.platform is None or matcher.match(m.platform)]
        await self._set_labels(ns, desc.digest, child_gc_labels(kept))
        for child in kept:
            await self._check_tree(ns, child, matcher, [*path, desc.digest], lease)

    async def _present(self, ns: str, desc: Descriptor, what: str, lease: str) -> None:
        """The blob is here with its size, and held by our lease (it may predate the import,
        unreferenced, and must not be collected before the image refers to it)."""
        try:
            await self.leases.add_resource(ns, lease, leases.Resource(desc.digest, leases.CONTENT))
            info = await self.content.info(ns, desc.digest)
        except NotFound:
            raise InvalidArgument(f"{what} {desc.digest} is missing from the archive") from None
        if info.size != desc.size:
            raise InvalidArgument(f"{what} {desc.digest}: the archive's blob has {info.size} bytes, "
                                  f"its descriptor says {desc.size}")

    async def _set_labels(self, ns: str, digest: str, labels: dict[str, str]) -> None:
        if labels:
            await self.content.update(ns, digest, labels, [f"labels.{k}" for k in labels])


def _matcher(opts: ImportOptions) -> Matcher:
    if opts.all_platforms:
        return Matcher.all()
    return Matcher.parse(opts.platform, strict=True) if opts.platform else Matcher.default()


def _named_digest(path: str) -> str | None:
    """The digest an OCI layout path `blobs/<alg>/<encoded>` claims, if it is one."""
    m = _BLOB_PATH.fullmatch(path)
    if m is None:
        return None
    algorithm, encoded = m.groups()
    if algorithm != "sha256":
        raise InvalidArgument(f"archive entry {path!r}: digest algorithm {algorithm!r} is not supported "
                              "(only sha256)")
    if not re.fullmatch(r"[a-f0-9]{64}", encoded):
        raise InvalidArgument(f"archive entry {path!r}: not a valid sha256 blob name")
    return f"sha256:{encoded}"


def oci_ref_name(name: str) -> str:
    """What OCI's ref.name annotation holds for a full name: the tag (or `@digest`)."""
    try:
        ref = parse(name)
    except InvalidReference:
        return name
    return ref.tag or (f"@{ref.digest}" if ref.digest else name)


def image_name(annotations: dict[str, str], base: str) -> str:
    """The name an index entry is imported under ("" for none); see the module docstring."""
    name = annotations.get(ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    ref = annotations.get(ANNOTATION_REF_NAME, "")
    if not ref:
        return ""
    if not any(c in ref for c in "/:@"):
        return f"{base}:{ref}"
    try:
        return normalize(ref)
    except InvalidReference:
        return ref
