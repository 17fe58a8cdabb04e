"""Pull pipelining: layer 0 is unpacked while layer 1 is still downloading, and a layer that
fails to download stops the pull with its error and leaves no image (nothing unverified is
ever applied). A small aiohttp registry holds layer 1's response until the test opens a gate."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from dock.client import Client
from dock.transfer import LayerProgress
from dockyard_common.errors import NotFound
from tests.images import OCI_MANIFEST, Image, build_image
from tests.registry import ThreadedApp
from tests.unit.archive_fixtures import build_tar, file

pytestmark = pytest.mark.root
GATE_SECONDS = 20  # without pipelining the pull would wait this long, then fail the test


class Gate:
    def __init__(self) -> None:
        self.opened = threading.Event()
        self.fail = False  # answer the held layer with 404 once opened
        self.timed_out = False  # the held layer went out because nobody opened the gate


def gated_registry(img: Image, held: str, gate: Gate) -> web.Application:
    async def v2(request: web.Request) -> web.Response:
        return web.json_response({})

    async def manifests(request: web.Request) -> web.Response:
        return web.Response(body=img.manifest, headers={"Content-Type": OCI_MANIFEST,
                                                         "Docker-Content-Digest": img.manifest_digest})

    async def blobs(request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        data = img.blobs.get(digest)
        if digest == held:
            if not await asyncio.get_running_loop().run_in_executor(None, gate.opened.wait, GATE_SECONDS):
                gate.timed_out = True
            if gate.fail:
                data = None
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/v2/", v2)
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", manifests)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blobs)
    return app


@pytest.fixture(scope="module")
def image() -> Image:
    return build_image("x", [build_tar([file("bottom", b"0" * 5000)]), build_tar([file("top", b"1" * 5000)])])


@pytest.fixture
def served(image: Image) -> Iterator[tuple[str, Gate]]:
    gate = Gate()
    top = json.loads(image.manifest)["layers"][1]["digest"]
    with ThreadedApp(gated_registry(image, top, gate)) as reg:
        try:
            yield reg.host, gate
        finally:
            gate.opened.set()  # never leave a handler waiting


async def test_the_bottom_layer_is_unpacked_while_the_top_one_downloads(client: Client,
                                                                         served: tuple[str, Gate]) -> None:
    host, gate = served
    extracted_before_gate = False
    async for event in client.registry.pull_stream(f"{host}/pipe/img:1", plain_http=True):
        if isinstance(event, LayerProgress) and event.index == 0 and event.state == "extracted":
            extracted_before_gate = not gate.opened.is_set()
            gate.opened.set()  # now let layer 1 arrive
    assert extracted_before_gate and not gate.timed_out, "layer 0 must be applied before layer 1 has arrived"
    [check] = await client.transfer.check([f"{host}/pipe/img:1"])
    assert check.complete and check.unpacked
    assert not await client.leases.list()


async def test_a_failed_download_stops_the_unpack_and_leaves_no_image(client: Client,
                                                                        served: tuple[str, Gate]) -> None:
    host, gate = served
    gate.fail = True
    with pytest.raises(NotFound):
        async for event in client.registry.pull_stream(f"{host}/pipe/img:1", plain_http=True):
            if isinstance(event, LayerProgress) and event.index == 0 and event.state == "extracted":
                gate.opened.set()
    assert await client.images.list() == []
    assert not await client.leases.list()
