"""Resolve a reference to a descriptor, and fetch manifests and indexes, verified.

    desc = await resolve(endpoints, ref)        # HEAD (or GET) /v2/<repo>/manifests/<tag|digest>
    data = await fetch_document(ep, desc)        # bytes whose sha256 and size match desc

The Accept header names the OCI and Docker schema 2 manifests and indexes (then */*, as
containerd sends, so a registry that only has a schema 1 manifest says so and we can refuse
it by name). A HEAD that does not give the digest falls back to GET, whose body is hashed.
What comes back must be a manifest or an index: a schema 1 manifest is refused with
`SCHEMA1_MESSAGE`, any other media type (a config, HTML from a proxy) with InvalidArgument.
A body must be JSON Python reads (`checked_json`: not a number of 5 000 digits, say), and a
`Docker-Content-Digest` must be a valid digest that the body hashes to, whatever its algorithm.
"""

from __future__ import annotations

import hashlib

from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    SCHEMA1_MESSAGE,
    SCHEMA1_TYPES,
    Descriptor,
    check_digest,
    document_kind,
    is_index,
    is_manifest,
)
from dockyard_common.jsonutil import json_value
from dockyard_common.reference import Reference
from supervisor.remote.client import Endpoint, read_limited, status_error
from supervisor.remote.retry import with_retries

# containerd's MaxManifestSize (remotes/docker/resolver.go), its arithmetic included: a manifest or
# index from a registry is read whole and parsed into objects about ten times its size (8 MiB of
# tiny annotations took 140 MB), so we take no more than ctr would.
MAX_MANIFEST_SIZE = 4 * 1048 * 1048

MANIFEST_ACCEPT = ", ".join([MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_OCI_MANIFEST,
                             MEDIA_TYPE_OCI_INDEX, "*/*"])


_UNTYPED = frozenset({"", "application/json", "application/octet-stream", "text/plain"})


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip()


def checked_json(data: bytes, what: str) -> bytes:
    """`data` if it is JSON under the daemon's one policy for untrusted JSON (`jsonutil`, Go's:
    no NaN/Infinity, no number past a float64, nesting bounded, UTF-8); else InvalidArgument
    naming `what`. Every document a registry sends passes here before anything else reads it,
    so nothing later meets what Python's parser refuses as an internal error."""
    json_value(data, what, InvalidArgument)
    return data


def digest_of(data: bytes, like: str) -> str:
    """The digest of `data` in the algorithm of the digest `like` (sha256, sha384 or sha512)."""
    algorithm = like.partition(":")[0]
    if algorithm not in ("sha256", "sha384", "sha512"):
        algorithm = "sha256"
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_manifest_type(media_type: str, data: bytes | None, what: str) -> str:
    """The document's media type, refusing schema 1 and anything that is not a manifest or index."""
    if media_type in SCHEMA1_TYPES:
        raise InvalidArgument(f"{what}: {SCHEMA1_MESSAGE}")
    if is_manifest(media_type) or is_index(media_type):
        return media_type
    if data is not None and media_type in _UNTYPED:
        # Some registries serve OCI documents untyped: the document itself may tell.
        kind = document_kind(data, "", what)
        return MEDIA_TYPE_OCI_INDEX if kind == "index" else MEDIA_TYPE_OCI_MANIFEST
    raise InvalidArgument(f"{what}: the registry served media type {media_type!r}, which is not an image "
                          "manifest or index")


async def _head(ep: Endpoint, target: str, what: str) -> Descriptor | None:
    async with ep.session.request("HEAD", ep.host, f"/{ep.repository}/manifests/{target}", what=what,
                                  scopes=ep.scopes, headers={"Accept": MANIFEST_ACCEPT}) as resp:
        if resp.status == 404:
            raise await status_error(resp, what, ep.host)
        if resp.status != 200:
            return None  # e.g. 405: some registries only answer GET
        digest = resp.headers.get("Docker-Content-Digest", "")
        length = resp.headers.get("Content-Length", "")
        media_type = _media_type(resp.headers.get("Content-Type", ""))
        if not digest or not length.isdigit() or media_type in _UNTYPED:
            return None  # GET, and let the document tell
        if int(length) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"{what}: manifest of {length} bytes is larger than the limit of "
                                  f"{MAX_MANIFEST_SIZE}")
        check_digest(digest, f"{what}: Docker-Content-Digest")
        media_type = check_manifest_type(media_type, None, what)
        return Descriptor(media_type, digest, int(length))


async def _get(ep: Endpoint, target: str, what: str, expected: str = "") -> tuple[Descriptor, bytes]:
    async with ep.session.request("GET", ep.host, f"/{ep.repository}/manifests/{target}", what=what,
                                  scopes=ep.scopes, headers={"Accept": MANIFEST_ACCEPT}) as resp:
        if resp.status != 200:
            raise await status_error(resp, what, ep.host)
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"{what}: manifest of {length} bytes is larger than the limit of "
                                  f"{MAX_MANIFEST_SIZE}")
        data = await read_limited(resp, MAX_MANIFEST_SIZE, what, ep.session.timeouts.read)
        if len(data) > MAX_MANIFEST_SIZE:
            raise InvalidArgument(f"{what}: manifest larger than the limit of {MAX_MANIFEST_SIZE} bytes")
        if length.isdigit() and len(data) != int(length):
            raise FailedPrecondition(f"{what}: the registry sent {len(data)} of {length} bytes")
        ep.session.transferred.received += len(data)
        header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
        if header_digest:
            check_digest(header_digest, f"{what}: Docker-Content-Digest")
        checked_json(data, f"{what}: the document")
        media_type = check_manifest_type(_media_type(resp.headers.get("Content-Type", "")), data, what)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if expected and digest_of(data, expected) != expected:
        raise FailedPrecondition(f"{what}: the registry sent content with digest {digest_of(data, expected)}, "
                                 f"not {expected}")
    if expected:
        digest = expected
    if header_digest and digest_of(data, header_digest) != header_digest:
        raise FailedPrecondition(f"{what}: the registry says the manifest is {header_digest} but it hashes to "
                                 f"{digest_of(data, header_digest)}")
    return Descriptor(media_type, digest, len(data)), data


async def _get_again(ep: Endpoint, target: str, what: str, expected: str = "") -> tuple[Descriptor, bytes]:
    """`_get`, sent again when the body is cut short (statuses are retried by the session)."""
    return await with_retries(ep.session.retry, lambda _: _get(ep, target, what, expected))


async def resolve(endpoints: list[Endpoint], ref: Reference) -> tuple[Endpoint, Descriptor]:
    """The descriptor `ref` names, from the first endpoint that knows it (mirrors first)."""
    what = f"resolve {ref}"
    target = ref.digest or ref.tag or "latest"
    last: DockyardError | None = None
    for ep in endpoints:
        try:
            desc = await _head(ep, target, what)
            if desc is None:  # (a body cut short is fetched again, like any transient failure)
                desc, _ = await _get_again(ep, target, what, ref.digest)
        except DockyardError as exc:
            if len(endpoints) > 1 and not isinstance(exc, InvalidArgument):
                last = exc  # the next mirror (or the server) may have it
                continue
            raise
        if ref.digest and desc.digest != ref.digest:
            raise FailedPrecondition(f"{what}: the registry answered with {desc.digest}")
        return ep, desc
    assert last is not None
    if isinstance(last, NotFound):
        raise NotFound(f"{what}: not found on any of {', '.join(str(e.host) for e in endpoints)}")
    raise last


async def fetch_document(ep: Endpoint, desc: Descriptor) -> bytes:
    """A manifest or index by digest, checked against the descriptor's size and digest."""
    what = f"fetch {desc.media_type} {desc.digest}"
    if desc.size > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{what}: size {desc.size} is larger than the limit of {MAX_MANIFEST_SIZE}")
    got, data = await _get_again(ep, desc.digest, what, desc.digest)
    if got.size != desc.size:
        raise FailedPrecondition(f"{what}: the registry sent {got.size} bytes, the descriptor says {desc.size}")
    if got.media_type != desc.media_type and not (is_index(got.media_type) and is_index(desc.media_type)) \
            and not (is_manifest(got.media_type) and is_manifest(desc.media_type)):
        raise InvalidArgument(f"{what}: the registry served it as {got.media_type!r}")
    return data
