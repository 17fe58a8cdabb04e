"""A full disk under the snapshotter while a layer is applied: a clear RESOURCE_EXHAUSTED,
no half-made snapshot, nothing left mounted, the daemon keeps serving, and the same unpack
succeeds once there is room."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.transfer import ImportResult
from dockyard_common.errors import ResourceExhausted
from tests.conformance.mounts import mounts_under, unmount
from tests.daemon import reap_leftovers, start_daemon
from tests.images import Image, busybox_image, oci_archive

pytestmark = pytest.mark.root
NAME = "docker.io/library/busybox:latest"


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image(NAME)


@pytest.fixture
def small_snapshots() -> Iterator[Path]:
    """A daemon base whose overlayfs snapshotter lives on a 1 MiB tmpfs (busybox needs ~2 MiB)."""
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    snapdir = base / "root" / "snapshots" / "overlayfs"
    snapdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "dy-full", str(snapdir)], check=True)
    try:
        yield base
    finally:
        for point in sorted(mounts_under(str(base)), reverse=True):
            unmount(point)
        shutil.rmtree(base, ignore_errors=True)


async def test_unpack_onto_a_full_disk(small_snapshots: Path, busybox: Image) -> None:
    d = start_daemon(base=small_snapshots)
    try:
        async with d.client() as c:
            with pytest.raises(ResourceExhausted, match=r"(?i)bin/busybox.*no space left on device"):
                await c.transfer.import_archive(oci_archive([busybox]), unpack=True)
            # nothing half-made: no snapshot, no extraction mount, no image record
            assert await c.snapshots.all() == []
            assert mounts_under(str(small_snapshots / "root" / "snapshots" / "overlayfs")) == [
                str(small_snapshots / "root" / "snapshots" / "overlayfs")]
            assert await c.images.list() == []
            assert (await c.version()).version  # still serving

            subprocess.run(["mount", "-o", "remount,size=64m", str(small_snapshots / "root/snapshots/overlayfs")],
                           check=True)
            result = await c.transfer.import_archive(oci_archive([busybox]), unpack=True)
            assert isinstance(result, ImportResult) and [i.name for i in result.images] == [NAME]
            [snap] = await c.snapshots.all()
            assert snap.kind.name == "COMMITTED"
    finally:
        d.stop()
        reap_leftovers(small_snapshots)  # the fixture unmounts the tmpfs and removes the base
