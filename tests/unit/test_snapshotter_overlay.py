"""OverlaySnapshotter specifics: support detection, mount shapes, the long-chain strategy."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from dockyard_common.types import Mount
from supervisor.snapshotter import OverlaySnapshotter, overlay_supported
from supervisor.snapshotter.overlay import overlay_problem

pytestmark = pytest.mark.root

PAGE = os.sysconf("SC_PAGESIZE")


@pytest.fixture
async def sn(tmp_path: Path) -> AsyncIterator[OverlaySnapshotter]:
    s = await OverlaySnapshotter.open(tmp_path / "root", short_link_dir=str(tmp_path / "l"))
    yield s
    await s.close()


def index() -> list[str]:
    return ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []


async def chain(sn: OverlaySnapshotter, n: int, prefix: str = "layer") -> str:
    parent = ""
    for i in range(n):
        await sn.prepare(f"{prefix}-{i}-tmp", parent)
        await sn.commit(f"{prefix}-{i}", f"{prefix}-{i}-tmp")
        parent = f"{prefix}-{i}"
    return parent


def test_overlay_supported_here(tmp_path: Path) -> None:
    assert overlay_supported(str(tmp_path))
    assert os.listdir(tmp_path) == []  # the probe cleaned up after itself


@pytest.fixture
def overlay_mounted(tmp_path: Path) -> Iterator[Path]:
    """A directory that is itself an overlayfs: not usable as an upper dir."""
    base = tmp_path / "ovl"
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir(parents=True)
    opts = f"lowerdir={base / 'lower'},upperdir={base / 'upper'},workdir={base / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "-o", opts, "overlay", str(base / "merged")], check=True)
    try:
        yield base / "merged"
    finally:
        subprocess.run(["umount", str(base / "merged")], check=True)


def test_overlay_unsupported_on_overlay(overlay_mounted: Path) -> None:
    assert overlay_problem(str(overlay_mounted)) is not None
    assert not overlay_supported(str(overlay_mounted))
    with pytest.raises(FailedPrecondition, match="overlayfs is not usable"):
        OverlaySnapshotter(overlay_mounted / "root")


@pytest.mark.parametrize("bad", ["a,b", "a:b", "a\\b"])
def test_root_with_option_separators_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        OverlaySnapshotter(tmp_path / bad)


async def test_mount_shapes(sn: OverlaySnapshotter) -> None:
    snaps = os.path.join(sn.root, "snapshots")
    assert await sn.prepare("a", "") == [Mount("bind", f"{snaps}/1/fs", "", ["rw", "rbind"])]
    assert await sn.view("v0", "") == [Mount("bind", f"{snaps}/2/fs", "", ["ro", "rbind"])]
    await sn.commit("c1", "a")
    assert await sn.view("v1", "c1") == [Mount("bind", f"{snaps}/1/fs", "", ["ro", "rbind"])]
    assert await sn.prepare("b", "c1") == [
        Mount(
            "overlay",
            "overlay",
            "",
            [*index(), f"workdir={snaps}/4/work", f"upperdir={snaps}/4/fs", f"lowerdir={snaps}/1/fs"],
        )
    ]
    await sn.commit("c2", "b")
    assert await sn.view("v2", "c2") == [
        Mount("overlay", "overlay", "", [*index(), f"lowerdir={snaps}/4/fs:{snaps}/1/fs"])
    ]
    assert os.path.isdir(f"{snaps}/4/work")
    assert not os.path.exists(f"{snaps}/5/work")  # views get no work dir


async def test_new_upper_takes_the_parents_owner(sn: OverlaySnapshotter) -> None:
    await sn.prepare("a", "")
    os.chown(os.path.join(sn.root, "snapshots", "1", "fs"), 123, 456)
    await sn.commit("c", "a")
    await sn.prepare("b", "c")
    st = os.stat(os.path.join(sn.root, "snapshots", "2", "fs"))
    assert (st.st_uid, st.st_gid) == (123, 456)


MAPPED = {"containerd.io/snapshot/uidmapping": "0:100000:65536", "containerd.io/snapshot/gidmapping": "0:200000:65536"}


async def test_a_snapshot_for_a_user_namespace(sn: OverlaySnapshotter) -> None:
    """containerd 2's remapping labels: the upper dir belongs to the container's root on the host
    and the overlay mount carries uidmap=/gidmap= for the mounter (dockyard_common/idmap.py)."""
    snaps = os.path.join(sn.root, "snapshots")
    await sn.prepare("a", "")
    await sn.commit("c", "a")
    expected = [Mount("overlay", "overlay", "", [*index(), f"workdir={snaps}/2/work", f"upperdir={snaps}/2/fs",
                                                 f"lowerdir={snaps}/1/fs", "uidmap=0:100000:65536",
                                                 "gidmap=0:200000:65536"])]
    assert await sn.prepare("b", "c", MAPPED) == expected
    assert await sn.mounts("b") == expected  # asked again later: the same
    st = os.stat(f"{snaps}/2/fs")
    assert (st.st_uid, st.st_gid) == (100000, 200000)
    # A view is not a container's root: no mapping; committed, the mapping is not inherited.
    assert await sn.view("v", "c", MAPPED) == [Mount("bind", f"{snaps}/1/fs", "", ["ro", "rbind"])]
    await sn.commit("c2", "b")
    assert all(not o.startswith(("uidmap", "gidmap")) for m in await sn.prepare("d", "c2") for o in m.options)


@pytest.mark.parametrize("labels, message", [
    ({"containerd.io/snapshot/uidmapping": "0:100000:65536"}, "go together"),
    ({**MAPPED, "containerd.io/snapshot/gidmapping": "0:x:1"}, "want <container id>:<host id>:<size>"),
    ({**MAPPED, "containerd.io/snapshot/uidmapping": "1:100000:65536"}, "container id 0 must be mapped"),
])
async def test_a_bad_mapping_is_refused_and_leaves_nothing(sn: OverlaySnapshotter, labels: dict[str, str],
                                                          message: str) -> None:
    await sn.prepare("a", "")
    await sn.commit("c", "a")
    with pytest.raises(InvalidArgument, match=message):
        await sn.prepare("b", "c", labels)
    assert sorted(os.listdir(os.path.join(sn.root, "snapshots"))) == ["1"]
    with pytest.raises(NotFound):
        await sn.stat("b")


async def test_long_chain_goes_through_the_short_link(tmp_path: Path) -> None:
    root = tmp_path / ("x" * 200) / ("y" * 200) / "root"
    sn = await OverlaySnapshotter.open(root)  # the default, short, link dir
    try:
        top = await chain(sn, 128)
        snaps = os.path.join(sn.root, "snapshots")
        for mounts in (await sn.prepare("active", top), await sn.view("view", top)):
            opts = mounts[0].options
            assert len(",".join(opts)) < PAGE
            lower = next(o for o in opts if o.startswith("lowerdir="))
            assert lower.count(":") == 127
            assert lower.startswith(f"lowerdir={sn.short_link}/")
        assert os.readlink(sn.short_link) == snaps
        # Short chains keep containerd's plain absolute paths.
        short = await sn.prepare("short", "layer-0")
        assert short[0].options[-1] == f"lowerdir={snaps}/1/fs"
        # The link is recreated on demand, e.g. after a reboot emptied /run.
        os.unlink(sn.short_link)
        await sn.mounts("active")
        assert os.readlink(sn.short_link) == snaps
    finally:
        await sn.close()
    assert not os.path.lexists(sn.short_link)


async def test_too_long_chain_is_refused_at_prepare(tmp_path: Path) -> None:
    # A deliberately long link dir makes the limit small enough to reach quickly.
    link_dir = tmp_path / ("l" * 200)
    sn = await OverlaySnapshotter.open(tmp_path / ("r" * 200), short_link_dir=str(link_dir))
    try:
        parent = ""
        for i in range(64):
            try:
                await sn.prepare(f"k{i}", parent)
            except ResourceExhausted as e:
                assert "does not fit" in str(e)
                break
            await sn.commit(f"c{i}", f"k{i}")
            parent = f"c{i}"
        else:
            pytest.fail("the chain never became too long")
        refused = f"k{i}"
        assert refused not in [info.name async for info in sn.walk()]
        entries = os.listdir(os.path.join(sn.root, "snapshots"))
        assert len(entries) == i  # the refused snapshot left no directory
        # A view needs no upper and work dirs, so it still fits.
        await sn.view("v", parent)
    finally:
        await sn.close()


async def test_usage_counts_the_upper_dir_only(sn: OverlaySnapshotter) -> None:
    await sn.prepare("a", "")
    fs = os.path.join(sn.root, "snapshots", "1", "fs")
    with open(os.path.join(fs, "big"), "wb") as f:
        f.write(b"x" * 100_000)
    await sn.commit("c", "a")
    await sn.prepare("b", "c")
    usage = await sn.usage("b")
    assert usage.inodes == 1  # only the empty upper dir
    assert usage.size < 100_000


def test_root_too_long_for_sqlite(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="too long"):
        OverlaySnapshotter(tmp_path / ("x" * 250) / ("y" * 250) / "root")
