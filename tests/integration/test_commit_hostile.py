"""`dock commit` (the dockyard.images.v1.Builder/Commit RPC) of hostile containers, against a real
dockyardd: a writable layer holding names that layers reserve for whiteouts (`.wh.bin` made by
the container itself turned into a whiteout that deleted /bin from the committed image), paths
past PATH_MAX, symlinks at /etc and pointing out, devices, FIFOs, hard links, long names; hostile
`--change` values (NULs, VOLUME /, a config past what Dockyard reads back); an image config holding
text that is not valid Unicode. Each is a committed image that means what the container held, or
one clear error of the right kind, decided before the pause where it can be; the container is
resumed, nothing is left (leases, ingests, blobs, snapshots), the host is untouched and the
daemon logs no traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dock.client import Client
from dock.tasks import Status
from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument
from dockyard_common.imagespec import MEDIA_TYPE_OCI_MANIFEST, Descriptor
from tests.daemon import DaemonProcess, daemon_with_busybox
from tests.dockcli import DockCLI
from tests.images import build_image
from tests.integration.test_commit import leftovers, recording, stop, topics, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]

BASE = "docker.io/library/busybox:latest"


@dataclass
class Rig:
    d: DaemonProcess
    tmp: Path
    layer: bytes
    containers: list[str] = field(default_factory=list)

    @property
    def cli(self) -> DockCLI:
        return DockCLI(self.d.address, self.tmp)

    def run_detached(self, script: str, image: str = BASE) -> str:
        """A container that makes its changes, marks /ready, then keeps running."""
        cid = f"hostile-{secrets.token_hex(4)}"
        self.containers.append(cid)
        self.cli.ok("run", "-d", "--name", cid, image, "sh", "-c",
                    f"{script} && touch /ready && exec sleep 100000", timeout=120)
        return cid


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with daemon_with_busybox("dy-commit-hostile-", BASE, all_applets=True) as (d, tmp, layer):
        docktmp = tmp / "docktmp"
        docktmp.mkdir()
        r = Rig(d, docktmp, layer)
        yield r
        for cid in r.containers:
            r.cli.dock("tasks", "kill", "-s", "SIGKILL", cid)


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with rig.d.client() as c:
        yield c


def layer_members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


async def refused_and_resumed(rig: Rig, c: Client, cid: str, error: type[DockyardError], words: str,
                              changes: list[str] | None = None, paused: bool = True) -> str:
    """The commit fails with `error` naming `words`; the container was paused (or not even that)
    and is running again; no image, lease, ingest, blob or snapshot is left."""
    images = sorted(i.name for i in await c.images.list())
    before = await leftovers(c)
    async with recording(c) as seen:
        with pytest.raises(error) as err:
            await c.images.commit(cid, f"never:{secrets.token_hex(3)}", changes=changes or [])
    message = err.value.message
    assert words in message, message
    assert "Traceback" not in message and "Error" not in message and len(message) < 2048, message
    assert topics(seen, cid) == (["/tasks/paused", "/tasks/resumed"] if paused else [])
    assert (await c.tasks.get(cid)).status == Status.RUNNING
    assert sorted(i.name for i in await c.images.list()) == images
    assert await leftovers(c) == before
    return message


# -- the container's files -------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "shown"), [
    ("touch /.wh.bin", "/.wh.bin"),  # applied, the layer deleted /bin: the image could not run sh
    ("touch /etc/.wh..wh..opq", "/etc/.wh..wh..opq"),  # ... emptied /etc
    ("mkdir /.wh.usr", "/.wh.usr"),  # ... deleted /usr
    ("mkdir -p /data && touch /data/.wh.", "/data/.wh."),  # ... could not be unpacked at all
    ("rm /bin/ls && touch /bin/.wh.ls", "/bin/.wh.ls"),  # a real deletion beside it
])
async def test_names_layers_reserve_for_whiteouts_are_refused(rig: Rig, client: Client, script: str,
                                                              shown: str) -> None:
    cid = rig.run_detached(script)
    await wait_ready(client, cid)
    message = await refused_and_resumed(rig, client, cid, FailedPrecondition, f"the tree holds {shown!r}")
    assert "reserve for whiteouts" in message and "rename or remove it" in message, message
    await stop(client, cid)


async def test_a_path_past_path_max_is_a_clear_error(rig: Rig, client: Client) -> None:
    """The walk cannot name such a path (containerd's cannot either): an error in words naming the
    path inside the container, not an internal error with the daemon's mount point in it."""
    name = "x" * 200
    cid = rig.run_detached(f"i=0; while [ $i -lt 30 ]; do mkdir {name} && cd -P {name} || exit 1; "
                           "i=$((i+1)); done; touch deepfile; cd /")
    await wait_ready(client, cid)
    message = await refused_and_resumed(rig, client, cid, InvalidArgument, "File name too long")
    assert message.startswith("diff: '...xxxx") and str(rig.d.root) not in message, message
    await stop(client, cid)


async def test_hostile_files_commit_as_what_they_are(rig: Rig, client: Client) -> None:
    """Symlinks (one replacing /etc, others pointing out) are committed as symlinks, never
    followed; devices, FIFOs, hard links and 255-byte names as entries of their kind. The host's
    /etc is untouched and the image runs."""
    etc_before = {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in os.scandir("/etc")}
    long = "n" * 255
    cid = rig.run_detached(" && ".join([
        "ln -s /etc/shadow /shadow", "ln -s ../../../../../etc/passwd /passwd-rel",
        "mknod /blk b 8 0", "mknod /chr c 1 3", "mkfifo /fifo", "echo linked > /a", "ln /a /b",
        f"echo long > /{long}", "cp -a /etc /etc.orig", "rm -rf /etc", "ln -s / /etc"]))
    await wait_ready(client, cid)
    tag = f"hostile-files:{secrets.token_hex(3)}"
    result = await client.images.commit(cid, tag)
    members = layer_members(await client.content.read_all(result.layer.digest))
    assert members["etc"].issym() and members["etc"].linkname == "/"
    assert members["shadow"].linkname == "/etc/shadow" and members["passwd-rel"].issym()
    assert members["blk"].isblk() and (members["blk"].devmajor, members["blk"].devminor) == (8, 0)
    assert members["chr"].ischr() and members["fifo"].isfifo() and members[long].isfile()
    assert {members["a"].islnk(), members["b"].islnk()} == {True, False}
    assert not any(n.startswith("etc/") for n in members), "the symlink at /etc was followed"
    out = rig.cli.ok("run", "--rm", tag, "sh", "-c", f"readlink /etc; cat /a /b /{long}; ls -l /chr | cut -c1")
    assert out.split() == ["/", "linked", "linked", "long", "c"], out
    assert {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in os.scandir("/etc")} == etc_before
    await stop(client, cid)


# -- --change ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "words"), [
    (["ENV A=b\0c"], "change 1 contains a NUL byte"),  # committed, then refused by every run
    (["CMD [\"sh\"]", "LABEL a\0=1"], "change 2 contains a NUL byte"),
    (["VOLUME /"], "the container's root / cannot be a volume"),
    (["VOLUME /proc/sys"], "/proc cannot be a volume"),
    (["LABEL big=" + "x" * (9 << 20)], "more than the limit of 8388608"),  # an image Dockyard cannot read back
    (["ONBUILD RUN echo hi"], "ONBUILD is not a valid change command"),
], ids=["nul-env", "nul-label", "volume-root", "volume-proc", "huge", "onbuild"])
async def test_hostile_changes_are_refused_before_the_pause(rig: Rig, client: Client, changes: list[str],
                                                           words: str) -> None:
    cid = rig.run_detached("echo x > /x")
    await wait_ready(client, cid)
    await refused_and_resumed(rig, client, cid, InvalidArgument, words, changes=changes, paused=False)
    await stop(client, cid)


# -- the image's config -----------------------------------------------------------------------------------


async def test_an_image_config_that_is_not_unicode_commits_as_go_reads_it(rig: Rig, client: Client) -> None:
    """`\\ud800` in the config's JSON (an internal error with a traceback before): read as Go
    reads JSON, it is U+FFFD, and the commit carries it on."""
    img = build_image(f"docker.io/library/env-surrogate:{secrets.token_hex(3)}", [rig.layer],
                      {"Env": ["PATH=/bin", "A=\ud800"]})
    for digest, blob in img.blobs.items():
        await client.content.write(f"hostile-{digest}", blob, expected=digest, labels={"containerd.io/gc.root": "x"})
    await client.images.create(img.name, Descriptor(MEDIA_TYPE_OCI_MANIFEST, img.manifest_digest, len(img.manifest)))
    cid = f"surrogate-{secrets.token_hex(4)}"
    rig.cli.ok("create", "--name", cid, img.name, "true")
    await client.images.commit(cid, "committed:surrogate")
    desc = (await client.images.get("docker.io/library/committed:surrogate")).target
    manifest = json.loads(await client.content.read_all(desc.digest))
    config = json.loads(await client.content.read_all(manifest["config"]["digest"]))
    assert config["config"]["Env"] == ["PATH=/bin", "A=\ufffd"]
    await client.images.delete("docker.io/library/committed:surrogate")
    rig.cli.ok("rm", cid)

