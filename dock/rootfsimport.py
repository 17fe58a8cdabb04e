"""Docker's `import`: a root filesystem tarball made into a one-layer image.

The daemon already makes one-layer images of a root filesystem: Builder/Commit of a container
whose snapshot has no parent ("from scratch": supervisor/build/commit.py), which writes the
layer with containerd's bytes, applies Docker's `--change` instructions to the config and writes
config, manifest and image record. So an import is containerd's primitives around that call,
all under one temporary lease:

    1. Content/Write   the tarball as it came (tar, gzip or zstd; bzip2 and xz are decompressed
                       here first, as Docker reads those too)
    2. Snapshots/Prepare  an empty active snapshot; Diff/Apply the tarball onto it (a file
                       that is not a tar fails here, before any record exists)
    3. Containers/Create  a container record over that snapshot (label `IMPORT_LABEL`, no task,
                       never started), Builder/Commit of it, then the record goes again
    4. the lease goes: the tarball blob and the snapshot are the collector's

Without a name the image is stored as Docker's untagged images are here, `dockyard-dangling@<digest>`.

    result = await import_rootfs(client, "rootfs.tar", "app:1", changes=['CMD ["sh"]'])
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import lzma
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from typing import IO, Any

from dock.client import Client
from dock.containers import RUNC_V2, oci_spec_any
from dock.images import CommitResult
from dock.runner import default_snapshotter
from dockyard_common.errors import AlreadyExists, DockyardError, InvalidArgument, error_text
from dockyard_common.imagespec import (
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    Descriptor,
)
from dockyard_common.reference import dangling_name, normalize, parse
from dockyard_common.types import Container

IMPORT_LABEL = "dockyard.import"  # on the short-lived container record an import commits
CHUNK = 1 << 20
URL_SCHEMES = ("http://", "https://")
# The first bytes of each compression Docker's import reads: the layer's media type, or a
# decompressor run here (the daemon applies tar, gzip and zstd layers itself).
_GZIP, _ZSTD, _BZIP2, _XZ = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00"


def image_ref(ref: str) -> str:
    """`ref` as the image name it will be (normalized), refused before anything is sent."""
    name = normalize(ref)
    if parse(name).digest:
        raise InvalidArgument(f"import: reference {ref!r} has a digest; name the image with a tag")
    return name


def source_label(source: str) -> str:
    """What Docker's history comment names: "-" for a file or stdin (the client sends either as
    the request's body), the URL for a URL."""
    return source if source.startswith(URL_SCHEMES) else "-"


def _open(source: str) -> IO[bytes]:
    if source == "-":
        return sys.stdin.buffer
    if source.startswith(URL_SCHEMES):
        try:
            return urllib.request.urlopen(source, timeout=60)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            raise InvalidArgument(f"import: {source}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InvalidArgument(f"import: {source}: {getattr(reason, 'strerror', None) or reason}") from None
    return open(source, "rb")


async def _stream(f: IO[bytes]) -> tuple[str, AsyncIterator[bytes]]:
    """The layer media type of what `f` holds, and its bytes (decompressed when the daemon could
    not apply them as they are). InvalidArgument for an empty input."""
    head = await asyncio.to_thread(f.read, CHUNK)
    if not head:
        raise InvalidArgument("import: the input is empty (want a tar archive of a root filesystem)")
    decompress: Callable[[bytes], bytes] | None = None
    media_type = MEDIA_TYPE_DOCKER_LAYER
    if head.startswith(_GZIP):
        media_type = MEDIA_TYPE_DOCKER_LAYER_GZIP
    elif head.startswith(_ZSTD):
        media_type = MEDIA_TYPE_OCI_LAYER_ZSTD
    elif head.startswith(_BZIP2):
        decompress = bz2.BZ2Decompressor().decompress
    elif head.startswith(_XZ):
        decompress = lzma.LZMADecompressor().decompress

    async def chunks() -> AsyncIterator[bytes]:
        data = head
        while data:
            if decompress is not None:
                try:
                    data = decompress(data)
                except (OSError, EOFError, lzma.LZMAError) as exc:
                    raise InvalidArgument(f"import: the input could not be decompressed: {error_text(exc)}") from None
            if data:
                yield data
            data = await asyncio.to_thread(f.read, CHUNK)

    return media_type, chunks()


async def import_rootfs(client: Client, source: str, ref: str = "", *, changes: Sequence[str] = (),
                        message: str = "", snapshotter: str = "") -> CommitResult:
    """Import the tarball at `source` (a path, "-" for stdin, or an http(s) URL) as the image
    `ref` (normalized; "" for an untagged one); see the module docstring."""
    name = image_ref(ref) if ref else ""
    message = message or f"Imported from {source_label(source)}"
    f = await asyncio.to_thread(_open, source)
    try:
        async with client.leased():
            media_type, chunks = await _stream(f)
            token = secrets.token_hex(8)
            blob = await client.content.write(f"import-{token}", chunks)
            layer = Descriptor(media_type, blob.digest, blob.size)
            snapshotter = snapshotter or await default_snapshotter(client)
            return await _commit(client, layer, snapshotter, f"dockyard-import-{token}", name, changes, message)
    finally:
        if f is not sys.stdin.buffer:
            await asyncio.to_thread(f.close)


async def _commit(client: Client, layer: Descriptor, snapshotter: str, key: str, name: str,
                  changes: Sequence[str], message: str) -> CommitResult:
    snaps = client.snapshots.using(snapshotter, lease=client.lease)
    mounts = await snaps.prepare(key)
    try:
        try:
            await client.diff.apply(layer, mounts)
        except InvalidArgument as exc:
            raise InvalidArgument(f"import: not a tar archive of a root filesystem ({exc.message})") from None
        record = Container(id=key, runtime_name=RUNC_V2, spec=oci_spec_any({"ociVersion": "1.0.2"}),
                           labels={IMPORT_LABEL: "true"}, snapshotter=snapshotter, snapshot_key=key)
        await client.containers.create(record)
        try:
            result = await client.images.commit(key, name or f"{key}:latest", pause=False, changes=list(changes),
                                                message=message)
        finally:
            await _quietly(client.containers.delete(key))
    finally:
        await _quietly(snaps.remove(key))
    if not name:  # untagged: named by the manifest, as an untagged build is
        untagged = dangling_name(result.target.digest)
        try:
            with contextlib.suppress(AlreadyExists):  # the same image imported untagged before
                await client.images.create(untagged, result.target)
        finally:
            await _quietly(client.images.delete(result.name))
        result.name = untagged
    return result


async def _quietly(call: Any) -> None:
    """Cleanup that must not hide the error that made it run (what it misses, the lease frees)."""
    with contextlib.suppress(DockyardError):
        await call
