"""The real `ctr images import/ls/check/tag/rm/export` and `ctr snapshots tree` with dockyardd's
image transfer: archives either side writes must import on the other, and images either side
imports must look right to the other."""

from __future__ import annotations

import json
import tarfile
import tempfile
from functools import partial
from pathlib import Path

import pytest

from tests.compat.conftest import ctr as compat_ctr
from tests.compat.conftest import ok
from tests.conformance.mounts import unmount
from tests.daemon import DaemonProcess
from tests.images import Image, busybox_image, docker_archive, multilayer_image, oci_archive

pytestmark = [pytest.mark.compat, pytest.mark.root]

NS = "tapx7"
LAYERED = "docker.io/library/layered:1"
BUSYBOX = "docker.io/library/busybox:latest"


ctr = partial(compat_ctr, namespace=NS, timeout=120)


@pytest.fixture(scope="module")
def layered() -> Image:
    return multilayer_image(LAYERED)


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image(BUSYBOX)


def check_line(daemon: DaemonProcess, name: str, namespace: str = NS) -> list[str]:
    for line in ok(ctr(daemon, "images", "check", namespace=namespace)).splitlines()[1:]:
        if line.split()[0] == name:
            return line.split()
    raise AssertionError(f"{name} not in ctr images check")


def chain_of(img: Image) -> list[str]:
    from dockyard_common.imagespec import chain_ids

    return chain_ids(json.loads(img.config)["rootfs"]["diff_ids"])


@pytest.mark.parametrize("kind", ["oci", "docker"])
async def test_ctr_imports_and_unpacks_our_archives(daemon: DaemonProcess, tmp_path: Path, layered: Image,
                                                    kind: str) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(oci_archive([layered]) if kind == "oci" else docker_archive([layered]))
    out = ok(ctr(daemon, "images", "import", str(archive)))
    assert f"unpacking {LAYERED}" in out and "done" in out
    assert ok(ctr(daemon, "images", "ls", "-q")).split() == [LAYERED]
    ls = ok(ctr(daemon, "images", "ls")).splitlines()[1]
    assert "linux/amd64" in ls
    # ctr's check reads every blob and stats the chain: complete and unpacked
    line = check_line(daemon, LAYERED)
    assert "complete" in line and line[-1] == "true"
    tree = ok(ctr(daemon, "snapshots", "tree"))
    for chain_id in chain_of(layered):
        assert chain_id in tree
    ok(ctr(daemon, "images", "tag", LAYERED, "docker.io/library/layered:copy"))
    assert sorted(ok(ctr(daemon, "images", "ls", "-q")).split()) == ["docker.io/library/layered:1",
                                                                      "docker.io/library/layered:copy"]
    ok(ctr(daemon, "images", "rm", "docker.io/library/layered:copy"))
    assert ok(ctr(daemon, "images", "ls", "-q")).split() == [LAYERED]


async def test_dock_import_is_seen_by_ctr(daemon: DaemonProcess, layered: Image, busybox: Image) -> None:
    async with daemon.client(NS) as c:
        result = await c.transfer.import_archive(docker_archive([layered, busybox]), unpack=True)
    assert sorted(i.name for i in result.images) == [BUSYBOX, LAYERED]
    for name in (BUSYBOX, LAYERED):
        line = check_line(daemon, name)
        assert "complete" in line and line[-1] == "true", line
    tree = ok(ctr(daemon, "snapshots", "tree"))
    chain = chain_of(layered)
    # the tree nests each layer under its parent: deeper chains are indented more
    depth = {c: next(len(x) - len(x.lstrip()) for x in tree.splitlines() if c in x) for c in chain}
    assert depth[chain[0]] < depth[chain[1]] < depth[chain[2]]
    # ctr mounts what we unpacked (a view over our chain) and sees the final tree
    target = Path(tempfile.mkdtemp(prefix="dy-ctr-img-"))
    try:
        ok(ctr(daemon, "images", "mount", LAYERED, str(target)))
        assert (target / "data" / "final").read_text() == "final\n" and not (target / "etc" / "motd").exists()
        ok(ctr(daemon, "images", "unmount", "--rm", str(target)))
    finally:
        unmount(str(target))
        target.rmdir()
    ok(ctr(daemon, "images", "rm", "--sync", LAYERED, BUSYBOX))
    assert ok(ctr(daemon, "snapshots", "ls")).splitlines()[1:] == []


async def test_ctr_export_imports_with_dock(daemon: DaemonProcess, tmp_path: Path, layered: Image) -> None:
    archive = tmp_path / "in.tar"
    archive.write_bytes(oci_archive([layered]))
    ok(ctr(daemon, "images", "import", "--no-unpack", str(archive)))
    exported = tmp_path / "out.tar"
    ok(ctr(daemon, "images", "export", str(exported), LAYERED))
    async with daemon.client("other") as c:
        result = await c.transfer.import_archive(exported, unpack=True)
        assert [i.name for i in result.images] == [LAYERED]
        assert result.images[0].target.digest == layered.manifest_digest
        [check] = await c.transfer.check()
        assert check.complete and check.unpacked
    line = check_line(daemon, LAYERED, namespace="other")
    assert "complete" in line and line[-1] == "true"


async def test_dock_export_imports_with_ctr(daemon: DaemonProcess, tmp_path: Path, layered: Image,
                                            busybox: Image) -> None:
    exported = tmp_path / "dock.tar"
    async with daemon.client(NS) as c:
        await c.transfer.import_archive(oci_archive([layered, busybox]))
        await c.transfer.export_to(exported, [LAYERED, BUSYBOX])
    with tarfile.open(exported) as tf:  # both readers' files in one tar, as ctr writes them
        assert {"index.json", "manifest.json", "oci-layout"} <= set(tf.getnames())
    out = ok(ctr(daemon, "images", "import", str(exported), namespace="other"))
    assert f"unpacking {LAYERED}" in out and f"unpacking {BUSYBOX}" in out
    assert sorted(ok(ctr(daemon, "images", "ls", "-q", namespace="other")).split()) == [BUSYBOX, LAYERED]
    for name in (BUSYBOX, LAYERED):
        line = check_line(daemon, name, namespace="other")
        assert "complete" in line and line[-1] == "true", line
    # and ctr's own export of what ctr imported from us comes back to us byte-identical in content
    again = tmp_path / "again.tar"
    ok(ctr(daemon, "images", "export", str(again), LAYERED, namespace="other"))
    async with daemon.client("third") as c:
        result = await c.transfer.import_archive(again)
        assert result.images[0].target.digest == layered.manifest_digest
