"""The Kubernetes CRI on dockyardd's socket, driven by the real `crictl`: Version, Status, and the
ImageService (list, status, pull from a docker-registry on 127.0.0.1, remove, image fs info),
in the CRI namespace `k8s.io`; bad input gets the CRI's answers, never a traceback."""

from __future__ import annotations

import base64
import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from dockyard_common.version import VERSION
from tests.ctr import ctr, ok
from tests.daemon import DaemonProcess
from tests.images import Image, busybox_image, oci_archive, sha256
from tests.registry import RegistryProcess, push_blobs, push_manifest, start_registry

pytestmark = pytest.mark.root

CRICTL = "/work/shared/tools/cri/crictl"
CRI_NS = "k8s.io"


def crictl(d: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    endpoint = f"unix://{d.address}"
    # An empty config file of our own: never the machine's /etc/crictl.yaml.
    with tempfile.NamedTemporaryFile("w", prefix="dy-crictl-", suffix=".yaml") as config:
        return subprocess.run([CRICTL, "--config", config.name, "--runtime-endpoint", endpoint,
                               "--image-endpoint", endpoint, "--timeout", "30s", *args],
                              capture_output=True, text=True, timeout=timeout)


def crictl_json(d: DaemonProcess, *args: str) -> Any:
    # crictl reads flags only before the positional arguments
    return json.loads(ok(crictl(d, args[0], "-o", "json", *args[1:])))


def failed(res: subprocess.CompletedProcess[str]) -> str:
    """The message of a crictl command that must fail cleanly."""
    assert res.returncode != 0, f"{res.args} succeeded:\n{res.stdout}"
    assert "Traceback" not in res.stderr and "Error(" not in res.stderr, res.stderr
    return res.stderr


def config_digest(img: Image) -> str:
    return str(json.loads(img.manifest)["config"]["digest"])


def publish(reg: RegistryProcess, repo: str, tag: str, img: Image) -> None:
    push_blobs(reg.url, repo, {d: b for d, b in img.blobs.items() if d != img.manifest_digest})
    push_manifest(reg.url, repo, tag, img.manifest, "application/vnd.oci.image.manifest.v1+json")


def import_image(d: DaemonProcess, img: Image, namespace: str = CRI_NS) -> None:
    with tempfile.TemporaryDirectory(prefix="dy-cri-") as tmp:
        archive = Path(tmp) / "image.tar"
        archive.write_bytes(oci_archive([img]))
        ok(ctr(d, "images", "import", str(archive), namespace=namespace))


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("docker.io/library/busybox:1.36", config={"User": "1000:50000"})


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


def test_version_and_status(daemon: DaemonProcess) -> None:
    out = ok(crictl(daemon, "version"))
    assert "RuntimeName:  dockyard" in out, out
    assert f"RuntimeVersion:  {VERSION}" in out, out
    assert "RuntimeApiVersion:  v1" in out, out

    conditions = {c["type"]: c for c in crictl_json(daemon, "info")["status"]["conditions"]}
    assert conditions["RuntimeReady"]["status"] is True
    network = conditions["NetworkReady"]
    assert isinstance(network["status"], bool)
    if not network["status"]:
        assert network["reason"] == "NetworkPluginNotReady" and "CNI plugins" in network["message"]


async def test_calls_not_served_yet_say_so(daemon: DaemonProcess) -> None:
    message = failed(crictl(daemon, "checkpoint", "--export", "/nonexistent/checkpoint.tar", "0123abcd"))
    assert "Unimplemented" in message
    assert "runtime.v1.RuntimeService/CheckpointContainer is not implemented" in message
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:  # a streaming call, likewise
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in api_pb2_grpc.RuntimeServiceStub(ch).GetContainerEvents(api_pb2.GetEventsRequest()):
                pass
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "runtime.v1.RuntimeService/GetContainerEvents is not implemented" in (err.value.details() or "")


def test_images_lists_the_cri_namespace_only(daemon: DaemonProcess, busybox: Image) -> None:
    assert crictl_json(daemon, "images")["images"] == []
    import_image(daemon, busybox_image("docker.io/library/elsewhere:1"), namespace="default")
    import_image(daemon, busybox)

    images = crictl_json(daemon, "images")["images"]
    assert len(images) == 1, images
    image = images[0]
    assert image["id"] == config_digest(busybox)
    assert image["repoTags"] == ["docker.io/library/busybox:1.36"]
    assert image["repoDigests"] == [f"docker.io/library/busybox@{busybox.manifest_digest}"]
    assert int(image["size"]) == len(busybox.manifest) + len(busybox.config) + sum(map(len, busybox.layers))
    assert image["uid"] == {"value": "1000"} and image["username"] == ""

    # crictl's filter is a reference kubelet would write: familiar, by digest, or the ID
    for ref in ["busybox:1.36", f"busybox@{busybox.manifest_digest}", config_digest(busybox)]:
        found = crictl_json(daemon, "images", ref)["images"]
        assert [i["id"] for i in found] == [config_digest(busybox)], ref
    assert ok(crictl(daemon, "images", "-q", "busybox:other")).split() == []

    status = crictl_json(daemon, "inspecti", "busybox:1.36")
    assert status["status"]["id"] == config_digest(busybox)
    assert status["info"]["config"]["User"] == "1000:50000"  # verbose: the image config

    ok(crictl(daemon, "rmi", config_digest(busybox)))
    assert crictl_json(daemon, "images")["images"] == []
    assert ok(ctr(daemon, "images", "ls", "-q", namespace=CRI_NS)).split() == []
    # another namespace's image is not the CRI's to remove
    assert "docker.io/library/elsewhere:1" in ok(ctr(daemon, "images", "ls", "-q"))


def test_pull_inspect_remove_from_a_registry(daemon: DaemonProcess, registry: RegistryProcess,
                                             busybox: Image) -> None:
    publish(registry, "cri/busybox", "1", busybox)
    ref = f"{registry.host}/cri/busybox:1"
    out = ok(crictl(daemon, "pull", ref))
    assert config_digest(busybox) in out, out

    image = crictl_json(daemon, "inspecti", ref)["status"]
    assert image["id"] == config_digest(busybox)
    assert image["repoTags"] == [ref]
    by_digest = f"{registry.host}/cri/busybox@{busybox.manifest_digest}"
    assert image["repoDigests"] == [by_digest]
    # unpacked for the default snapshotter, as kubelet's next CreateContainer expects
    names = ok(ctr(daemon, "images", "ls", "-q", namespace=CRI_NS)).split()
    assert sorted(names) == sorted([ref, by_digest])
    chain = ok(ctr(daemon, "snapshots", "ls", namespace=CRI_NS))
    assert "Committed" in chain, chain

    [fs] = crictl_json(daemon, "imagefsinfo")["status"]["imageFilesystems"]
    assert fs["fsId"]["mountpoint"] == str(daemon.root / "snapshots" / "overlayfs")
    assert int(fs["usedBytes"]["value"]) >= sum(len(t) for t in busybox.layer_tars) // 2
    assert int(fs["inodesUsed"]["value"]) > 10

    # pulling again answers the same ID and keeps one image
    assert config_digest(busybox) in ok(crictl(daemon, "pull", ref))
    assert len(crictl_json(daemon, "images")["images"]) == 1

    ok(crictl(daemon, "rmi", by_digest))
    assert crictl_json(daemon, "images")["images"] == []
    assert ok(ctr(daemon, "images", "ls", "-q", namespace=CRI_NS)).split() == []


def test_pull_with_credentials_from_the_request(daemon: DaemonProcess, busybox: Image) -> None:
    with start_registry(auth="htpasswd", users={"alice": "s3cret"}) as reg:
        basic = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
        push_blobs(reg.url, "cri/private", {d: b for d, b in busybox.blobs.items() if d != busybox.manifest_digest},
                   basic)
        push_manifest(reg.url, "cri/private", "1", busybox.manifest, "application/vnd.oci.image.manifest.v1+json",
                      basic)
        ref = f"{reg.host}/cri/private:1"
        message = failed(crictl(daemon, "pull", ref))
        assert "requires a username and password" in message, message
        assert "s3cret" not in message
        assert config_digest(busybox) in ok(crictl(daemon, "pull", "--creds", "alice:s3cret", ref))
        assert crictl_json(daemon, "images", ref)["images"][0]["id"] == config_digest(busybox)


def test_bad_input_gets_cri_answers(daemon: DaemonProcess, registry: RegistryProcess, busybox: Image) -> None:
    import_image(daemon, busybox)
    # No such image: ImageStatus answers an empty status, which crictl reports as NotFound-like
    assert "no such image" in failed(crictl(daemon, "inspecti", "docker.io/library/nothing:1")).lower()
    assert "no such image" in failed(crictl(daemon, "rmi", "nothing:1")).lower()
    message = failed(crictl(daemon, "pull", f"{registry.host}/cri/missing:1"))
    assert "NotFound" in message, message
    # A malformed reference is InvalidArgument naming it
    for bad in ["Bad/UPPER:1", "busybox:-x", "busybox@sha256:12"]:
        message = failed(crictl(daemon, "pull", bad))
        assert "InvalidArgument" in message and "image reference" in message, message
    message = failed(crictl(daemon, "inspecti", "busybox:-x"))
    assert "InvalidArgument" in message, message
    # nothing was lost on the way
    assert [i["id"] for i in crictl_json(daemon, "images")["images"]] == [config_digest(busybox)]
    assert sha256(busybox.config) == config_digest(busybox)
