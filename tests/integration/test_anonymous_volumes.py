"""Anonymous volumes (issue 15), as Docker's: `dock run -v /path` and the image's VOLUMEs get a volume
named by 64 random hex digits, labelled with its container, seeded from the image's content there;
`dock rm -v` and `--rm` remove them, `dock volume prune` removes them once unused, named volumes stay.

A real daemon (`--default-network none`), our shim, busybox plus a layer with /data content; one
image declares VOLUME /data, the other does not.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import volumelabels
from tests.compat.conftest import ctr
from tests.compat.runtimes import daemon_with_runtime, uid
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.images import EPOCH, build_image, oci_archive, tar_tree
from tests.integration.conftest import emptied
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

PLAIN = "docker.io/library/anonplain:1"
WITH_VOLUME = "docker.io/library/anonvol:1"  # VOLUME /data
HELLO = "hello from the image"
HEX64 = re.compile(r"[0-9a-f]{64}")


def content_layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in (("data", tarfile.DIRTYPE, b""), ("data/hello.txt", tarfile.REGTYPE, HELLO.encode()),
                                 ("data/sub", tarfile.DIRTYPE, b""), ("data/sub/deep", tarfile.REGTYPE, b"deep")):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.size = kind, EPOCH, len(data)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with tempfile.TemporaryDirectory(prefix="dy-anonimg-") as tmp, daemon_with_runtime("dockyard") as d:
        layers = [tar_tree(make_busybox_rootfs(Path(tmp) / "rootfs")), content_layer()]
        archive = Path(tmp) / "img.tar"
        archive.write_bytes(oci_archive([build_image(PLAIN, layers),
                                         build_image(WITH_VOLUME, layers, {"Volumes": {"/data": {}}})]))
        res = ctr(d, "images", "import", str(archive))
        assert res.returncode == 0, res.stderr
        yield d


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield daemon
    emptied(daemon)


def cli(d: DaemonProcess) -> DockCLI:
    return DockCLI(d.address)


def volumes(d: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in cli(d).json("volume", "ls")}


def anonymous_of(d: DaemonProcess, cid: str) -> list[str]:
    return [n for n, v in volumes(d).items() if v["labels"] == volumelabels.anonymous_labels(cid)]


def test_dash_v_path_makes_a_seeded_anonymous_volume_and_rm_v_removes_only_it(d: DaemonProcess) -> None:
    cid = uid("anon")
    named = uid("named")
    out = cli(d).ok("run", "--net", "none", "-v", "/data", "-v", f"{named}:/keep", "--name", cid, PLAIN,
                    "sh", "-c", "cat /data/hello.txt /data/sub/deep; echo; echo mine > /data/new; echo x > /keep/x")
    assert out == f"{HELLO}deep\n"  # seeded from the image's /data, as Docker's copy-up
    [anon] = anonymous_of(d, cid)
    assert HEX64.fullmatch(anon), anon
    assert volumes(d)[named]["labels"] == {}
    [info] = cli(d).json("volume", "inspect", anon)
    assert info["containers"] == [cid]
    assert sorted(os.listdir(info["mountpoint"])) == ["hello.txt", "new", "sub"]
    assert anon in cli(d).ok("volume", "ls").split()  # listed as any volume
    cli(d).fails("volume", "rm", anon, words="in use by container")  # still its container's
    cli(d).ok("rm", "-v", cid)
    found = volumes(d)
    assert anon not in found and named in found  # rm -v: anonymous ones only


def test_the_images_volume_gets_an_anonymous_volume_seeded_from_the_image(d: DaemonProcess) -> None:
    cid = uid("imgvol")
    out = cli(d).ok("run", "--net", "none", "--name", cid, WITH_VOLUME, "sh", "-c",
                    "cat /data/hello.txt; echo; grep ' /data ' /proc/mounts | wc -l")
    assert out.splitlines() == [HELLO, "1"]  # a mount of its own at /data
    [anon] = anonymous_of(d, cid)
    # `dock rm` without -v leaves it, unused: `dock volume prune` takes it, not a named one in use.
    keeper = uid("keeper")
    cli(d).ok("rm", cid)
    cli(d).ok("run", "-d", "--net", "none", "-v", f"{keeper}:/k", "--name", keeper, PLAIN, "sleep", "100000")
    pruned = cli(d).json("volume", "prune", "-f")
    assert pruned["removed"] == [anon], pruned
    assert keeper in volumes(d)


@pytest.mark.parametrize("cover", [["-v", "NAMED:/data"], ["--tmpfs", "/data"], ["-v", "/data"],
                                   ["-v", "/data/"]])
def test_a_mount_at_the_images_volume_replaces_it(d: DaemonProcess, cover: list[str]) -> None:
    cid = uid("covered")
    named = uid("cover")
    args = [a.replace("NAMED", named) for a in cover]
    out = cli(d).ok("run", "--net", "none", *args, "--name", cid, WITH_VOLUME, "sh", "-c",
                    "grep ' /data ' /proc/mounts | wc -l")
    assert out == "1\n"  # one mount at /data: the user's
    expected = 1 if args == ["-v", "/data"] or args == ["-v", "/data/"] else 0
    assert len(anonymous_of(d, cid)) == expected


def test_rm_removes_the_anonymous_volumes_and_keeps_the_named_ones(d: DaemonProcess) -> None:
    cid = uid("rmvol")
    named = uid("stays")
    res = cli(d).dock("run", "--rm", "--net", "none", "-v", "/scratch", "-v", f"{named}:/n", "--name", cid,
                      WITH_VOLUME, "sh", "-c", "cat /data/hello.txt; exit 3")
    assert (res.returncode, res.stdout) == (3, HELLO), res.stderr
    assert not anonymous_of(d, cid)  # both (-v /scratch and the image's /data) gone when it returns
    assert named in volumes(d)
    # Detached, the daemon's --rm does the same when the task exits.
    cid = uid("rmvol-d")
    cli(d).ok("run", "-d", "--rm", "--net", "none", "-v", "/scratch", "-v", f"{named}:/n", "--name", cid,
              WITH_VOLUME, "true")
    wait_until(lambda: cid not in ctr(d, "containers", "ls", "-q").stdout.split() and not anonymous_of(d, cid),
               timeout=30, what=f"{cid} and its two anonymous volumes removed by the daemon")
    assert named in volumes(d)
    assert f"container default/{cid} exited and was removed (--rm), with 2 anonymous volume(s)" in d.log()


@pytest.mark.parametrize(("volume", "words"), [
    ("data", "want /path (an anonymous volume), NAME:/path or /host/path:/path"),
    ("/", "cannot be a mount point"),
])
def test_bad_anonymous_volumes_are_refused_in_words(d: DaemonProcess, volume: str, words: str) -> None:
    cid = uid("badvol")
    cli(d).fails("run", "--net", "none", "-v", volume, "--name", cid, PLAIN, "true", words=words)
    assert cid not in ctr(d, "containers", "ls", "-q").stdout.split()
    assert volumes(d) == {}


def test_a_run_that_fails_after_making_anonymous_volumes_leaves_none(d: DaemonProcess) -> None:
    cid = uid("undo")
    cli(d).fails("run", "--net", "none", "-v", "/scratch", "--user", "nosuchuser", "--name", cid, WITH_VOLUME, "true",
                 words="nosuchuser")
    assert cid not in ctr(d, "containers", "ls", "-q").stdout.split()
    assert volumes(d) == {}
