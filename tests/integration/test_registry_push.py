"""Pushes by dockyardd to a real docker-registry: blobs the registry has are skipped, a sibling
repository's blobs are mounted, chunked uploads, manifest lists, and tags that name exactly
what was pushed."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator

import pytest

from dock.client import Client
from dock.registry import BlobProgress, RegistryEvent, Resolved, TransferDone
from dockyard_common.errors import AlreadyExists, FailedPrecondition, NotFound
from tests.images import Image, busybox_image, oci_archive
from tests.integration.test_registry_pull import multi_platform, pull_events
from tests.registry import RegistryProcess, start_registry

pytestmark = pytest.mark.root
LOCAL = "docker.io/library/busybox:latest"


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image(LOCAL)


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


def remote_manifest(reg: RegistryProcess, repo: str, reference: str, accept: str) -> tuple[str, bytes]:
    req = urllib.request.Request(f"{reg.url}/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as resp:
        data = resp.read()
        return resp.headers["Docker-Content-Digest"], data


async def push_events(client: Client, ref: str, **options: object) -> tuple[list[RegistryEvent], TransferDone]:
    events = [e async for e in client.registry.push_stream(ref, plain_http=True, **options)]  # type: ignore[arg-type]
    done = events[-1]
    assert isinstance(done, TransferDone), events
    return events, done


def blob_states(events: list[RegistryEvent]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        if isinstance(e, BlobProgress):
            out.setdefault(e.ref.split("-")[0], set()).add(e.state)
    return out


async def test_push_then_skip_then_mount(client: Client, registry: RegistryProcess, busybox: Image) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    ref = f"{registry.host}/team/busybox:1"
    await client.registry.tag(LOCAL, ref)
    events, done = await push_events(client, ref)
    assert done.target.digest == busybox.manifest_digest
    assert blob_states(events)["layer"] >= {"uploading", "done"}
    assert done.bytes_transferred >= sum(len(b) for b in busybox.layers)
    digest, data = remote_manifest(registry, "team/busybox", "1", done.target.media_type)
    assert digest == busybox.manifest_digest and data == busybox.manifest

    events, again = await push_events(client, ref)  # the registry has every blob: only the manifest goes
    assert blob_states(events)["layer"] <= {"waiting", "exists"}
    assert again.bytes_transferred == len(busybox.manifest)

    events, done = await push_events(client, f"{registry.host}/other/busybox:2", local=ref)
    assert "mounted" in blob_states(events)["layer"], "a sibling repository's blob is mounted, not uploaded"
    assert done.bytes_transferred == len(busybox.manifest)
    assert remote_manifest(registry, "other/busybox", "2", done.target.media_type)[0] == busybox.manifest_digest


async def test_resolved_names_http_after_the_loopback_fallback(client: Client, registry: RegistryProcess,
                                                                busybox: Image) -> None:
    """Without --plain-http a loopback registry is tried over https and, answering in http,
    spoken to over http: Resolved names the host as it is reached, as a pull's does."""
    await client.transfer.import_archive(oci_archive([busybox]))
    ref = f"{registry.host}/fallback/busybox:1"
    events = [e async for e in client.registry.push_stream(ref, local=LOCAL)]
    resolved = [e for e in events if isinstance(e, Resolved)]
    assert len(resolved) == 1 and events[0] is resolved[0], events
    assert (resolved[0].name, resolved[0].host) == (ref, f"http://{registry.host}")
    assert resolved[0].target.digest == busybox.manifest_digest
    done = events[-1]
    assert isinstance(done, TransferDone) and done.target.digest == busybox.manifest_digest
    assert remote_manifest(registry, "fallback/busybox", "1", done.target.media_type)[0] == busybox.manifest_digest


async def test_chunked_upload_and_pull_back(client: Client, registry: RegistryProcess, busybox: Image) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    ref = f"{registry.host}/chunked/busybox:1"
    events, _ = await push_events(client, ref, local=LOCAL, chunk_size=64 * 1024)
    layer = json.loads(busybox.manifest)["layers"][0]
    with urllib.request.urlopen(f"{registry.url}/v2/chunked/busybox/blobs/{layer['digest']}") as resp:
        assert "sha256:" + hashlib.sha256(resp.read()).hexdigest() == layer["digest"]
    uploads = [e.offset for e in events if isinstance(e, BlobProgress) and e.ref.startswith("layer-")
               and e.state == "uploading"]
    assert len(uploads) >= layer["size"] // (64 * 1024), "one progress step per chunk"
    await client.images.delete(LOCAL, sync=True)
    _, pulled = await pull_events(client, ref)
    assert pulled.target.digest == busybox.manifest_digest


async def test_push_a_manifest_list(client: Client, registry: RegistryProcess) -> None:
    index, _ = multi_platform(registry, "src/multi", "1")
    _, done = await pull_events(client, f"{registry.host}/src/multi:1", all_platforms=True, unpack=False)
    _, pushed = await push_events(client, f"{registry.host}/dst/multi:1", local=done.name)
    digest, data = remote_manifest(registry, "dst/multi", "1", pushed.target.media_type)
    assert digest == done.target.digest and data == index

    # pulled for one platform only: the list cannot go whole, one platform can
    await client.images.delete(done.name, sync=True)
    _, one = await pull_events(client, f"{registry.host}/src/multi:1", unpack=False)
    with pytest.raises(FailedPrecondition, match="--platform"):
        await push_events(client, f"{registry.host}/dst/single:1", local=one.name)
    _, pushed = await push_events(client, f"{registry.host}/dst/single:1", local=one.name, platform="linux/amd64")
    assert pushed.target.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert remote_manifest(registry, "dst/single", "1", pushed.target.media_type)[0] == pushed.target.digest


async def test_tag(client: Client, busybox: Image) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    tagged = await client.registry.tag("busybox", "127.0.0.1:5000/me/bb")
    assert tagged.name == "127.0.0.1:5000/me/bb:latest" and tagged.created
    assert tagged.target.digest == busybox.manifest_digest
    assert (await client.images.get(tagged.name)).target.digest == busybox.manifest_digest
    with pytest.raises(AlreadyExists):
        await client.registry.tag(LOCAL, "127.0.0.1:5000/me/bb")
    moved = await client.registry.tag(LOCAL, "127.0.0.1:5000/me/bb", force=True)
    assert not moved.created
    with pytest.raises(NotFound):
        await client.registry.tag("nothere", "x")
    with pytest.raises(NotFound):
        await push_events(client, "127.0.0.1:1/not/local:1")
