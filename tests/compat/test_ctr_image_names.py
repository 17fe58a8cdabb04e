"""The real `ctr` storing image names no reference grammar reads: import (index annotations,
docker RepoTags) and tag are refused with InvalidArgument naming the name, and nothing is stored.
`ctr images import` writes the content itself and calls Images/Create (after an Update that is
NotFound), so this is the daemon's Images service rule seen through containerd's own client."""

from __future__ import annotations

import io
import json
import tarfile
from functools import partial
from pathlib import Path

import pytest

from dockyard_common.reference import image_name_problem
from tests.compat.conftest import ctr as compat_ctr
from tests.compat.conftest import ok
from tests.daemon import DaemonProcess
from tests.images import Image, busybox_image, oci_archive

pytestmark = [pytest.mark.compat]

NS = "names9q"
ctr = partial(compat_ctr, namespace=NS, timeout=120)

BAD = ["../../etc/passwd:1", "/abs/path:1", "a%2fb:1", "x/../y:1", "MyApp:1", "a b:1", "q" * 3000 + ":1"]


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("docker.io/library/busybox:latest")


def _named(img: Image, name: str) -> Image:
    return Image(name, img.manifest, img.config, img.layers, img.blobs, img.layer_tars)


def _with_ref_name(archive: bytes, ref: str) -> bytes:
    """The OCI archive with only an `org.opencontainers.image.ref.name` annotation holding `ref`."""
    src = tarfile.open(fileobj=io.BytesIO(archive))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member)
            body = f.read() if f is not None else b""
            if member.name == "index.json":
                doc = json.loads(body)
                for m in doc["manifests"]:
                    m["annotations"] = {"org.opencontainers.image.ref.name": ref}
                body = json.dumps(doc).encode()
                member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    return out.getvalue()


@pytest.mark.parametrize("name", BAD)
def test_ctr_import_of_a_bad_name_is_refused(daemon: DaemonProcess, tmp_path: Path, busybox: Image,
                                             name: str) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(oci_archive([_named(busybox, name)]))
    res = ctr(daemon, "images", "import", "--no-unpack", str(archive))
    assert res.returncode != 0, res.stdout
    assert "image name" in res.stderr and "invalid argument" in res.stderr, res.stderr
    assert name[:30] in res.stderr or "\\" in res.stderr
    assert ok(ctr(daemon, "images", "ls", "-q")).split() == []


@pytest.mark.parametrize("ref", ["../evil", "/abs", "a%2fb", "UP"])
def test_ctr_import_of_bad_ref_names_stores_no_bad_name(daemon: DaemonProcess, tmp_path: Path,
                                                        busybox: Image, ref: str) -> None:
    """ctr builds `<base-name>:<ref.name>` itself (or skips a ref name it cannot read); either
    way what reaches the store is a name the grammar reads, or a refusal."""
    archive = tmp_path / "b.tar"
    archive.write_bytes(_with_ref_name(oci_archive([busybox]), ref))
    res = ctr(daemon, "images", "import", "--no-unpack", "--base-name", "example.com/base", str(archive))
    assert res.returncode == 0 or "image name" in res.stderr, res.stderr
    for name in ok(ctr(daemon, "images", "ls", "-q")).split():
        assert image_name_problem(name) is None, name


def test_ctr_tag_to_a_bad_name_is_refused(daemon: DaemonProcess, tmp_path: Path, busybox: Image) -> None:
    archive = tmp_path / "c.tar"
    archive.write_bytes(oci_archive([busybox]))
    ok(ctr(daemon, "images", "import", "--no-unpack", str(archive)))
    for target in ["../x", "a%2fb", "Bad:Name", "x" * 2000]:
        res = ctr(daemon, "images", "tag", "docker.io/library/busybox:latest", target)
        assert res.returncode != 0 and "image name" in res.stderr, res.stderr
    # the names ctr users type keep working
    ok(ctr(daemon, "images", "tag", "docker.io/library/busybox:latest", "busybox:copy", "sha256:" + "a" * 64))
    assert sorted(ok(ctr(daemon, "images", "ls", "-q")).split()) == [
        "busybox:copy", "docker.io/library/busybox:latest", "sha256:" + "a" * 64]
