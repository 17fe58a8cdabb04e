"""Diff service: layers applied onto real snapshots and computed back from them."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor
from tests.conformance.mounts import mount_all, unmount
from tests.daemon import DaemonProcess
from tests.unit.archive_fixtures import build_tar, directory, file, gzip_compress, symlink, whiteout

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SNAPSHOTTERS = ["overlayfs", "native"]


LEASE = "diff-test"


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    """A client whose writes all happen under one lease, so the collector keeps them."""
    async with daemon.client() as c:
        await c.leases.create(LEASE)
        c.lease = LEASE  # diff output too, not only what the test writes itself
        yield c


async def put_layer(client: Client, tar: bytes, compress: bool = True) -> tuple[Descriptor, str]:
    blob = gzip_compress(tar) if compress else tar
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    await client.content.write(f"layer-{digest}", blob, expected=digest)
    media = GZIP_LAYER if compress else "application/vnd.oci.image.layer.v1.tar"
    return Descriptor(media, digest, len(blob)), "sha256:" + hashlib.sha256(tar).hexdigest()


@pytest.fixture
def mountpoint() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dy-mnt-"))
    try:
        yield path
    finally:
        unmount(str(path))
        os.rmdir(path)


LAYER1 = [directory("etc"), file("etc/hostname", b"one\n"), file("etc/gone", b"x"), directory("bin"),
          file("bin/tool", b"#!/bin/sh\n", mode=0o755), symlink("bin/link", "tool")]
LAYER2 = [whiteout("etc/gone"), file("etc/new", b"two\n"), file("etc/hostname", b"changed\n")]


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
async def test_apply_chain_then_view(client: Client, snapshotter: str, mountpoint: Path) -> None:
    snaps = client.snapshots.using(snapshotter)
    l1, diff_id1 = await put_layer(client, build_tar(LAYER1))
    applied = await client.diff.apply(l1, await snaps.prepare("extract-1 sha256:x"))
    assert applied == Descriptor("application/vnd.oci.image.layer.v1.tar", diff_id1, applied.size)
    await snaps.commit("c1", "extract-1 sha256:x")
    l2, diff_id2 = await put_layer(client, build_tar(LAYER2))
    assert (await client.diff.apply(l2, await snaps.prepare("extract-2", "c1"))).digest == diff_id2
    await snaps.commit("c2", "extract-2")
    mount_all(await snaps.view("v", "c2"), str(mountpoint))
    assert (mountpoint / "etc/hostname").read_bytes() == b"changed\n"
    assert (mountpoint / "etc/new").read_bytes() == b"two\n"
    assert not (mountpoint / "etc/gone").exists()
    assert os.readlink(mountpoint / "bin/link") == "tool"
    assert os.stat(mountpoint / "bin/tool").st_mode & 0o777 == 0o755
    unmount(str(mountpoint))
    await snaps.remove("v")


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
async def test_diff_of_changes(client: Client, snapshotter: str, mountpoint: Path) -> None:
    snaps = client.snapshots.using(snapshotter)
    l1, _ = await put_layer(client, build_tar(LAYER1))
    await client.diff.apply(l1, await snaps.prepare("base-a"))
    await snaps.commit("base", "base-a")
    upper = await snaps.prepare("work", "base")
    mount_all(upper, str(mountpoint))
    (mountpoint / "etc/added").write_bytes(b"added\n")
    (mountpoint / "etc/gone").unlink()
    unmount(str(mountpoint))
    lower = await snaps.view("base-view", "base")
    desc = await client.diff.diff(lower, upper, labels={"made-by": "test"})
    assert desc.media_type == GZIP_LAYER
    blob = await client.content.read_all(desc.digest)
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == desc.digest and len(blob) == desc.size
    raw = gzip.decompress(blob)
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert "etc/added" in names and "etc/.wh.gone" in names and "bin/tool" not in names
    info = await client.content.info(desc.digest)
    assert info.labels["containerd.io/uncompressed"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert info.labels["made-by"] == "test"
    # applying the diff on the base gives the upper's tree back
    await client.diff.apply(desc, await snaps.prepare("replay", "base"))
    mount_all(await snaps.mounts("replay"), str(mountpoint))
    assert (mountpoint / "etc/added").read_bytes() == b"added\n" and not (mountpoint / "etc/gone").exists()


async def test_apply_bad_input(client: Client) -> None:
    target = await client.snapshots.prepare("bad")
    good, _ = await put_layer(client, build_tar(LAYER1))
    with pytest.raises(InvalidArgument, match="media type"):
        await client.diff.apply(Descriptor("application/x-unknown", good.digest, good.size), target)
    with pytest.raises(NotFound):
        await client.diff.apply(Descriptor(GZIP_LAYER, "sha256:" + "0" * 64, 10), target)
    corrupt = b"\x1f\x8b\x08" + b"\x00" * 64
    digest = "sha256:" + hashlib.sha256(corrupt).hexdigest()
    await client.content.write("corrupt", corrupt, expected=digest)
    with pytest.raises(InvalidArgument):
        await client.diff.apply(Descriptor(GZIP_LAYER, digest, len(corrupt)), target)


async def test_apply_refuses_escaping_layer(client: Client, tmp_path: Path) -> None:
    sentinel = tmp_path / "outside"
    sentinel.mkdir()
    evil, _ = await put_layer(client, build_tar([symlink("up", str(sentinel)), file("up/pwned", b"x"),
                                                  file("../../escape", b"x")]))
    with pytest.raises(InvalidArgument):
        await client.diff.apply(evil, await client.snapshots.prepare("evil"))
    assert list(sentinel.iterdir()) == []
