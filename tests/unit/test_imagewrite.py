"""The image writer commit and the builder share (supervisor/build/imagewrite.py), over a real
metadata database and content store in a temp dir: config, manifest, gc labels and the record."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    Compression,
    Descriptor,
    Manifest,
    default_platform,
    parse_config,
    parse_manifest,
)
from supervisor.build.imagewrite import BaseImage, History, ImageWriter, Layer, Step, docker_layers, rfc3339
from supervisor.content.local import LocalContentStore
from supervisor.differ import Differ
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.images import ImageStore
from supervisor.metadata.leases import LeaseStore

NS = "default"
WHEN = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[ImageWriter]:
    db = await Database.open(tmp_path / "metadata.db")
    try:
        content = NamespacedContentStore(db, LocalContentStore(tmp_path / "content"))
        await LeaseStore(db).create(NS, "job", {})
        yield ImageWriter(content, ImageStore(db), Differ(content, tmp_path / "tmp"))
    finally:
        await db.close()


def layer_tar(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


async def a_layer(w: ImageWriter, name: str, media_type: str = MEDIA_TYPE_OCI_LAYER_GZIP) -> Layer:
    raw = layer_tar(name)
    blob = gzip.compress(raw, mtime=0)
    digest = await w.put(NS, blob, "job")
    return Layer(Descriptor(media_type, digest, len(blob)), "sha256:" + hashlib.sha256(raw).hexdigest())


async def read_json(w: ImageWriter, digest: str) -> Any:
    reader = await w.content.reader(NS, digest)
    try:
        return json.loads(await reader.read_at(0, reader.size))
    finally:
        await reader.close()


async def base_image(w: ImageWriter, docker: bool) -> BaseImage:
    layer = await a_layer(w, "base", MEDIA_TYPE_DOCKER_LAYER if docker else MEDIA_TYPE_OCI_LAYER_GZIP)
    raw = {"architecture": "amd64", "os": "linux", "author": "someone", "container": "abc",
           "container_config": {"Cmd": ["x"]}, "config": {"Env": ["A=1"]},
           "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
           "history": [{"created_by": "base layer"}]}
    data = json.dumps(raw).encode()
    config = parse_config(data)
    kind = MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
    config_desc = Descriptor(MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG,
                             await w.put(NS, data, "job"), len(data))
    return BaseImage(Manifest(kind, config_desc, [layer.descriptor]), config)


async def test_scratch_with_a_config_only_step_and_a_layer(writer: ImageWriter) -> None:
    layer = await a_layer(writer, "file")
    steps = [Step(History(created_by="ENV A=1")), Step(History(created_by="COPY file /", comment="c"), layer)]
    written = await writer.write(NS, "docker.io/library/made:1", None, steps, {"Env": ["A=1"]}, "job",
                                 author="me", created=WHEN)
    assert written.created and written.target.media_type == MEDIA_TYPE_OCI_MANIFEST
    manifest = parse_manifest(json.dumps(await read_json(writer, written.target.digest)).encode())
    assert manifest.config.digest == written.config.digest and manifest.config.media_type == MEDIA_TYPE_OCI_CONFIG
    assert [d.digest for d in manifest.layers] == [layer.descriptor.digest]
    config = await read_json(writer, written.config.digest)
    assert config == {
        **default_platform().to_json(), "created": "2026-01-02T03:04:05.6Z", "author": "me",
        "config": {"Env": ["A=1"]}, "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2026-01-02T03:04:05.6Z", "created_by": "ENV A=1", "empty_layer": True},
                    {"created": "2026-01-02T03:04:05.6Z", "created_by": "COPY file /", "comment": "c"}]}
    labels = (await writer.content.info(NS, written.target.digest)).labels
    assert labels == {"containerd.io/gc.ref.content.config": written.config.digest,
                      "containerd.io/gc.ref.content.l.0": layer.descriptor.digest}
    record = await writer.images.get(NS, "docker.io/library/made:1")
    assert record.target.digest == written.target.digest

    again = await writer.write(NS, "docker.io/library/made:1", None, steps, {"Env": ["A=2"]}, "job", created=WHEN)
    assert not again.created and again.target.digest != written.target.digest
    assert (await writer.images.get(NS, "docker.io/library/made:1")).target.digest == again.target.digest


@pytest.mark.parametrize("docker", [False, True])
async def test_a_base_grows_by_one_in_its_own_family(writer: ImageWriter, docker: bool) -> None:
    base = await base_image(writer, docker)
    assert docker_layers(base, Compression.GZIP) is docker and not docker_layers(base, Compression.ZSTD)
    layer = await a_layer(writer, "new", MEDIA_TYPE_DOCKER_LAYER_GZIP if docker else MEDIA_TYPE_OCI_LAYER_GZIP)
    written = await writer.write(NS, "docker.io/library/grown:1", base, [Step(History(created_by="x"), layer)],
                                 {"Env": ["A=1"], "Cmd": ["sh"]}, "job", created=WHEN)
    manifest = await read_json(writer, written.target.digest)
    assert manifest["mediaType"] == (MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST)
    assert manifest["config"]["mediaType"] == (MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG)
    assert [la["digest"] for la in manifest["layers"]] == [*(d.digest for d in base.manifest.layers),
                                                           layer.descriptor.digest]
    config = await read_json(writer, written.config.digest)
    assert config["rootfs"]["diff_ids"] == [*base.config.diff_ids, layer.diff_id]
    assert [h["created_by"] for h in config["history"]] == ["base layer", "x"]
    # The base's author and the fields about the container that made it are not the new image's.
    assert "author" not in config and "container" not in config and "container_config" not in config
    assert config["architecture"] == "amd64" and config["config"] == {"Env": ["A=1"], "Cmd": ["sh"]}


async def test_zstd_makes_a_docker_base_oci(writer: ImageWriter) -> None:
    base = await base_image(writer, docker=True)
    layer = await a_layer(writer, "new", MEDIA_TYPE_OCI_LAYER_ZSTD)  # the media type is what counts here
    written = await writer.write(NS, "docker.io/library/zstd:1", base, [Step(History(), layer)], {}, "job")
    manifest = await read_json(writer, written.target.digest)
    assert manifest["mediaType"] == MEDIA_TYPE_OCI_MANIFEST
    assert manifest["config"]["mediaType"] == MEDIA_TYPE_OCI_CONFIG
    assert [la["mediaType"] for la in manifest["layers"]] == [MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_ZSTD]


async def test_a_bad_name_writes_nothing(writer: ImageWriter) -> None:
    before = [i.digest for i in await writer.content.list(NS)]
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        await writer.write(NS, "Bad Name", None, [Step(History())], {}, "job")
    assert [i.digest for i in await writer.content.list(NS)] == before
    assert await writer.images.list(NS) == []


async def test_a_blob_without_its_diff_id_label_is_hashed(writer: ImageWriter) -> None:
    layer = await a_layer(writer, "unlabelled")
    assert await writer._diff_id(NS, layer.descriptor) == layer.diff_id
    labels = (await writer.content.info(NS, layer.descriptor.digest)).labels
    assert labels["containerd.io/uncompressed"] == layer.diff_id


def test_rfc3339() -> None:
    assert rfc3339(WHEN) == "2026-01-02T03:04:05.6Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    assert rfc3339(datetime(2026, 1, 2, 5, 4, 5, 1, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-01-02T03:04:05.000001Z"
