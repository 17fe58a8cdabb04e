"""Hostile images as `dock run` consumes them (tests/image_fuzz.py builds them): each case either
runs or fails with one clear `dock:` line, never a traceback, a hang or an Internal error; nothing
is left behind (containers, snapshots, volumes, dock's read-only rootfs mounts), nothing outside
the container's root is touched (the host paths the images' symlinks and `..` point at), and the
daemon logs no traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import ctr
from tests.compat.runtimes import daemon_with_runtime
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.image_fuzz import CASES, HOST_TARGET, IMPORT_REFUSED, base_layer, hostile_images, image_name
from tests.images import oci_archive
from tests.integration.conftest import emptied

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

RUN_CASES = sorted(set(CASES) - IMPORT_REFUSED)
HOST_PATHS = ("/tmp/dy-hostile-vol", "/tmp/dy-hostile-wd", "/tmp/dy-hostile-wd2", "/tmp/data", "/tmp/x")


def _host_state() -> dict[str, object]:
    """What the hostile images' symlinks aim at on the host: it must be the same after."""
    etc = {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in os.scandir(HOST_TARGET)}
    return {"etc": etc, "etc-mtime": os.stat(HOST_TARGET).st_mtime_ns,
            "made": [p for p in HOST_PATHS if os.path.lexists(p)]}


def _dock_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if "/dock-rootfs-" in line.split()[4]]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    before = _host_state()
    with tempfile.TemporaryDirectory(prefix="dy-hostile-") as tmp, daemon_with_runtime("dockyard") as d:
        archive = Path(tmp) / "hostile.tar"
        archive.write_bytes(oci_archive(hostile_images(RUN_CASES, base_layer())))
        res = ctr(d, "images", "import", str(archive))
        assert res.returncode == 0, res.stderr
        yield d
    assert _host_state() == before


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    mounts = _dock_mounts()
    yield daemon
    emptied(daemon)  # no container, task or volume left; no traceback in the daemon's log
    assert _dock_mounts() == mounts


def _snapshots(d: DaemonProcess) -> set[str]:
    return set(ctr(d, "snapshots", "ls").stdout.split("\n")[1:])


@pytest.mark.parametrize("case", RUN_CASES)
def test_run(d: DaemonProcess, case: str, tmp_path: Path) -> None:
    cli = DockCLI(d.address, tmp_path)
    snaps = _snapshots(d)
    res = cli.dock("run", "--rm", image_name(case), "true", timeout=60)
    err = res.stderr.strip()
    words = CASES[case].words
    if words == "" or (words is None and res.returncode == 0):
        assert res.returncode == 0, err
    else:
        assert res.returncode == 1, err
        assert words is None or words in err, err
        assert len(err.splitlines()) == 1 and err.startswith("dock: "), err
        assert "Traceback" not in err and "Error" not in err and "internal" not in err, err
    assert ctr(d, "containers", "ls", "-q").stdout.split() == []
    assert _snapshots(d) == snaps
    assert list(tmp_path.iterdir()) == []  # dock's FIFO dirs gone


@pytest.mark.parametrize("case", sorted(IMPORT_REFUSED))
def test_import_refused_in_words(daemon: DaemonProcess, case: str, tmp_path: Path) -> None:
    """JSON types Go's structs refuse: the daemon's own import refuses them too, in words."""
    archive = tmp_path / "img.tar"
    archive.write_bytes(oci_archive(hostile_images([case])))
    cli = DockCLI(daemon.address)
    err = cli.fails("load", "-i", str(archive), words="must be")
    assert case.split("-")[0].capitalize() in err or "Labels" in err, err
    assert image_name(case) not in ctr(daemon, "images", "ls", "-q").stdout.split()


def test_duplicate_volumes_make_one(d: DaemonProcess) -> None:
    """/data, /data/ and /./data are one VOLUME: one anonymous volume, one mount."""
    cli = DockCLI(d.address)
    cid = cli.ok("create", image_name("vol-dup"), "true").strip()
    assert len(cli.ok("volume", "ls", "-q").split()) == 1
    cli.ok("rm", "-v", cid)


def test_volume_through_absolute_symlink_seeds_the_images_files(d: DaemonProcess) -> None:
    """VOLUME /data with /data -> /etc in the image: the volume holds the image's /etc, never the
    host's (its hostname file, say, is not the image's)."""
    cli = DockCLI(d.address)
    cid = cli.ok("create", image_name("vol-link-abs"), "true").strip()
    (name,) = cli.ok("volume", "ls", "-q").split()
    mountpoint = Path(cli.json("volume", "inspect", name)[0]["mountpoint"])
    names = {p.name for p in mountpoint.iterdir()}
    assert {"passwd", "group", "hostname"} <= names and "shadow" not in names, names  # the host has a shadow
    assert (mountpoint / "hostname").read_text() == "busybox\n"
    cli.ok("rm", "-v", cid)
