"""Diff.Apply and Diff.Diff take only the mounts this daemon's snapshotters hand out
(supervisor/differ.py, "Which mounts"): a gRPC client's overlay upperdir, workdir or lowerdir, or
bind source, elsewhere on the host made the daemon write a layer there (Apply) or read a host
tree into a blob the client then reads (Diff). Those are InvalidArgument and the host paths stay
as they were; the mounts Prepare, View and Mounts return — overlay, bind, native, and an overlay
chain long enough to go through the overlay snapshotter's /run/dy short link — still work.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from dockyard_common.types import Mount
from tests.daemon import DaemonProcess, traceback_free_daemon
from tests.unit.archive_fixtures import build_tar, file, gzip_compress

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LEASE = "diff-confined"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        yield d


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    async with daemon.client() as c:
        if LEASE not in {lease.id for lease in await c.leases.list()}:
            await c.leases.create(LEASE)
        c.lease = LEASE
        yield c


@pytest.fixture
def victim() -> Iterator[Path]:
    """A host directory the daemon did not make, with a secret in it."""
    path = Path(tempfile.mkdtemp(prefix="dy-victim-"))
    for sub in ("up", "work", "low", "bind"):
        (path / sub).mkdir()
    (path / "low" / "secret.txt").write_text("HOST SECRET\n")
    (path / "bind" / "secret.txt").write_text("HOST SECRET\n")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


async def put_layer(c: Client, name: str) -> Descriptor:
    blob = gzip_compress(build_tar([file(name, b"written by the layer\n")]))
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    await c.content.write(f"layer-{digest}", blob, expected=digest)
    return Descriptor(GZIP_LAYER, digest, len(blob))


def option(mounts: list[Mount], key: str) -> str:
    return next(o.partition("=")[2] for o in mounts[0].options if o.startswith(key + "="))


async def test_apply_onto_host_paths_is_refused(client: Client, victim: Path) -> None:
    snaps = client.snapshots.using("overlayfs")
    layer = await put_layer(client, "pwned")
    await client.diff.apply(layer, await snaps.prepare("confined-base"))
    await snaps.commit("confined-base-c", "confined-base")
    good = await snaps.prepare("confined-work", "confined-base-c")
    lower, up, work = option(good, "lowerdir"), option(good, "upperdir"), option(good, "workdir")
    link = victim / "link"
    os.symlink(Path(up).parent.parent, link)
    before = tree(victim)
    hostile = [
        ("overlay upperdir", Mount("overlay", "overlay", "", ["index=off", f"workdir={work}",
                                                              f"upperdir={victim}/up", f"lowerdir={lower}"])),
        ("overlay workdir", Mount("overlay", "overlay", "", ["index=off", f"workdir={victim}/work",
                                                             f"upperdir={up}", f"lowerdir={lower}"])),
        ("are not allowed", Mount("overlay", "overlay", "", [f"index=off,workdir={victim}/work,upperdir={victim}/up",
                                                             f"lowerdir={lower}"])),
        ("bind source", Mount("bind", f"{victim}/up", "", ["rbind", "rw"])),
        ("bind source", Mount("bind", f"{up}/../../../../../../../..{victim}/up", "", ["rbind", "rw"])),
        ("bind source", Mount("bind", f"{link}/{Path(up).parent.name}/fs", "", ["rbind", "rw"])),  # a caller's link
        ("mount type 'tmpfs'", Mount("tmpfs", "tmpfs", "", [])),
    ]
    for words, mount in hostile:
        with pytest.raises(InvalidArgument) as err:
            await client.diff.apply(layer, [mount])
        assert err.value.message.startswith("apply: mounts: ") and words in err.value.message, err.value.message
        assert tree(victim) == before, f"{mount}: the layer was written on the host"
    # the snapshot's own mounts, and the short link's
    await client.diff.apply(layer, good)
    assert (Path(up) / "pwned").read_bytes() == b"written by the layer\n"


async def test_diff_of_host_paths_is_refused(client: Client, victim: Path) -> None:
    """Diff.Diff read any tree the client named into a blob the client could read."""
    snaps = client.snapshots.using("native")
    await client.diff.apply(await put_layer(client, "base"), await snaps.prepare("native-base"))
    await snaps.commit("native-base-c", "native-base")
    work = await snaps.prepare("native-work", "native-base-c")
    view = await snaps.view("native-view", "native-base-c")
    for words, lower, upper in (
            ("bind source", [], [Mount("bind", f"{victim}/bind", "", ["ro", "rbind"])]),
            ("overlay lowerdir", [], [Mount("overlay", "overlay", "", [f"lowerdir={victim}/low"])]),
            ("bind source", [Mount("bind", f"{victim}/low", "", ["ro", "rbind"])], work)):
        with pytest.raises(InvalidArgument) as err:
            await client.diff.diff(lower, upper)
        assert words in err.value.message, err.value.message
    desc = await client.diff.diff(view, work)  # the snapshotter's own mounts
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(await client.content.read_all(desc.digest)))) as tf:
        assert tf.getnames() == []


async def test_mounts_through_the_short_link_are_taken(client: Client) -> None:
    """A chain whose lowerdir list does not fit in a page is mounted through /run/dy/<tag>: those
    are this daemon's snapshots too."""
    snaps = client.snapshots.using("overlayfs")
    parent = ""
    for i in range(150):
        key = f"chain-{i}"
        mounts = await snaps.prepare(key, parent)
        if any("/run/dy/" in o for o in mounts[0].options):
            break
        await client.diff.apply(await put_layer(client, f"layer-{i}"), mounts)
        await snaps.commit(f"chain-c-{i}", key)
        parent = f"chain-c-{i}"
    else:
        pytest.fail("the chain never went through the short link")
    applied = await client.diff.apply(await put_layer(client, "top"), mounts)
    assert applied.size > 0
    view = await snaps.view("chain-view", parent)
    desc = await client.diff.diff(view, mounts)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(await client.content.read_all(desc.digest)))) as tf:
        assert tf.getnames() == ["top"]
