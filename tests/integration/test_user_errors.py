"""What users see when what they point the daemon at is broken: one clear line, never a traceback.

- images whose config has fields of the wrong JSON type (made through the content API and
  Images/Create, as any client could): `dock images inspect`, `dock run`, `dock images unpack`
  refuse them naming the field; `dock images ls` still lists them;
- names no reference grammar reads: Images/Create and Update, the daemon's import (index
  annotations, docker RepoTags) and `dock images tag` refuse them naming the name, storing nothing;
- a layer with a device entry the kernel cannot take: the unpack names the entry and why.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dock.client import Client
from dock.images import OCI_MANIFEST, Descriptor, ImageInfo
from dockyard_api.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_common.errors import InvalidArgument
from tests.daemon import DaemonProcess
from tests.images import OCI_CONFIG, OCI_LAYER_GZIP, Image, build_image, busybox_image, docker_archive, oci_archive
from tests.integration.test_cli import dock

pytestmark = [pytest.mark.root]

PYTHON_WORDS = ("Traceback", "Error:", "Error(", "Exception", "object has no attribute", "NoneType",
                "Python", "C int", "not subscriptable", "not iterable")


def one_clean_line(res: Any, *words: str) -> str:
    """A failed command's stderr: one line starting "dock: ", with `words`, without Python's words."""
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dock: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    for w in PYTHON_WORDS:
        assert w not in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("docker.io/library/busybox:latest")


# --- image configs of the wrong shape --------------------------------------------------------

BAD_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "env": ({"run": {"Env": "x"}}, "'config.Env' must be an array of strings"),
    "cmd": ({"run": {"Cmd": 5}}, "'config.Cmd' must be an array of strings"),
    "config": ({"config": []}, "config: expected a JSON object"),
    "ports": ({"run": {"ExposedPorts": ["80/tcp"]}}, "'config.ExposedPorts' must be an object of objects"),
    "labels": ({"run": {"Labels": "s"}}, "'config.Labels' must be an object of strings"),
    "history": ({"history": ["a", "b"]}, "history[0]: expected a JSON object"),
    "diffids": ({"rootfs": {"type": "layers", "diff_ids": "x"}}, "field 'diff_ids' must be an array"),
    "user": ({"run": {"User": 0}}, "'config.User' must be a string"),
    "created": ({"created": 1700000000}, "field 'created' must be a string"),
    "workdir": ({"run": {"WorkingDir": 7}}, "'config.WorkingDir' must be a string"),
}


def bad_config(good: bytes, over: dict[str, Any]) -> bytes:
    doc = json.loads(good)
    run = over.get("run")
    if run:
        doc["config"].update(run)
    doc.update({k: v for k, v in over.items() if k != "run"})
    return json.dumps(doc).encode()


async def store_image(c: Client, lease: str, name: str, base: Image, config: bytes) -> None:
    """The blobs of an image with `config` in place of base's, and its record, as a client
    that skips every check would make them (content API, then Images/Create)."""
    content = c.content.with_lease(lease)
    layer = base.layers[0]
    layer_digest = (await content.write(f"layer-{name}", layer)).digest
    cfg = await content.write(f"config-{name}", config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg.digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
    }).encode()
    labels = {"containerd.io/gc.ref.content.config": cfg.digest, "containerd.io/gc.ref.content.l.0": layer_digest}
    m = await content.write(f"manifest-{name}", manifest, labels=labels)
    await c.images.create(name, Descriptor(OCI_MANIFEST, m.digest, len(manifest)))


@pytest.fixture
async def bad_images(daemon: DaemonProcess, busybox: Image) -> AsyncIterator[dict[str, str]]:
    async with daemon.client() as c:
        lease = await c.leases.create()
        names = {}
        for key, (over, _words) in BAD_CONFIGS.items():
            names[key] = f"bad/{key}:1"
            await store_image(c, lease.id, names[key], busybox, bad_config(busybox.config, over))
        await store_image(c, lease.id, "good/busybox:1", busybox, busybox.config)
        yield names


async def test_images_with_wrong_config_types_fail_in_words(daemon: DaemonProcess,
                                                             bad_images: dict[str, str]) -> None:
    a = daemon.address
    listed = dock(a, "images", "ls", "-q")
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted([*bad_images.values(), "good/busybox:1"])
    assert dock(a, "--format", "json", "images", "ls").returncode == 0
    good = dock(a, "images", "inspect", "good/busybox:1")
    assert good.returncode == 0 and "Cmd" in good.stdout, good.stderr
    for key, name in bad_images.items():
        words = BAD_CONFIGS[key][1]
        for fmt in ("table", "json"):
            res = dock(a, "--format", fmt, "images", "inspect", name)
            line = one_clean_line(res, words, "image config")
            assert line.endswith(": invalid argument"), line
        one_clean_line(dock(a, "images", "unpack", name), words)
        one_clean_line(dock(a, "run", "--rm", "--name", f"c-{key}", name, "true"), words)
        check = dock(a, "images", "check", name)
        assert check.returncode == 1 and words in check.stdout and "Traceback" not in check.stderr
    # nothing of a refused run stays behind
    async with daemon.client() as c:
        assert await c.containers.list() == []


# --- names no reference grammar reads ---------------------------------------------------------

BAD_NAMES = ["../../etc/passwd", "/abs/path:1", "a%2fb:1", "x/../y", "MyApp:1", "a b", "a\nb", "a\x01b",
             "x" * 3000, "a:b:c", "a//b"]


def _target() -> Descriptor:
    return Descriptor(OCI_MANIFEST, "sha256:" + "1" * 64, 528)


async def test_create_and_update_refuse_bad_names(client: Client) -> None:
    await client.images.create("ok/name:1", _target())
    for name in BAD_NAMES:
        with pytest.raises(InvalidArgument) as info:
            await client.images.create(name, _target())
        message = str(info.value)
        assert message.startswith('image name "') and len(message) < 500, message
        if name.isprintable():
            assert name[:40] in message
        with pytest.raises(InvalidArgument):
            await client.images.set_labels(name, {"a": "b"})
        with pytest.raises(InvalidArgument):
            await client.images.update(ImageInfo(name, _target()))
    assert [i.name for i in await client.images.list()] == ["ok/name:1"]


async def test_raw_grpc_create_names_the_name(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix://{daemon.address}") as ch:
        stub = images_pb2_grpc.ImagesStub(ch)
        md = (("containerd-namespace", "default"),)
        img = images_pb2.Image(name="a/../b", target=descriptor_pb2.Descriptor(
            media_type=OCI_MANIFEST, digest="sha256:" + "1" * 64, size=1))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Create(images_pb2.CreateImageRequest(image=img), metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith('image name "a/../b": invalid reference format')


@pytest.mark.parametrize("kind", ["oci", "docker"])
async def test_daemon_import_refuses_bad_names_and_stores_none(daemon: DaemonProcess, tmp_path: Path,
                                                               busybox: Image, kind: str) -> None:
    a = daemon.address
    for i, name in enumerate(["../../x:1", "ok/UPPER:1", "a%2fb:1", "y" * 600 + ":1"]):
        img = Image(name, busybox.manifest, busybox.config, busybox.layers, busybox.blobs, busybox.layer_tars)
        archive = tmp_path / f"{kind}-{i}.tar"
        if kind == "oci":
            archive.write_bytes(oci_archive([img]))
        else:
            archive.write_bytes(_docker_archive_named(busybox, name))
        res = dock(a, "images", "import", "-q", str(archive))
        line = one_clean_line(res, "invalid argument")
        assert "image name" in line or "RepoTag" in line, line
        assert len(line) < 600
    assert dock(a, "images", "ls", "-q").stdout == ""


def _docker_archive_named(img: Image, tag: str) -> bytes:
    """A `docker save` tar of img whose RepoTags hold `tag` exactly as given."""
    data = docker_archive([img])
    src = tarfile.open(fileobj=io.BytesIO(data))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            f = src.extractfile(member) if member.isreg() else None
            body = f.read() if f is not None else b""
            if member.name == "manifest.json":
                doc = json.loads(body)
                for entry in doc:
                    entry["RepoTags"] = [tag]
                body = json.dumps(doc).encode()
                member.size = len(body)
            dst.addfile(member, io.BytesIO(body) if member.isreg() else None)
    return out.getvalue()


def test_dock_tag_refuses_bad_targets(daemon: DaemonProcess, busybox: Image, tmp_path: Path) -> None:
    a = daemon.address
    archive = tmp_path / "bb.tar"
    archive.write_bytes(oci_archive([busybox]))
    assert dock(a, "images", "import", "-q", str(archive)).returncode == 0
    for target in ["../x", "a%2fb", "Bad:Name", "x" * 2000, "a\x01b"]:
        one_clean_line(dock(a, "images", "tag", "busybox", target), "invalid argument")
    assert dock(a, "images", "ls", "-q").stdout.split() == ["docker.io/library/busybox:latest"]


# --- a layer the kernel cannot take ----------------------------------------------------------------


def test_a_device_out_of_range_is_named_by_the_unpack(daemon: DaemonProcess, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("dev")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        dev = tarfile.TarInfo("dev/evil")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1 << 40, 3
        tf.addfile(dev)
    img = build_image("docker.io/library/devices:1", [buf.getvalue()])
    assert gzip.decompress(img.layers[0]) == buf.getvalue()
    archive = tmp_path / "dev.tar"
    archive.write_bytes(oci_archive([img]))
    a = daemon.address
    res = dock(a, "images", "import", "--unpack", "-q", str(archive))
    one_clean_line(res, "'dev/evil'", "device number", "out of range")
    assert dock(a, "images", "import", "-q", str(archive)).returncode == 0  # stored, not unpacked
    res = dock(a, "images", "unpack", "docker.io/library/devices:1")
    one_clean_line(res, "'dev/evil'", "device number", "out of range")
    res = dock(a, "run", "--rm", "--name", "dev1", "docker.io/library/devices:1", "true")
    one_clean_line(res, "'dev/evil'", "device number", "out of range")
