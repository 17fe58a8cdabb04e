"""Registries that lie or fail, served by a small aiohttp server written for these tests:
wrong digest, wrong size, too many bytes, a truncated body (kept, then resumed with Range),
a config served as a manifest, schema 1, 500s, silence past the timeout, a redirect loop,
and a redirect to blob storage on another origin, which must not get the credentials.
Every failure is a clear error, and nothing corrupt is committed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from dock.client import Client
from dockyard_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from tests.images import OCI_CONFIG, OCI_MANIFEST, Image, build_image, sha256
from tests.integration.test_registry_pull import pull_events
from tests.registry import ThreadedApp
from tests.unit.archive_fixtures import build_tar, file

pytestmark = pytest.mark.root
CREDS = ("alice", "wonderland")
SLOW_SECONDS = 6
SCHEMA1 = json.dumps({"schemaVersion": 1, "name": "schema1/img", "tag": "latest", "architecture": "amd64",
                      "fsLayers": [], "history": []}).encode()


@dataclass
class Lies:
    """What the lying registry and its blob storage saw."""

    image: Image
    layer: str
    ranges: list[str] = field(default_factory=list)
    layer_bytes_sent: int = 0
    registry_auth: list[str] = field(default_factory=list)
    storage_auth: list[str] = field(default_factory=list)


def _layer_image() -> Image:
    payload = os.urandom(4 << 20)  # incompressible: the gzip layer is about as big
    return build_image("x", [build_tar([file("data.bin", payload)])])


def _ranged(request: web.Request, data: bytes, lies: Lies) -> web.Response:
    header = request.headers.get("Range", "")
    if header.startswith("bytes=") and header.endswith("-"):
        lies.ranges.append(header)
        start = int(header[6:-1])
        lies.layer_bytes_sent += len(data) - start
        return web.Response(status=206, body=data[start:], headers={
            "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "Content-Type": "application/octet-stream"})
    lies.layer_bytes_sent += len(data)
    return web.Response(body=data, content_type="application/octet-stream")


def lying_registry(lies: Lies, storage_url: str) -> web.Application:
    img = lies.image

    async def v2(request: web.Request) -> web.Response:
        return web.json_response({})

    def needs_auth(request: web.Request, kind: str) -> web.Response | None:
        if kind != "redirect":
            return None
        header = request.headers.get("Authorization", "")
        lies.registry_auth.append(header)
        expected = "Basic " + base64.b64encode(":".join(CREDS).encode()).decode()
        if header != expected:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "log in"}]}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="lies"'})
        return None

    async def manifests(request: web.Request) -> web.StreamResponse:
        repo, ref = request.match_info["repo"], request.match_info["ref"]
        kind = repo.split("/")[0]
        if (refused := needs_auth(request, kind)) is not None:
            return refused
        if kind == "e500":
            return web.json_response({"errors": [{"code": "UNKNOWN", "message": "database on fire"}]}, status=500)
        if kind == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if kind == "loop":
            other = ref[:-5] if ref.endswith("-loop") else ref + "-loop"
            raise web.HTTPFound(location=f"/v2/{repo}/manifests/{other}")
        if kind == "schema1":
            return web.Response(body=SCHEMA1, headers={
                "Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
        if kind == "mediatype":
            return web.Response(body=img.config, headers={"Content-Type": OCI_CONFIG,
                                                           "Docker-Content-Digest": sha256(img.config)})
        return web.Response(body=img.manifest, headers={"Content-Type": OCI_MANIFEST,
                                                         "Docker-Content-Digest": img.manifest_digest})

    async def blobs(request: web.Request) -> web.StreamResponse:
        repo, digest = request.match_info["repo"], request.match_info["digest"]
        kind = repo.split("/")[0]
        if (refused := needs_auth(request, kind)) is not None:
            return refused
        data = img.blobs.get(digest)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if digest != lies.layer:
            return web.Response(body=data, content_type="application/octet-stream")
        if kind == "digest":
            return web.Response(body=bytes(b ^ 0xFF for b in data[:16]) + data[16:],
                                content_type="application/octet-stream")
        if kind == "size":
            return web.Response(body=data + b"surprise", content_type="application/octet-stream")
        if kind in ("longer", "truncated"):
            resp = web.StreamResponse()
            if kind == "truncated":
                resp.content_length = len(data)
            else:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            body = data + b"and then some" if kind == "longer" else data[:len(data) // 2]
            await resp.write(body)
            lies.layer_bytes_sent += len(body)
            if kind == "truncated":
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-body
                return resp
            await resp.write_eof()
            return resp
        if kind == "redirect":
            raise web.HTTPTemporaryRedirect(location=f"{storage_url}/storage/{digest}")
        return _ranged(request, data, lies)

    app = web.Application()
    app.router.add_get("/v2/", v2)
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", manifests)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blobs)
    return app


def blob_storage(lies: Lies) -> web.Application:
    async def serve(request: web.Request) -> web.Response:
        lies.storage_auth.append(request.headers.get("Authorization", ""))
        return _ranged(request, lies.image.blobs[request.match_info["digest"]], lies)

    app = web.Application()
    app.router.add_get("/storage/{digest}", serve)
    return app


@pytest.fixture(scope="module")
def image() -> Image:
    return _layer_image()


@pytest.fixture
def lies(image: Image) -> Iterator[tuple[Lies, str]]:
    found = Lies(image, json.loads(image.manifest)["layers"][0]["digest"])
    with ThreadedApp(blob_storage(found)) as storage, ThreadedApp(lying_registry(found, storage.url)) as reg:
        yield found, reg.host


async def assert_nothing_stored(client: Client, lies: Lies) -> None:
    assert not await client.content.exists(lies.layer), "the bad layer must not be committed"
    assert await client.images.list() == []


@pytest.mark.parametrize("kind,error,words", [
    ("digest", FailedPrecondition, "does not match its descriptor"),
    ("size", FailedPrecondition, "announces"),
    ("longer", FailedPrecondition, "more than the"),
])
async def test_a_lying_blob_is_refused_and_discarded(client: Client, lies: tuple[Lies, str], kind: str,
                                                     error: type[Exception], words: str) -> None:
    found, host = lies
    with pytest.raises(error, match=words):
        await pull_events(client, f"{host}/{kind}/img:1")
    await assert_nothing_stored(client, found)
    assert await client.content.list_statuses() == [], "no bad prefix is kept to resume from"


async def test_a_truncated_body_is_kept_and_resumed_with_range(client: Client, lies: tuple[Lies, str]) -> None:
    found, host = lies
    size = len(found.image.blobs[found.layer])
    with pytest.raises(Unavailable, match=r"cut short|ended after"):
        await pull_events(client, f"{host}/truncated/img:1")
    await assert_nothing_stored(client, found)
    [partial] = await client.content.list_statuses()
    assert partial.ref == f"layer-{found.layer}" and 0 < partial.offset < size
    found.layer_bytes_sent = 0
    _, done = await pull_events(client, f"{host}/good/img:1")
    assert found.ranges == [f"bytes={partial.offset}-"]
    assert found.layer_bytes_sent == size - partial.offset
    assert done.bytes_transferred < size
    assert await client.content.exists(found.layer)
    assert await client.content.list_statuses() == []


@pytest.mark.parametrize("kind,error,words", [
    ("mediatype", InvalidArgument, "not an image manifest or index"),
    ("schema1", InvalidArgument, "schema 1 manifests are not supported"),
    ("e500", Unavailable, "500 Internal Server Error: UNKNOWN: database on fire"),
    ("loop", Unavailable, "redirect loop"),
])
async def test_bad_manifests_and_failing_registries(client: Client, lies: tuple[Lies, str], kind: str,
                                                    error: type[Exception], words: str) -> None:
    found, host = lies
    with pytest.raises(error, match=words):
        await pull_events(client, f"{host}/{kind}/img:1")
    await assert_nothing_stored(client, found)


async def test_a_silent_registry_times_out(client: Client, lies: tuple[Lies, str]) -> None:
    found, host = lies
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable, match="timed out"):
        await pull_events(client, f"{host}/slow/img:1", timeout=1)
    assert loop.time() - started < SLOW_SECONDS - 1
    await assert_nothing_stored(client, found)


async def test_credentials_stay_on_the_registry_across_a_redirect(client: Client, lies: tuple[Lies, str]) -> None:
    found, host = lies
    with pytest.raises(FailedPrecondition, match="requires a username and password"):
        await pull_events(client, f"{host}/redirect/img:1")
    _, done = await pull_events(client, f"{host}/redirect/img:1", username=CREDS[0], secret=CREDS[1])
    assert done.target.digest == found.image.manifest_digest
    assert any(a.startswith("Basic ") for a in found.registry_auth)
    assert found.storage_auth and all(a == "" for a in found.storage_auth), "no credentials to another origin"

