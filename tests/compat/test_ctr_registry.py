"""Registries with the real tools: `ctr images pull/push --plain-http` against dockyardd (ctr
does the transfer client-side through Content, Images, Diff and Leases), and skopeo on the
other side of dockyardd's own pulls and pushes, all through Debian's docker-registry."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.client import Client
from tests.compat.conftest import ctr
from tests.compat.runtimes import remove_everything
from tests.daemon import DaemonProcess
from tests.images import Image, busybox_image, oci_archive
from tests.registry import RegistryProcess, start_registry

pytestmark = [pytest.mark.compat, pytest.mark.root]

for tool in ("ctr", "skopeo"):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run scripts/install", pytrace=False)


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("docker.io/library/busybox:latest")


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


def skopeo(*args: str) -> str:
    res = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, res.stderr
    return res.stdout


def skopeo_push(tmp: Path, busybox: Image, dest: str) -> None:
    archive = tmp / "bb.tar"
    archive.write_bytes(oci_archive([busybox]))
    skopeo("copy", "--dest-tls-verify=false", f"oci-archive:{archive}", f"docker://{dest}")


async def test_skopeo_pushed_image_pulls_with_dock_and_runs_with_ctr(
        daemon: DaemonProcess, client: Client, registry: RegistryProcess, busybox: Image, tmp_path: Path) -> None:
    ref = f"{registry.host}/skopeo/busybox:1"
    skopeo_push(tmp_path, busybox, ref)
    done = await client.registry.pull(ref, plain_http=True)
    remote = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}"))
    assert remote["config"]["digest"] == json.loads(busybox.manifest)["config"]["digest"]
    assert done.chain_id
    try:
        out = ok(ctr(daemon, "run", "--rm", ref, "skopeo-pulled", "echo", "hello from the registry"))
        assert out.strip() == "hello from the registry"
    finally:
        remove_everything(daemon)


async def test_ctr_pulls_and_pushes_through_dockyardd(daemon: DaemonProcess, client: Client,
                                                      registry: RegistryProcess, busybox: Image,
                                                      tmp_path: Path) -> None:
    src = f"{registry.host}/skopeo/busybox:1"
    skopeo_push(tmp_path, busybox, src)
    out = ok(ctr(daemon, "images", "pull", "--plain-http", src, timeout=120))
    assert "done" in out
    assert src in ok(ctr(daemon, "images", "ls", "-q")).split()
    # what ctr pulled is an ordinary image here: our check agrees, and dock can push it
    [check] = await client.transfer.check([src])
    assert check.complete and check.unpacked
    dst = f"{registry.host}/ctr/busybox:2"
    ok(ctr(daemon, "images", "push", "--plain-http", dst, src, timeout=120))
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dst}"))
    assert inspected["Digest"] == check.target.digest

    # and what dockyardd pulls, ctr pushes (and the other way round)
    await client.images.delete(src, sync=True)
    await client.registry.pull(dst, plain_http=True)
    ok(ctr(daemon, "images", "push", "--plain-http", f"{registry.host}/ctr/again:3", dst, timeout=120))
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/ctr/again:3"))["Digest"] \
        == check.target.digest


async def test_skopeo_reads_what_dockyardd_pushed(client: Client, registry: RegistryProcess, busybox: Image,
                                                  tmp_path: Path) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    ref = f"{registry.host}/dock/busybox:1"
    await client.registry.tag("busybox", ref)
    done = await client.registry.push(ref, plain_http=True, chunk_size=256 * 1024)
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
    assert inspected["Digest"] == done.target.digest == busybox.manifest_digest
    assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"
    assert inspected["Layers"] == [d["digest"] for d in json.loads(busybox.manifest)["layers"]]
    out = tmp_path / "copy"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:copy")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == busybox.manifest_digest
    for digest, blob in busybox.blobs.items():
        assert (out / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes() == blob
