"""An interrupted pull resumes: dockyardd is killed (SIGKILL) in the middle of a large layer
coming from a real docker-registry, restarted on the same root, and the next pull asks the
registry only for the rest (HTTP Range). A proxy in front of the registry holds the layer
part-way until the daemon is killed (throttling alone was not enough: on a loaded machine the
whole layer reached the disk before the test's kill, and the next pull had nothing to resume),
and counts the bytes it forwards."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from dock.registry import BlobProgress, TransferDone
from tests.daemon import remove_base, start_daemon
from tests.images import Image, build_image
from tests.integration.test_registry_pull import publish
from tests.registry import RegistryProcess, ThreadedApp, start_registry
from tests.unit.archive_fixtures import build_tar, file

pytestmark = pytest.mark.root
LAYER_MIB = 24
PASS_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Docker-Content-Digest", "Location",
                "WWW-Authenticate")


@dataclass
class Proxy:
    upstream: str
    delay: float = 0.0  # seconds per 64 KiB forwarded (0: full speed)
    ranges: list[str] = field(default_factory=list)
    blob_bytes: int = 0
    hold_at: int = 0  # blob bytes after which nothing more is sent until `released` (0: never)
    released: threading.Event = field(default_factory=threading.Event)

    def app(self) -> web.Application:
        app = web.Application()
        sessions: list[aiohttp.ClientSession] = []

        async def start(_: web.Application) -> None:
            sessions.append(aiohttp.ClientSession(auto_decompress=False))

        async def stop(_: web.Application) -> None:
            await sessions[0].close()

        async def forward(request: web.Request) -> web.StreamResponse:
            headers = {k: v for k, v in request.headers.items() if k in ("Range", "Accept", "Authorization")}
            if "Range" in headers:
                self.ranges.append(headers["Range"])
            async with sessions[0].request(request.method, self.upstream + request.path_qs, headers=headers,
                                           allow_redirects=False) as up:
                resp = web.StreamResponse(status=up.status,
                                          headers={k: v for k, v in up.headers.items() if k in PASS_HEADERS})
                await resp.prepare(request)
                if request.method != "HEAD":
                    async for chunk in up.content.iter_chunked(64 * 1024):
                        while self.hold_at and self.blob_bytes >= self.hold_at and not self.released.is_set():
                            await asyncio.sleep(0.01)  # the proxy's own thread, polling the test's flag
                        await resp.write(chunk)
                        if "/blobs/" in request.path:
                            self.blob_bytes += len(chunk)
                        if self.delay:
                            await asyncio.sleep(self.delay)
                await resp.write_eof()
                return resp

        app.on_startup.append(start)
        app.on_cleanup.append(stop)
        app.router.add_route("*", "/{path:.*}", forward)
        return app


@pytest.fixture(scope="module")
def big() -> Image:
    return build_image("x", [build_tar([file("big.bin", os.urandom(LAYER_MIB << 20))])])


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


async def test_pull_resumes_after_the_daemon_is_killed_mid_layer(registry: RegistryProcess, big: Image) -> None:
    publish(registry, "big/image", "1", big)
    layer = big.layers[0]
    proxy = Proxy(registry.url, delay=0.004, hold_at=8 << 20)
    daemon = start_daemon()
    try:
        with ThreadedApp(proxy.app()) as server:
            ref = f"{server.host}/big/image:1"
            killed_at = 0
            async with daemon.client() as client:
                async for ev in client.registry.pull_stream(ref, plain_http=True):
                    if isinstance(ev, BlobProgress) and ev.ref.startswith("layer-") and ev.offset >= 4 << 20:
                        killed_at = ev.offset
                        daemon.proc.send_signal(signal.SIGKILL)
                        daemon.proc.wait()
                        break
            assert 0 < killed_at < len(layer), "the daemon died mid-layer"

            proxy.released.set()  # the killed daemon's stream may end now
            daemon = start_daemon(base=daemon.base)
            proxy.delay, proxy.blob_bytes, proxy.hold_at = 0.0, 0, 0
            async with daemon.client() as client:
                [partial] = await client.content.list_statuses()
                assert partial.offset >= killed_at, "what reached the disk before the kill is still there"
                events = [e async for e in client.registry.pull_stream(ref, plain_http=True)]
                done = events[-1]
                assert isinstance(done, TransferDone)
                resumed = [e for e in events if isinstance(e, BlobProgress) and e.state == "resuming"]
                assert resumed and resumed[0].offset == partial.offset
                assert proxy.ranges == [f"bytes={partial.offset}-"]
                assert proxy.blob_bytes == len(layer) - partial.offset, "only the rest came over the network"
                assert done.bytes_transferred < len(layer)
                assert done.chain_id, "and it unpacked"
                assert await client.content.list_statuses() == []
                data = await client.content.read_all(done.target.digest)
                assert data == big.manifest
    finally:
        remove_base(daemon)
