"""Pulls by dockyardd from a real docker-registry on 127.0.0.1: fetch, verify, label, unpack,
platforms of a manifest list, and what a second pull does not fetch again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dock.registry import BlobProgress, RegistryEvent, Resolved, TransferDone
from dockyard_common.errors import InvalidArgument, NotFound, Unavailable
from dockyard_common.imagespec import chain_ids
from tests.daemon import REPO, DaemonProcess, remove_base, start_daemon
from tests.images import OCI_INDEX, OCI_MANIFEST, Image, build_image, busybox_image
from tests.registry import RegistryProcess, push_blobs, push_manifest, start_registry

pytestmark = pytest.mark.root


def publish(reg: RegistryProcess, repo: str, tag: str, img: Image) -> None:
    """Put an image into the registry without dockyardd (blobs, then the manifest under `tag`)."""
    push_blobs(reg.url, repo, {d: b for d, b in img.blobs.items() if d != img.manifest_digest})
    push_manifest(reg.url, repo, tag, img.manifest, OCI_MANIFEST)


def multi_platform(reg: RegistryProcess, repo: str, tag: str) -> tuple[bytes, dict[str, Image]]:
    """A manifest list of linux/amd64 (busybox), linux/arm64 and linux/arm/v7 (small made-up
    layers: never run, only fetched). Returns the index bytes and the images by platform."""
    from tests.unit.archive_fixtures import build_tar, file

    images = {
        "linux/amd64": busybox_image("x"),
        "linux/arm64": build_image("x", [build_tar([file("arm64", b"arm64 bits\n" * 100)])], architecture="arm64"),
        "linux/arm/v7": build_image("x", [build_tar([file("armv7", b"armv7 bits\n" * 100)])], architecture="arm"),
    }
    entries = []
    for plat, img in images.items():
        publish(reg, repo, img.manifest_digest, img)
        os_, arch, *variant = plat.split("/")
        platform = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        entries.append({"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
                        "platform": platform})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    push_manifest(reg.url, repo, tag, index, OCI_INDEX)
    return index, images


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("x")


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


async def pull_events(client: Client, ref: str, **options: object) -> tuple[list[RegistryEvent], TransferDone]:
    events = [e async for e in client.registry.pull_stream(ref, plain_http=True, **options)]  # type: ignore[arg-type]
    done = events[-1]
    assert isinstance(done, TransferDone), events
    return events, done


async def test_pull_fetches_unpacks_and_labels_like_containerd(client: Client, registry: RegistryProcess,
                                                              busybox: Image) -> None:
    publish(registry, "test/busybox", "latest", busybox)
    events, done = await pull_events(client, f"{registry.host}/test/busybox")
    name = f"{registry.host}/test/busybox:latest"
    assert done.name == name and done.created
    assert done.target.digest == busybox.manifest_digest
    chain = chain_ids(json.loads(busybox.config)["rootfs"]["diff_ids"])[-1]
    assert done.chain_id == chain and done.snapshotter == "overlayfs"
    assert done.bytes_transferred >= sum(len(b) for b in busybox.blobs.values())
    states = {(e.ref.split("-")[0], e.state) for e in events if isinstance(e, BlobProgress)}
    assert ("layer", "done") in states and ("config", "done") in states and ("manifest", "done") in states

    img = await client.images.get(name)
    assert img.target.digest == busybox.manifest_digest
    manifest = await client.content.info(busybox.manifest_digest)
    config_digest = json.loads(busybox.manifest)["config"]["digest"]
    layer_digest = json.loads(busybox.manifest)["layers"][0]["digest"]
    assert manifest.labels["containerd.io/gc.ref.content.config"] == config_digest
    assert manifest.labels["containerd.io/gc.ref.content.l.0"] == layer_digest
    for digest in (busybox.manifest_digest, config_digest, layer_digest):
        info = await client.content.info(digest)
        assert info.labels["containerd.io/distribution.source.127.0.0.1"] == "test/busybox"
    config = await client.content.info(config_digest)
    assert config.labels["containerd.io/gc.ref.snapshot.overlayfs"] == chain
    await client.snapshots.stat(chain)
    [check] = await client.transfer.check([name])
    assert check.complete and check.unpacked
    assert not await client.leases.list(), "the pull's lease must be gone"


async def test_second_pull_fetches_nothing_and_a_new_repo_adds_its_source(client: Client, registry: RegistryProcess,
                                                                          busybox: Image) -> None:
    publish(registry, "test/busybox", "latest", busybox)
    publish(registry, "other/busybox", "1", busybox)
    await pull_events(client, f"{registry.host}/test/busybox")
    events, done = await pull_events(client, f"{registry.host}/test/busybox")
    assert not done.created
    assert done.bytes_transferred == 0, "everything was there: nothing comes over the network"
    assert {e.state for e in events if isinstance(e, BlobProgress)} <= {"exists", "waiting"}
    _, done = await pull_events(client, f"{registry.host}/other/busybox:1")
    assert done.bytes_transferred == 0
    layer_digest = json.loads(busybox.manifest)["layers"][0]["digest"]
    info = await client.content.info(layer_digest)
    assert info.labels["containerd.io/distribution.source.127.0.0.1"] == "other/busybox,test/busybox"


async def test_platform_selection_from_a_manifest_list(client: Client, registry: RegistryProcess) -> None:
    _, images = multi_platform(registry, "test/multi", "1")
    ref = f"{registry.host}/test/multi:1"

    def layer(plat: str) -> str:
        return str(json.loads(images[plat].manifest)["layers"][0]["digest"])

    _, done = await pull_events(client, ref)  # the host's platform: linux/amd64
    assert done.target.media_type == OCI_INDEX and done.chain_id
    present = {i.digest for i in await client.content.list()}
    assert layer("linux/amd64") in present
    assert layer("linux/arm64") not in present and layer("linux/arm/v7") not in present
    labels = (await client.content.info(done.target.digest)).labels
    assert labels["containerd.io/gc.ref.content.m.0"] == images["linux/amd64"].manifest_digest
    assert "containerd.io/gc.ref.content.m.1" not in labels

    _, done = await pull_events(client, ref, platform="linux/arm64", unpack=False)
    present = {i.digest for i in await client.content.list()}
    assert layer("linux/arm64") in present and layer("linux/arm/v7") not in present
    assert done.chain_id == ""

    _, done = await pull_events(client, ref, all_platforms=True, unpack=False)
    present = {i.digest for i in await client.content.list()}
    assert {layer(p) for p in images} <= present
    labels = (await client.content.info(done.target.digest)).labels
    assert {labels[f"containerd.io/gc.ref.content.m.{i}"] for i in range(3)} == {
        img.manifest_digest for img in images.values()}

    with pytest.raises(NotFound, match="linux/amd64, linux/arm/v7, linux/arm64"):
        await pull_events(client, ref, platform="linux/s390x")
    with pytest.raises(InvalidArgument, match="platform"):
        await pull_events(client, ref, platform="not a platform")


async def test_pull_errors_name_what_is_missing(client: Client, registry: RegistryProcess, busybox: Image) -> None:
    publish(registry, "test/busybox", "latest", busybox)
    with pytest.raises(NotFound, match="nope"):
        await pull_events(client, f"{registry.host}/test/busybox:nope")
    with pytest.raises(NotFound):
        await pull_events(client, f"{registry.host}/no/such/repo")
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        await pull_events(client, "a:b:c")
    assert [i.name for i in await client.images.list()] == []
    assert not await client.leases.list()


def test_dock_pull_cli_prints_progress_lines(daemon: DaemonProcess, registry: RegistryProcess,
                                            busybox: Image) -> None:
    publish(registry, "test/busybox", "latest", busybox)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_CONFIG": str(daemon.base / "docker")}
    res = subprocess.run([sys.executable, "-m", "dock.cli", "--address", daemon.address, "pull", "--plain-http",
                          f"{registry.host}/test/busybox"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{registry.host}/test/busybox:latest: resolved to {busybox.manifest_digest}" in res.stdout
    assert "layer-sha256:" in res.stdout and ": done" in res.stdout
    assert f"pulled {registry.host}/test/busybox:latest" in res.stdout
    res = subprocess.run([sys.executable, "-m", "dock.cli", "--address", daemon.address, "pull", "--plain-http",
                          "--quiet", f"{registry.host}/test/busybox"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{registry.host}/test/busybox:latest\n"


async def test_hosts_toml_mirror_and_plain_http_server(registry: RegistryProcess, busybox: Image,
                                                       tmp_path: Path) -> None:
    """certs.d/<domain>/hosts.toml in the daemon's config dir: a mirror answers for a domain
    whose server is unreachable, and `server = "http://..."` means plain HTTP without the flag."""
    publish(registry, "test/busybox", "latest", busybox)
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    (base / "config.toml").write_text("")
    mirrored = base / "certs.d" / "registry.example:5000"
    mirrored.mkdir(parents=True)
    (mirrored / "hosts.toml").write_text(f'server = "http://127.0.0.1:1"\n[host."http://{registry.host}"]\n'
                                         '  capabilities = ["pull", "resolve"]\n')
    plain = base / "certs.d" / registry.host
    plain.mkdir(parents=True)
    (plain / "hosts.toml").write_text(f'server = "http://{registry.host}"\n')
    d = start_daemon(base=base, extra=["--config", str(base / "config.toml")])
    try:
        async with d.client() as client:
            events = [e async for e in client.registry.pull_stream("registry.example:5000/test/busybox")]
            done = events[-1]
            assert isinstance(done, TransferDone) and done.name == "registry.example:5000/test/busybox:latest"
            assert isinstance(events[0], Resolved) and events[0].host == f"http://{registry.host}"
            done = await client.registry.pull(f"{registry.host}/test/busybox", unpack=False)
            assert done.target.digest == busybox.manifest_digest
            with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1: unreachable"):  # never to a pull-only mirror
                await client.registry.push("registry.example:5000/test/busybox:latest")
    finally:
        remove_base(d)
