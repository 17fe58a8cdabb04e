"""Transient registry failures are retried: a fault proxy written for these tests (an aiohttp
app on a thread, as test_registry_faults.py serves its lying registry) stands in front of a
real docker-registry and fails the first N requests matching a rule — 429 with Retry-After,
502/503/504, connections reset before answering or halfway through a body — then forwards
the rest. GET and HEAD are retried with backoff; a cut layer continues with Range; other
4xx, 500 and non-idempotent requests are not retried; persistent failures end in a clear
error naming the URL, the status and the attempts."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from dock.client import Client
from dockyard_common.errors import InvalidArgument, NotFound, Unavailable
from tests.images import OCI_MANIFEST, Image, build_image, busybox_image, oci_archive
from tests.integration.test_registry_pull import pull_events
from tests.registry import RegistryProcess, ThreadedApp, push_blobs, push_manifest, start_registry
from tests.unit.archive_fixtures import build_tar, file

pytestmark = pytest.mark.root
REPO_NAME = "retry/img"
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te",
                         "upgrade", "proxy-connection", "content-encoding"})


@dataclass
class Fault:
    """Fail the first `times` requests whose method is `method` and whose path matches `path`."""

    method: str
    path: str  # a regular expression searched in the request path
    times: int
    status: int = 0  # answer this status
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # close the connection without answering
    cut: bool = False  # forward the answer, but close the connection halfway through its body
    used: int = 0

    def takes(self, request: web.Request) -> bool:
        if request.method != self.method or not re.search(self.path, request.path) or self.used >= self.times:
            return False
        self.used += 1
        return True


@dataclass
class Seen:
    method: str
    path: str
    range: str
    at: float


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.search(path, s.path)]


def fault_proxy(proxy: FaultProxy) -> web.Application:
    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[UPSTREAM] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[UPSTREAM].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        proxy.seen.append(Seen(request.method, request.path, request.headers.get("Range", ""), time.monotonic()))
        fault = next((f for f in proxy.faults if f.takes(request)), None)
        if fault is not None and fault.reset:
            assert request.transport is not None
            request.transport.close()  # no answer at all: the client sees the connection go
            return web.Response()
        if fault is not None and fault.status:
            return web.json_response({"errors": [{"code": "UNAVAILABLE", "message": "injected"}]},
                                     status=fault.status, headers=fault.headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = request.host  # upload Locations then point at the proxy
        session = request.app[UPSTREAM]
        async with session.request(request.method, proxy.upstream + request.path_qs, headers=headers,
                                   data=await request.read(), allow_redirects=False) as up:
            body = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD":
                out["Content-Length"] = up.headers.get("Content-Length", "0")
                return web.Response(status=up.status, headers=out)
            if fault is not None and fault.cut:
                resp = web.StreamResponse(status=up.status, headers=out)
                resp.content_length = len(body)
                await resp.prepare(request)
                await resp.write(body[:len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return resp
            return web.Response(status=up.status, body=body, headers=out)

    app = web.Application(client_max_size=1 << 30)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


@pytest.fixture(scope="module")
def image() -> Image:
    payload = os.urandom(4 << 20)  # incompressible: the layer is about 4 MiB
    return build_image("x", [build_tar([file("data.bin", payload)])])


@pytest.fixture
def proxied(image: Image) -> Iterator[tuple[FaultProxy, str, RegistryProcess]]:
    with start_registry() as reg:
        push_blobs(reg.url, REPO_NAME, {d: b for d, b in image.blobs.items() if d != image.manifest_digest})
        push_manifest(reg.url, REPO_NAME, "1", image.manifest, OCI_MANIFEST)
        proxy = FaultProxy(reg.url)
        with ThreadedApp(fault_proxy(proxy)) as app:
            yield proxy, f"{app.host}/{REPO_NAME}:1", reg


def _layer(image: Image) -> str:
    import json

    return str(json.loads(image.manifest)["layers"][0]["digest"])


def _config(image: Image) -> str:
    import json

    return str(json.loads(image.manifest)["config"]["digest"])


async def test_5xx_and_resets_are_retried_with_backoff(client: Client, proxied: tuple[FaultProxy, str, RegistryProcess],
                                                       image: Image) -> None:
    proxy, ref, _ = proxied
    proxy.faults = [Fault("HEAD", "/manifests/", 2, status=503),
                    Fault("GET", "/manifests/sha256:", 1, cut=True),
                    Fault("GET", f"/blobs/{_config(image)}", 1, reset=True),
                    Fault("GET", f"/blobs/{_layer(image)}", 2, status=502),
                    Fault("GET", f"/blobs/{_layer(image)}", 1, status=504)]
    _, done = await pull_events(client, ref, unpack=False)
    assert done.target.digest == image.manifest_digest
    heads = proxy.requests("HEAD", "/manifests/")
    assert len(heads) == 3
    # backoff: 0.5 s then 1 s, each jittered to between half and all of it
    assert heads[1].at - heads[0].at >= 0.24 and heads[2].at - heads[1].at >= 0.49
    assert len(proxy.requests("GET", "/manifests/sha256:")) == 2
    assert 2 <= len(proxy.requests("GET", f"/blobs/{_config(image)}")) <= 3
    assert len(proxy.requests("GET", f"/blobs/{_layer(image)}")) == 4  # 502, 502, 504, then the blob
    assert await client.content.exists(_layer(image))


async def test_429_waits_as_long_as_retry_after_says(client: Client, proxied: tuple[FaultProxy, str, RegistryProcess],
                                                     image: Image) -> None:
    proxy, ref, _ = proxied
    proxy.faults = [Fault("HEAD", "/manifests/", 1, status=429, headers={"Retry-After": "1"})]
    _, done = await pull_events(client, ref, unpack=False)
    assert done.target.digest == image.manifest_digest
    first, second = proxy.requests("HEAD", "/manifests/")
    assert second.at - first.at >= 0.95


async def test_a_cut_layer_continues_with_range(client: Client, proxied: tuple[FaultProxy, str, RegistryProcess],
                                                image: Image) -> None:
    proxy, ref, _ = proxied
    layer = _layer(image)
    size = len(image.blobs[layer])
    proxy.faults = [Fault("GET", f"/blobs/{layer}", 1, cut=True)]
    _, done = await pull_events(client, ref, unpack=False)
    assert done.target.digest == image.manifest_digest
    first, second = proxy.requests("GET", f"/blobs/{layer}")
    assert first.range == ""
    match = re.fullmatch(r"bytes=(\d+)-", second.range)
    assert match is not None and 0 < int(match.group(1)) <= size // 2, second.range
    assert done.bytes_transferred < size + size // 8, "the first half is not fetched twice"
    assert await client.content.exists(layer) and await client.content.list_statuses() == []


async def test_persistent_failures_give_up_naming_url_status_and_attempts(
        client: Client, proxied: tuple[FaultProxy, str, RegistryProcess], image: Image) -> None:
    proxy, ref, _ = proxied
    proxy.faults = [Fault("HEAD", "/manifests/", 100, status=503)]
    started = time.monotonic()
    with pytest.raises(Unavailable, match=rf"503 Service Unavailable.* to HEAD http://{re.escape(ref.split('/')[0])}"
                                          rf"/v2/{REPO_NAME}/manifests/1 \(gave up after 4 attempts\)"):
        await pull_events(client, ref, unpack=False)
    assert len(proxy.requests("HEAD", "/manifests/")) == 4
    assert time.monotonic() - started < 10  # 0.5 + 1 + 2 s at most, jittered down

    proxy.faults = [Fault("GET", f"/blobs/{_layer(image)}", 100, reset=True)]
    proxy.seen.clear()
    with pytest.raises(Unavailable, match=rf"GET http://.*/blobs/{_layer(image)}\) \(gave up after 4 attempts\)"):
        await pull_events(client, ref, unpack=False)
    # (aiohttp itself sends an idempotent request once more when a kept-alive connection it
    # chose turns out closed, so an attempt may reach the proxy twice)
    assert 4 <= len(proxy.requests("GET", f"/blobs/{_layer(image)}")) <= 8


@pytest.mark.parametrize("status,error", [(400, InvalidArgument), (404, NotFound), (500, Unavailable)])
async def test_other_failures_are_not_retried(client: Client, proxied: tuple[FaultProxy, str, RegistryProcess],
                                              image: Image, status: int, error: type[Exception]) -> None:
    proxy, ref, _ = proxied
    proxy.faults = [Fault("GET", f"/blobs/{_layer(image)}", 100, status=status)]
    with pytest.raises(error):
        await pull_events(client, ref, unpack=False)
    assert len(proxy.requests("GET", f"/blobs/{_layer(image)}")) == 1


async def test_uploads_are_not_retried(client: Client, proxied: tuple[FaultProxy, str, RegistryProcess]) -> None:
    proxy, ref, _ = proxied
    local = "docker.io/library/busybox:latest"
    await client.transfer.import_archive(oci_archive([busybox_image(local)]))
    proxy.faults = [Fault("POST", "/blobs/uploads/", 100, status=503)]
    target = ref.replace(REPO_NAME, "retry/pushed")
    with pytest.raises(Unavailable, match="503 Service Unavailable to POST"):
        await client.registry.push(target, local=local, plain_http=True, max_concurrent_uploads=1)
    assert len(proxy.requests("POST", "/blobs/uploads/")) == 1, "one blob at a time: the first POST fails the push"
    proxy.faults = [Fault("HEAD", "/blobs/", 1, status=503)]  # a HEAD (is the blob there?) is retried
    done = await client.registry.push(target, local=local, plain_http=True)
    assert done.name == target
