"""A hostile registry (and the token server and blob storage it names) against the daemon's
registry client, beyond tests/integration/test_registry_faults.py: what it sends must cost
the daemon bounded memory and time, never lead our requests from https down to plain http or
our credentials anywhere they do not belong, and every failure must be a clear status (no
INTERNAL, no Python in the words, nothing left behind: leases, ingests, blobs) after which the
daemon serves the next call.

The registry is one small aiohttp app served on two origins of 127.0.0.1, plain http and https
(a test CA the daemon trusts through certs.d), so "another origin" and "a step down from https
to http" are both at hand. Each repository's first path component picks a behaviour; without
one the app is an honest registry (pull and push) of one small image.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import gzip
import hashlib
import json
import math
import re
import secrets
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dock.client import Client
from dock.registry import TransferDone
from dockyard_common.credentials import Credentials
from dockyard_common.errors import (
    DockyardError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from supervisor.remote.auth import MIN_TOKEN_SECONDS, TokenCache
from supervisor.remote.client import RegistrySession
from supervisor.remote.hosts import RegistryHost
from tests.daemon import DaemonProcess, traceback_free_daemon
from tests.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, build_image, sha256
from tests.registry import TLSFiles, free_port, make_tls
from tests.unit.archive_fixtures import build_tar, file
from tests.waiting import wait_until_async

pytestmark = pytest.mark.root

MiB = 1 << 20
CREDS = ("alice", "wonderland")
BASIC = "Basic " + base64.b64encode(":".join(CREDS).encode()).decode()
PYTHON_WORDS = sorted({n for n in dir(builtins) if n.endswith(("Error", "Exception"))}
                      | {"Traceback", "sys.set_int_max_str_digits", "message=", "b'"})
MEMORY_BOUND = 64 * MiB  # what one hostile pull may add to the daemon's peak RSS
DOCUMENTS = 1100  # more indexes than a pull walks (supervisor/remote/pull.py: MAX_DOCUMENTS, 1024)
TOKEN_DAY = 24 * 3600.0  # the longest a token is kept, whatever its server says
IMG = build_image("x", [build_tar([file("hello.txt", b"hello, hostile world\n")])])
LAYER = IMG.layers[0]
Handler = Callable[[web.Request, str, str], Awaitable[web.StreamResponse | None]]


# -- the hostile registry -------------------------------------------------------------------


@dataclass
class Seen:
    scheme: str
    port: int
    method: str
    path: str
    authorization: str


_ROUTE = re.compile(r"/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs/uploads|blobs)/?(?P<ref>[^/]*)$")


@dataclass
class Hostile:
    """The registry app: `on[<first repository component>]` (or `on["/v2/"]`, `on["*"]` for other
    paths) answers first; None from a handler falls back to the honest registry."""

    tls: TLSFiles
    on: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    docs: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # tag or digest -> (media type, bytes)
    blobs: dict[str, bytes] = field(default_factory=lambda: {sha256(IMG.config): IMG.config, sha256(LAYER): LAYER})
    uploads: dict[str, bytes] = field(default_factory=dict)
    received: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest) of finished uploads
    plain_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.publish("1", OCI_MANIFEST, IMG.manifest)
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        import threading

        self._thread = threading.Thread(target=self.loop.run_forever, name="hostile-registry", daemon=True)

    @property
    def plain(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    @property
    def secure(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def publish(self, tag: str, media_type: str, body: bytes) -> None:
        self.docs[tag] = self.docs[sha256(body)] = (media_type, body)

    def seen_at(self, port: int) -> list[Seen]:
        return [s for s in self.seen if s.port == port]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        self.seen.append(Seen(request.scheme, port, request.method, request.path_qs,
                              request.headers.get("Authorization", "")))
        if request.path in ("/v2", "/v2/"):
            handler = self.on.get("/v2/")
            answer = await handler(request, "v2", "") if handler else None
            return answer if answer is not None else web.json_response({})
        m = _ROUTE.match(request.path)
        if m is None:
            handler = self.on.get("*")
            answer = await handler(request, "other", request.path) if handler else None
            return answer if answer is not None else web.Response(status=404)
        repo, kind, ref = m.group("repo"), m.group("kind"), m.group("ref")
        handler = self.on.get(repo.split("/")[0])
        if handler is not None:
            answer = await handler(request, kind, ref)
            if answer is not None:
                return answer
        return await self._honest(request, repo, kind, ref)

    async def _honest(self, request: web.Request, repo: str, kind: str, ref: str) -> web.StreamResponse:
        if kind == "manifests":
            if request.method == "PUT":
                body = await request.read()
                self.docs[ref] = self.docs[sha256(body)] = (request.headers.get("Content-Type", ""), body)
                return web.Response(status=201, headers={"Docker-Content-Digest": sha256(body)})
            doc = self.docs.get(ref)
            if doc is None:
                return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
            headers = {"Content-Type": doc[0], "Docker-Content-Digest": sha256(doc[1])}
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(doc[1]))})
            return web.Response(body=doc[1], headers=headers)
        if kind == "blobs/uploads":
            if request.method == "POST":
                location = f"/v2/{repo}/blobs/uploads/{secrets.token_hex(4)}"
                return web.Response(status=202, headers={"Location": location})
            body = await request.read()
            self.uploads[ref] = self.uploads.get(ref, b"") + body
            if request.method == "PATCH":
                return web.Response(status=202, headers={"Location": request.path})
            upload = self.uploads.pop(ref)
            digest = request.query.get("digest", "")
            if sha256(upload) != digest:
                return web.json_response({"errors": [{"code": "DIGEST_INVALID"}]}, status=400)
            self.blobs[digest] = upload
            self.received.append((repo, digest))
            return web.Response(status=201, headers={"Docker-Content-Digest": digest})
        data = self.blobs.get(ref)
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data))})
        return web.Response(body=data, content_type="application/octet-stream")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1, handler_cancellation=True)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        await web.TCPSite(self._runner, "127.0.0.1", self.plain_port).start()
        await web.TCPSite(self._runner, "127.0.0.1", self.tls_port, ssl_context=context).start()

    def __enter__(self) -> Hostile:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def challenge(realm: str, scheme: str = "Bearer", extra: str = "") -> Handler:
    """A behaviour answering 401 with a challenge until the request carries an Authorization."""
    async def handler(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if request.headers.get("Authorization", "") in ("", "Bearer none"):
            params = f'realm="{realm}",service="hostile"' + extra
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": f"{scheme} {params}"})
        return None
    return handler


async def stream_forever(request: web.Request, chunk: bytes, pause: float = 0.0,
                         content_type: str = OCI_MANIFEST) -> web.StreamResponse:
    """A chunked body that never ends (until the client hangs up)."""
    resp = web.StreamResponse(headers={"Content-Type": content_type})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        while True:
            await resp.write(chunk)
            if pause:
                await asyncio.sleep(pause)
    except (ConnectionError, RuntimeError):
        return resp


def index_of(children: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children, **extra}).encode()


def entry(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


AMD64 = {"os": "linux", "architecture": "amd64"}


@contextlib.asynccontextmanager
async def raw_server(answer: Callable[[str, str], bytes]) -> AsyncIterator[str]:
    """127.0.0.1:<port> answering each request (method, path) with `answer`'s bytes as they are
    (what aiohttp's server refuses to send: control characters, broken HTTP), then hanging up."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            data = answer(method, path)
            writer.write(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def http_answer(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- the daemon and what a test must leave behind ------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:  # every hostile answer ends as a status, none as a traceback
        yield d


@pytest.fixture(scope="module")
def tls() -> Iterator[TLSFiles]:
    directory = Path(tempfile.mkdtemp(prefix="dy-hostile-tls-"))
    try:
        yield make_tls(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def hostile(daemon: DaemonProcess, tls: TLSFiles) -> Iterator[Hostile]:
    with Hostile(tls) as h:
        certs = daemon.base / "certs.d" / h.secure
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(tls.ca.read_bytes())  # Docker's layout: the daemon trusts the test CA
        try:
            yield h
        finally:
            shutil.rmtree(certs, ignore_errors=True)


class Memory:
    """The daemon's peak RSS since `reset` (VmHWM, reset through clear_refs)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = 0

    def _field(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {name} in /proc/{self.pid}/status")

    def reset(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.start = self._field("VmRSS")

    def grown(self) -> int:
        return self._field("VmHWM") - self.start


@dataclass
class Ctx:
    """A test's client (in a namespace of its own), the daemon's memory, the images it keeps."""

    client: Client
    memory: Memory
    kept: set[str] = field(default_factory=set)


@pytest.fixture
async def c(daemon: DaemonProcess) -> AsyncIterator[Ctx]:
    """A client in a namespace of the test's own; afterwards the namespace must hold nothing the
    test's failed transfers left (no lease, no ingest, no blob or snapshot once collected, no
    image beyond those the test kept) and the daemon must still answer."""
    namespace = f"hostile-{secrets.token_hex(4)}"
    async with daemon.client(namespace) as client:
        ctx = Ctx(client, Memory(daemon.proc.pid))
        ctx.memory.reset()
        yield ctx
        assert daemon.proc.poll() is None, "the daemon died"
        assert await client.leases.list() == [], "a lease was left behind"
        assert await client.content.list_statuses() == [], "an ingest was left behind"
        kept = {i.name for i in await client.images.list()}
        assert kept <= ctx.kept, f"images left: {kept - ctx.kept}"
        for name in kept:
            await client.images.delete(name, sync=True)

        async def collected() -> bool:
            return not await client.content.list()

        await wait_until_async(collected, 20, "the collector to take every blob of the failed transfers")

        async def no_snapshots() -> bool:
            return not [info async for info in client.snapshots.list()]

        await wait_until_async(no_snapshots, 20, "the collector to take every snapshot of the failed unpacks")
        ingests = daemon.root / "content" / "ingest"
        assert not ingests.exists() or list(ingests.iterdir()) == [], "backend ingest files left behind"


def assert_clear(exc: DockyardError) -> str:
    """A status message as users should read it: no Python, no control characters."""
    text = str(exc)
    for word in PYTHON_WORDS:
        assert word not in text, f"{word!r} in {text!r}"
    assert text.isprintable(), f"control characters in {text!r}"
    return text


async def pull(c: Ctx, ref: str, **options: Any) -> TransferDone:
    events = [e async for e in c.client.registry.pull_stream(ref, **options)]
    done = events[-1]
    assert isinstance(done, TransferDone), events
    c.kept.add(done.name)
    return done


async def refused(c: Ctx, ref: str, kind: type[DockyardError], words: str, *, within: float = 60,
                  **options: Any) -> str:
    """Pull `ref` and expect a status of `kind` matching `words`, within `within` seconds (a pull
    the registry can hold for ever fails the test instead of hanging it)."""
    with pytest.raises(kind) as caught:
        await asyncio.wait_for(pull(c, ref, **options), within)
    text = assert_clear(caught.value)
    assert re.search(words, text), text
    return text


async def still_serves(c: Ctx, hostile: Hostile) -> None:
    """The daemon pulls an honest image right after."""
    done = await pull(c, f"{hostile.plain}/honest/img:1", plain_http=True)
    assert done.target.digest == IMG.manifest_digest


async def local_image(c: Ctx, hostile: Hostile, name: str, plain: bool = True) -> None:
    """`name` in the test's namespace: the honest image, pulled and tagged (for pushes)."""
    origin = hostile.plain if plain else hostile.secure
    await pull(c, f"{origin}/honest/img:1", plain_http=plain)
    await c.client.registry.tag(f"{origin}/honest/img:1", name)
    c.kept.add(name)


async def missing_blobs(request: web.Request, kind: str) -> web.StreamResponse | None:
    """A push target that has no blob yet (the honest registry knows the image's)."""
    if kind == "blobs" and request.method == "HEAD":
        return web.Response(status=404)
    return None


# -- memory and time ---------------------------------------------------------------------------------


async def test_a_manifest_that_never_ends_is_capped_and_memory_stays_bounded(c: Ctx, hostile: Hostile) -> None:
    async def endless(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if request.method == "HEAD":
            return web.Response(status=405)  # GET, then
        return await stream_forever(request, b" " * 65536)

    async def announced(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if request.method == "HEAD":  # a GiB, says the HEAD: nothing is asked for after that
            return web.Response(headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(1 << 30),
                                         "Docker-Content-Digest": IMG.manifest_digest})
        return await stream_forever(request, b" " * 65536)

    hostile.on.update(endless=endless, announced=announced)
    await refused(c, f"{hostile.plain}/endless/img:1", InvalidArgument, "larger than the limit", plain_http=True)
    await refused(c, f"{hostile.plain}/announced/img:1", InvalidArgument, "larger than the limit", plain_http=True)
    assert not [s for s in hostile.seen if s.method == "GET" and s.path.startswith("/v2/announced/")]
    assert c.memory.grown() < MEMORY_BOUND
    await still_serves(c, hostile)


def _annotated(count: int) -> bytes:
    """The image's manifest with `count` tiny annotations (about 11 bytes each)."""
    doc = json.loads(IMG.manifest)
    doc["annotations"] = {f"{i:x}": "" for i in range(count)}
    return json.dumps(doc, separators=(",", ":")).encode()


async def test_a_manifest_of_tiny_annotations_costs_bounded_memory(c: Ctx, hostile: Hostile) -> None:
    """Parsed, such a manifest weighs about ten times its bytes (8 MiB of them took 140 MB, a pull
    parses it more than once): one under the limit (containerd's, 4 * 1048 * 1048 bytes) is
    pulled for twice the usual bound, one of 6 MB is refused before it is parsed."""
    small, big = _annotated(350_000), _annotated(560_000)
    assert len(small) < 4 * 1048 * 1048 < 6_000_000 < len(big) < 8 * MiB
    hostile.publish("small", OCI_MANIFEST, small)
    hostile.publish("big", OCI_MANIFEST, big)
    await pull(c, f"{hostile.plain}/annotated/img:small", plain_http=True)
    assert c.memory.grown() < 2 * MEMORY_BOUND
    c.memory.reset()
    await refused(c, f"{hostile.plain}/annotated/img:big", InvalidArgument, "larger than the limit", plain_http=True)
    assert c.memory.grown() < MEMORY_BOUND


async def test_a_manifest_trickled_a_byte_at_a_time_is_cut_off(c: Ctx, hostile: Hostile) -> None:
    """Each read brings a byte well within the read timeout: only a floor on the rate ends it."""
    async def trickle(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if request.method == "HEAD":
            return web.Response(status=405)
        return await stream_forever(request, b" ", pause=0.2)

    hostile.on["trickle"] = trickle
    await refused(c, f"{hostile.plain}/trickle/img:1", Unavailable, r"sent only \d+ bytes in [\d.]+s.*KiB/s",
                  within=20, plain_http=True, timeout=2)
    await still_serves(c, hostile)


async def test_a_token_answer_that_never_ends_is_capped(c: Ctx, hostile: Hostile) -> None:
    async def endless_token(request: web.Request, kind: str, path: str) -> web.StreamResponse | None:
        return await stream_forever(request, b"a" * 65536, content_type="application/json")

    hostile.on["token"] = challenge(f"http://{hostile.plain}/token")
    hostile.on["*"] = endless_token
    await refused(c, f"{hostile.plain}/token/img:1", Unavailable, r"token from .*larger than 1048576 bytes",
                  plain_http=True)
    assert c.memory.grown() < MEMORY_BOUND


async def test_an_index_listing_one_child_over_and_over_is_walked_once(c: Ctx, hostile: Hostile) -> None:
    """Four levels of indexes, each listing the level below 5 000 times: 5 000^4 walks before."""
    child = entry(OCI_MANIFEST, IMG.manifest, platform=AMD64)
    for _ in range(4):
        body = index_of([child] * 5000)
        hostile.docs[sha256(body)] = (OCI_INDEX, body)
        child = entry(OCI_INDEX, body)
    hostile.publish("fan", OCI_INDEX, body)
    done = await asyncio.wait_for(pull(c, f"{hostile.plain}/fanout/img:fan", plain_http=True), 60)
    assert done.target.digest == sha256(body) and done.chain_id
    assert c.memory.grown() < MEMORY_BOUND
    manifest_gets = [s for s in hostile.seen if s.path.endswith(f"/manifests/{IMG.manifest_digest}")]
    assert len(manifest_gets) == 1, "each document is fetched once"


async def test_an_image_listing_too_many_documents_is_refused(c: Ctx, hostile: Hostile) -> None:
    """Distinct indexes, each small and valid: the walk stops at its bound, not at the registry's whim."""
    children = []
    for i in range(DOCUMENTS):
        body = index_of([entry(OCI_MANIFEST, IMG.manifest, platform=AMD64)], annotations={"n": str(i)})
        hostile.docs[sha256(body)] = (OCI_INDEX, body)
        children.append(entry(OCI_INDEX, body))
    hostile.publish("many", OCI_INDEX, index_of(children))
    await refused(c, f"{hostile.plain}/many/img:many", InvalidArgument,
                  r"more than \d+ indexes and manifests", plain_http=True)
    fetched = [s for s in hostile.seen if "/manifests/sha256:" in s.path]
    assert len(fetched) < DOCUMENTS


async def test_one_layer_repeated_past_what_overlayfs_stacks_is_a_clear_error(c: Ctx, hostile: Hostile) -> None:
    """200 times the same (empty) layer: one blob to fetch, 200 snapshots to stack; the chain the
    kernel cannot mount is ResourceExhausted, and what was made of it goes with the lease."""
    empty = build_tar([])
    layer = gzip.compress(empty, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(empty)] * 200}}).encode()
    hostile.blobs.update({sha256(layer): layer, sha256(config): config})
    hostile.publish("deep", OCI_MANIFEST, json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": entry(OCI_CONFIG, config),
        "layers": [entry(OCI_LAYER_GZIP, layer)] * 200}).encode())
    await refused(c, f"{hostile.plain}/deep/img:deep", ResourceExhausted, "does not fit", plain_http=True)
    assert len([s for s in hostile.seen if s.path.endswith(sha256(layer))]) == 1


# -- parsing ----------------------------------------------------------------------------------------


async def test_json_python_cannot_read_is_invalid_argument(c: Ctx, hostile: Hostile) -> None:
    """An integer of 5 000 digits is valid JSON that Python's parser refuses with a ValueError of
    its own (not a JSONDecodeError); a config and a manifest carrying one."""
    config = IMG.config.replace(b'"os": "linux"', b'"os": "linux", "n": 1' + b"0" * 5000)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": entry(OCI_CONFIG, config),
                           "layers": [entry(OCI_LAYER_GZIP, LAYER)]}).encode()
    hostile.blobs[sha256(config)] = config
    hostile.publish("cfg", OCI_MANIFEST, manifest)
    hostile.publish("man", OCI_MANIFEST, IMG.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion": 2, "n": 1'
                                                             + b"0" * 5000))
    for tag in ("cfg", "man"):
        await refused(c, f"{hostile.plain}/digits/img:{tag}", InvalidArgument, "not valid JSON: the number",
                      plain_http=True)
    await still_serves(c, hostile)


def _manifest_with(layer_size: Any = None, raw: bytes | None = None) -> bytes:
    if raw is not None:
        return raw
    doc = json.loads(IMG.manifest)
    doc["layers"][0]["size"] = layer_size
    return json.dumps(doc).encode()


@pytest.mark.parametrize("body,words", [
    (_manifest_with(-1), "size -1 is negative"),
    (_manifest_with(1 << 60), "larger than the limit"),
    (_manifest_with(raw=IMG.manifest.replace(b'"size": %d' % len(LAYER), b'"size": 1e999')), "1e999 is out of range"),
    (_manifest_with("12"), "must be an integer"),
    (IMG.manifest.replace(b'"size": %d' % len(IMG.config), b'"size": 1073741824', 1), "larger than the limit"),
    (_manifest_with(raw=IMG.manifest.replace(b'"schemaVersion"', b'"schemaVersion": 2, "x": "\xff\xfe", "s"')),
     "not UTF-8"),
    (index_of([entry(OCI_MANIFEST, IMG.manifest, platform=AMD64)] * 10_001), "more than the limit of 10000"),
    (_manifest_with(raw=IMG.manifest.replace(b'"digest": "sha256:', b'"digest": "sha256:../', 1)), "digest"),
], ids=["negative-size", "huge-size", "size-1e999", "size-string", "config-1GiB", "invalid-utf8", "index-10001",
        "digest-path"])
async def test_documents_that_lie_about_their_content(c: Ctx, hostile: Hostile, body: bytes, words: str) -> None:
    hostile.publish("lie", OCI_INDEX if b'"manifests"' in body else OCI_MANIFEST, body)
    await refused(c, f"{hostile.plain}/lies/img:lie", InvalidArgument, words, plain_http=True)
    assert c.memory.grown() < MEMORY_BOUND


async def test_odd_but_valid_documents_are_read_as_go_reads_them(c: Ctx, hostile: Hostile) -> None:
    """A media type with parameters, a duplicated key (the last one counts, as in Go), NULs in
    annotations (one of them becomes a snapshot label)."""
    doc = json.loads(IMG.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion": 7, "schemaVersion": 2'))
    doc["layers"][0]["annotations"] = {"containerd.io/snapshot/nul": "a\u0000b", "k\u0000": "\u0000"}
    body = json.dumps(doc).encode().replace(b'"schemaVersion": 2', b'"schemaVersion": 7, "schemaVersion": 2')
    assert body.count(b"schemaVersion") == 2
    hostile.publish("odd", OCI_MANIFEST + "; charset=utf-8", body)
    done = await pull(c, f"{hostile.plain}/odd/img:odd", plain_http=True)
    assert done.target.digest == sha256(body)


async def test_docker_content_digest_must_match_the_body(c: Ctx, hostile: Hostile) -> None:
    """Whatever algorithm the header names (sha512 was not compared), and it must be a digest."""
    sha512 = "sha512:" + hashlib.sha512(b"something else").hexdigest()

    def lying(header: str) -> Handler:
        async def handler(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
            if kind != "manifests":
                return None
            if request.method == "HEAD":
                return web.Response(status=405)
            return web.Response(body=IMG.manifest, headers={"Content-Type": OCI_MANIFEST,
                                                            "Docker-Content-Digest": header})
        return handler

    hostile.on["sha512"] = lying(sha512)
    hostile.on["garbage"] = lying("sha256:not-a-digest")
    await refused(c, f"{hostile.plain}/sha512/img:1", FailedPrecondition, "says the manifest is sha512:.* hashes to",
                  plain_http=True)
    await refused(c, f"{hostile.plain}/garbage/img:1", InvalidArgument, "Docker-Content-Digest", plain_http=True)
    await still_serves(c, hostile)


async def test_layer_urls_are_never_fetched(c: Ctx, hostile: Hostile) -> None:
    """A foreign layer's `urls` point anywhere: the layer comes from the registry or not at all."""
    img = build_image("x", [build_tar([file("foreign", secrets.token_bytes(64))])])  # in no namespace yet
    manifest = json.loads(img.manifest)
    manifest["layers"][0]["urls"] = [f"http://{hostile.plain}/elsewhere", f"https://{hostile.secure}/elsewhere"]
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    hostile.publish("urls", OCI_MANIFEST, json.dumps(manifest).encode())
    hostile.blobs[sha256(img.config)] = img.config

    async def no_layer(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404) if kind == "blobs" else None

    hostile.on["urls"] = no_layer
    await refused(c, f"{hostile.plain}/urls/img:urls", NotFound, "not found", plain_http=True)
    assert not [s for s in hostile.seen if s.path.startswith("/elsewhere")]


@pytest.mark.parametrize("reference", [
    "{host}/../etc/img:1", "{host}/a/%2e%2e/img:1", "{host}/img@sha256:" + "a" * 63,
    "{host}/img@sha256:" + "A" * 64, "{host}/img@md5:" + "a" * 32, "{host}/img@sha1:" + "a" * 40,
    "{host}/Img:1", "{host}/img:" + "t" * 200, "{host}/img\x00:1",
])
async def test_hostile_references_never_reach_the_registry(c: Ctx, hostile: Hostile, reference: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await pull(c, reference.format(host=hostile.plain), plain_http=True)
    assert_clear(caught.value)
    assert hostile.seen == []


# -- URLs and credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("location,words", [
    ("file:///etc/passwd", "not an absolute http"),
    ("unix:///run/dockyard/dockyard.sock", "not an absolute http"),
    ("http://[::1", "not valid"),
    ("http://127.0.0.1:99999/x", "not valid"),
    ("http://user:secret@127.0.0.1:1/x", "credentials in it"),
])
async def test_redirects_to_urls_we_cannot_use_are_clear_errors(c: Ctx, hostile: Hostile, location: str,
                                                                words: str) -> None:
    async def redirect(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        return web.Response(status=307, headers={"Location": location})

    hostile.on["redirect"] = redirect
    await refused(c, f"{hostile.plain}/redirect/img:1", Unavailable, words, plain_http=True)
    await still_serves(c, hostile)


async def test_a_manifest_redirect_from_https_to_http_is_refused(c: Ctx, hostile: Hostile) -> None:
    """By tag, the manifest is what the digest of everything else comes from: served over plain
    http, anyone on the way could choose the image."""
    async def downgrade(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if kind == "manifests" and request.scheme == "https":
            return web.Response(status=307, headers={"Location": f"http://{hostile.plain}/v2/honest/img/manifests/1"})
        return None

    hostile.on["down"] = downgrade
    await refused(c, f"{hostile.secure}/down/img:1", FailedPrecondition, "led from https to plain http")
    assert hostile.seen_at(hostile.plain_port) == []
    done = await pull(c, f"{hostile.secure}/honest/img:1")  # over https, the CA trusted
    assert done.target.digest == IMG.manifest_digest


async def test_a_token_realm_over_plain_http_gets_no_credentials(c: Ctx, hostile: Hostile) -> None:
    """An https registry naming a plain-http realm would have the user's password sent in clear
    (containerd and Docker send it): refused, and the realm sees nothing."""
    hostile.on["realm"] = challenge(f"http://{hostile.plain}/token")
    await refused(c, f"{hostile.secure}/realm/img:1", FailedPrecondition, "led from https to plain http",
                  username=CREDS[0], secret=CREDS[1])
    assert hostile.seen_at(hostile.plain_port) == []


async def test_login_never_sends_the_password_to_a_plain_http_realm(c: Ctx, hostile: Hostile) -> None:
    hostile.on["/v2/"] = challenge(f"http://{hostile.plain}/token")
    with pytest.raises(FailedPrecondition) as caught:
        await c.client.registry.login(hostile.secure, CREDS[0], CREDS[1])
    assert "led from https to plain http" in assert_clear(caught.value)
    assert hostile.seen_at(hostile.plain_port) == []


@pytest.mark.parametrize("realm,answer,words", [
    ("file:///etc/passwd", None, "not an absolute http"),
    ("/token", None, "not an absolute http"),
    ("{plain}/token", {"token": "abc\r\nX-Injected: 1"}, "characters a token cannot have"),
    ("{plain}/token", {"token": "abc\x1b[2J"}, "characters a token cannot have"),
    ("{plain}/token", {"token": 17}, "has no token"),
])
async def test_token_servers_that_lie(c: Ctx, hostile: Hostile, realm: str, answer: Any, words: str) -> None:
    async def token(request: web.Request, kind: str, path: str) -> web.StreamResponse | None:
        return web.json_response(answer)

    hostile.on["tok"] = challenge(realm.format(plain=f"http://{hostile.plain}"))
    hostile.on["*"] = token
    with pytest.raises(DockyardError) as caught:
        await pull(c, f"{hostile.plain}/tok/img:1", plain_http=True, username=CREDS[0], secret=CREDS[1])
    assert re.search(words, assert_clear(caught.value)), caught.value
    assert type(caught.value).__name__ != "Internal"


async def test_token_lifetimes_are_bounded(hostile: Hostile) -> None:
    """expires_in of 1e999 (infinity), NaN, a boolean or 10^30 seconds: a token kept for ever
    would be sent long after its server stopped honouring it."""
    answers = [b'{"token": "t", "expires_in": 1e999}', b'{"token": "t", "expires_in": NaN}',
               b'{"token": "t", "expires_in": true}', b'{"token": "t", "expires_in": 1000000000000000000000000000000}',
               b'{"token": "t", "expires_in": -5}']
    served = iter(answers)

    async def token(request: web.Request, kind: str, path: str) -> web.StreamResponse | None:
        return web.Response(body=next(served), content_type="application/json")

    hostile.on["*"] = token
    host = RegistryHost("http", hostile.plain)
    async with RegistrySession(Credentials(*CREDS), TokenCache()) as session:
        for _ in answers:
            value, seconds = await session._fetch_token(host, f"http://{hostile.plain}/token", "s", ("x",), None)
            assert value == "t" and math.isfinite(seconds) and MIN_TOKEN_SECONDS <= seconds <= TOKEN_DAY


async def test_an_upload_location_on_another_origin_gets_the_bytes_without_credentials(
        c: Ctx, hostile: Hostile) -> None:
    """Blob storage elsewhere (as registries backed by object stores answer): allowed, as in
    containerd, but without the registry's credentials."""
    name = f"{hostile.plain}/authed/img:1"
    await local_image(c, hostile, name)
    other = f"http://localhost:{hostile.plain_port}"  # another origin: another host name

    async def registry(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if request.headers.get("Authorization") != BASIC:
            return web.json_response({}, status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if kind == "blobs/uploads" and request.method == "POST":
            return web.Response(status=202, headers={
                "Location": f"{other}/v2/store/img/blobs/uploads/{secrets.token_hex(4)}"})
        return await missing_blobs(request, kind)

    hostile.on["authed"] = registry
    await c.client.registry.push(name, plain_http=True, username=CREDS[0], secret=CREDS[1])
    uploads = [s for s in hostile.seen if s.path.startswith("/v2/store/")]
    assert len(uploads) == 2 and all(s.authorization == "" for s in uploads), uploads
    assert sorted(d for _, d in hostile.received) == sorted([sha256(LAYER), sha256(IMG.config)])
    assert all(s.authorization == BASIC for s in hostile.seen if s.path.startswith("/v2/authed/")
               and s.authorization)


async def test_an_upload_location_on_plain_http_is_refused(c: Ctx, hostile: Hostile) -> None:
    name = f"{hostile.secure}/pushdown/img:1"
    await local_image(c, hostile, name, plain=False)

    async def registry(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if kind == "blobs/uploads" and request.method == "POST":
            return web.Response(status=202, headers={"Location": f"http://{hostile.plain}/v2/store/blobs/uploads/x"})
        return await missing_blobs(request, kind)

    hostile.on["pushdown"] = registry
    with pytest.raises(FailedPrecondition) as caught:
        await c.client.registry.push(name)
    assert "led from https to plain http" in assert_clear(caught.value)
    assert hostile.seen_at(hostile.plain_port) == [s for s in hostile.seen_at(hostile.plain_port)
                                                   if s.path.startswith("/v2/honest/")]
    assert hostile.received == []


async def test_a_redirected_upload_is_sent_whole_again(c: Ctx, hostile: Hostile) -> None:
    """A PUT answered 307 must be sent again with its body (the stream was used up, and the
    registry waited for bytes that never came until the read timeout)."""
    name = f"{hostile.plain}/moving/img:1"
    await local_image(c, hostile, name)

    async def moved(request: web.Request, kind: str, ref: str) -> web.StreamResponse | None:
        if kind == "blobs/uploads" and request.method == "PUT" and not ref.startswith("moved"):
            await request.read()
            return web.Response(status=307, headers={
                "Location": f"/v2/moving/img/blobs/uploads/moved{ref}?{request.query_string}"})
        return await missing_blobs(request, kind)

    hostile.on["moving"] = moved
    await asyncio.wait_for(c.client.registry.push(name, plain_http=True, timeout=5), 30)
    assert sorted(d for _, d in hostile.received) == sorted([sha256(LAYER), sha256(IMG.config)])


# -- what users read ----------------------------------------------------------------------------------


async def test_the_registrys_words_reach_users_escaped(c: Ctx) -> None:
    """ESC and BEL from a registry's error document, reason phrase or challenge must not reach a
    terminal through `dock`'s error line as commands."""
    evil = "\x1b]0;owned\x07\x1b[2J"
    document = json.dumps({"errors": [{"code": "DENIED", "message": f"go away{evil}"}]}).encode()

    def answer(method: str, path: str) -> bytes:
        repo = path.split("/")[2] if path.startswith("/v2/") else ""
        if path.startswith("/token"):
            return http_answer("200 OK", {"Content-Type": "application/json"}, b'{"token": "t"}')
        if repo == "doc":
            return http_answer("403 Forbidden", {"Content-Type": "application/json"}, document)
        if repo == "reason":
            return http_answer(f"400 Bad{evil}", {})
        return http_answer("401 Unauthorized", {"WWW-Authenticate": f'Bearer realm="http://{host}/token",'
                                                                    f'error="no{evil}"'})

    async with raw_server(answer) as host:
        for repo, kind in (("doc", FailedPrecondition), ("reason", InvalidArgument), ("chal", FailedPrecondition)):
            text = await refused(c, f"{host}/{repo}/img:1", kind, ".", plain_http=True,
                                 username=CREDS[0], secret=CREDS[1])
            assert "\x1b" not in text and "\\x1b" in text, text


@pytest.mark.parametrize("answer,words", [
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n", "Too many headers"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n", "Got more than"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "Content-Length"),
    (b"not http at all\r\n\r\n", "status line"),
], ids=["many-headers", "long-header", "huge-content-length", "not-http"])
async def test_an_answer_that_is_not_http_is_named_so(c: Ctx, answer: bytes, words: str) -> None:
    """aiohttp's parser refuses these; what users read must say so, not "400, message=..." with
    the bytes' repr (as if the registry had answered 400)."""
    async with raw_server(lambda method, path: answer) as host:
        text = await refused(c, f"{host}/raw/img:1", Unavailable, "not valid HTTP", plain_http=True)
    assert words in text and "400" not in text, text
