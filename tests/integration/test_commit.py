"""`dock commit` against a real dockyardd: running (paused, then resumed) and stopped containers,
the committed image run and showing every kind of change, `-c` changes in the config, zstd,
Docker and OCI bases, and bad input that leaves nothing behind.

The base images are busybox (every applet) from tests/images.py with a few extra files to
delete, replace, chmod and chown; one imported as an OCI layout, one as a `docker save` tar
(Docker schema 2 media types).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import secrets
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dock.client import Client
from dock.events import Envelope
from dock.tasks import Status
from dockyard_common.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
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
)
from tests.ctr import ctr, ok
from tests.daemon import DaemonProcess, publish_marker, remove_base, start_daemon, stopping_new_zygotes
from tests.dockcli import DockCLI
from tests.images import build_image, docker_archive, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]

OCI_BASE = "docker.io/library/commitbase:oci"
DOCKER_BASE = "docker.io/library/commitbase:docker"
BASE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "BASE=1"]

# Every kind of change a layer carries: written, modified, deleted (a whiteout), a directory
# replaced (its old entries whited out), chmod (setuid) and chown, a symlink, a hard link.
CHANGES = " && ".join([
    "echo new > /new.txt",
    "echo modified > /etc/motd",
    "rm /victim",
    "rm -rf /data/old && mkdir /data/old && echo fresh > /data/old/c",
    "echo mode > /modes && chmod 4751 /modes",
    "chown 1234:5678 /etc/keep",
    "echo owned > /owned && chown 1000:1000 /owned",
    "ln -s /new.txt /link",
    "ln /new.txt /hard",
    "mkdir -p /work",
])
# What the committed image shows, read by a container of it.
CHECK = " ; ".join([
    "cat /new.txt /etc/motd",
    "test -e /victim || echo victim-gone",
    "ls /data/old",
    "stat -c '%n %a %u:%g' /modes /owned /etc/keep",
    "readlink /link",
    "test /new.txt -ef /hard && echo hard-linked",
])
CHECKED = ("new\nmodified\nvictim-gone\nc\n/modes 4751 0:0\n/owned 644 1000:1000\n/etc/keep 644 1234:5678\n"
           "/new.txt\nhard-linked\n")


@dataclass
class Rig:
    d: DaemonProcess
    tmp: Path
    containers: list[str] = field(default_factory=list)

    def dock(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return DockCLI(self.d.address, self.tmp).dock(*args, timeout=timeout)

    def ok(self, *args: str) -> str:
        return DockCLI(self.d.address, self.tmp).ok(*args, timeout=120)

    def fails(self, *args: str) -> str:
        """stderr of a dock command that must fail cleanly: rc 1, one line, no Python in it."""
        res = self.dock(*args)
        assert res.returncode == 1, f"dock {shlex.join(args)} succeeded: {res.stdout}"
        assert "Traceback" not in res.stderr and "Error:" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        return res.stderr.strip()

    def new_id(self, name: str) -> str:
        cid = f"{name}-{secrets.token_hex(4)}"
        self.containers.append(cid)
        return cid

    def run_detached(self, image: str, script: str, name: str = "commit") -> str:
        """A container that makes its changes, marks /ready, then keeps running."""
        cid = self.new_id(name)
        self.ok("run", "-d", "--name", cid, image, "sh", "-c", f"{script} && touch /ready && exec sleep 100000")
        return cid


def base_image_tar(tmp: Path) -> tuple[bytes, bytes]:
    """The base image as an OCI layout and as a `docker save` archive."""
    root = make_busybox_rootfs(tmp / "rootfs", all_applets=True)
    (root / "victim").write_text("delete me\n")
    (root / "data" / "old").mkdir(parents=True)
    (root / "data" / "old" / "a").write_text("a\n")
    (root / "data" / "old" / "b").write_text("b\n")
    (root / "etc" / "motd").write_text("original\n")
    (root / "etc" / "keep").write_text("keep\n")
    layer = tar_tree(root)
    config = {"Env": BASE_ENV, "Cmd": ["sh"], "Labels": {"base": "yes"}}
    return (oci_archive([build_image(OCI_BASE, [layer], config)]),
            docker_archive([build_image(DOCKER_BASE, [layer], config)]))


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="dy-commit-") as tmp, stopping_new_zygotes():
        d = start_daemon()
        try:
            oci, docker = base_image_tar(Path(tmp))
            docktmp = Path(tmp) / "docktmp"
            docktmp.mkdir()
            r = Rig(d, docktmp)
            for name, data in (("oci.tar", oci), ("docker.tar", docker)):
                (Path(tmp) / name).write_bytes(data)
                r.ok("images", "import", "--unpack", str(Path(tmp) / name))
            yield r
            for cid in r.containers:  # what a failed test left running
                r.dock("tasks", "kill", "-s", "SIGKILL", cid)
        finally:
            remove_base(d)


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with rig.d.client() as c:
        yield c


async def wait_ready(c: Client, cid: str) -> None:
    """Until the container has made its changes (its /ready, seen in the snapshot's upperdir)."""
    mounts = await c.snapshots.using("overlayfs").mounts(cid)
    upper = next(o.removeprefix("upperdir=") for o in mounts[0].options if o.startswith("upperdir="))
    await wait_until_async(lambda: (Path(upper) / "ready").exists(), 60, what=f"{cid} to make its changes")


async def stop(c: Client, cid: str) -> None:
    with contextlib.suppress(NotFound):
        await c.tasks.kill(cid, 9, all=True)
        await c.tasks.wait(cid)


@contextlib.asynccontextmanager
async def recording(c: Client) -> AsyncIterator[list[Envelope]]:
    """Every event published while the block runs, in order (the subscription is live first;
    at the end, a marker event published after the block has come through, so all before it has)."""
    seen: list[Envelope] = []
    async with c.events.subscribed() as events:
        async def collect() -> None:
            async for ev in events:
                seen.append(ev)

        task = asyncio.create_task(collect())
        try:
            yield seen
            marker = await publish_marker(c.channel, c.namespace)
            await wait_until_async(lambda: any(e.topic == marker for e in seen), 20, what="the marker event")
            seen[:] = [e for e in seen if e.topic != marker]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def topics(seen: list[Envelope], cid: str) -> list[str]:
    return [e.topic for e in seen if (e.topic in ("/tasks/paused", "/tasks/resumed")
            and e.event.get("container_id") == cid) or e.topic.startswith("/images/")]


async def inspect(c: Client, name: str) -> Any:
    return await c.transfer.inspect(name)


def layer_entries(blob: bytes) -> dict[str, tarfile.TarInfo]:
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else _zstd_decompress(blob)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def _same_but_whiteout_times(a: bytes, b: bytes) -> bool:
    def entries(blob: bytes) -> list[tuple[Any, ...]]:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.size, m.linkname, m.pax_headers,
                 None if os.path.basename(m.name).startswith(".wh.") else m.mtime)
                for m in layer_entries(blob).values()]
    return entries(a) == entries(b)


def _zstd_decompress(blob: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()


async def test_commit_running_container_pauses_and_resumes(rig: Rig, client: Client) -> None:
    cid = rig.run_detached(OCI_BASE, CHANGES)
    await wait_ready(client, cid)
    before = await inspect(client, OCI_BASE)
    name = f"docker.io/library/committed:{secrets.token_hex(3)}"
    async with recording(client) as seen:
        digest = rig.ok("commit", "-m", "all the changes", "--author", "Jane <jane@example.com>",
                        cid, name.removeprefix("docker.io/library/")).strip()
        await wait_until_async(lambda: "/images/create" in topics(seen, cid), 20, what="the image create event")
    # Paused for the diff, resumed before the image was named, and running again.
    assert topics(seen, cid) == ["/tasks/paused", "/tasks/resumed", "/images/create"]
    assert (await client.tasks.get(cid)).status == Status.RUNNING

    after = await inspect(client, name)
    assert after.target.digest == digest and after.manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert after.config_descriptor.media_type == MEDIA_TYPE_OCI_CONFIG
    config = after.config
    assert config["rootfs"]["diff_ids"][:-1] == before.config["rootfs"]["diff_ids"]
    assert len(config["rootfs"]["diff_ids"]) == len(before.config["rootfs"]["diff_ids"]) + 1
    assert len(config["history"]) == len(before.config["history"]) + 1
    entry = config["history"][-1]
    assert entry["comment"] == "all the changes" and entry["author"] == "Jane <jane@example.com>"
    assert entry["created_by"].startswith("sh -c echo new > /new.txt") and "empty_layer" not in entry
    assert entry["created"] == config["created"] and config["created"].endswith("Z")
    assert config["author"] == "Jane <jane@example.com>"
    assert config["config"] == before.config["config"]  # no -c: the run defaults are the base's
    assert [la.descriptor.digest for la in after.layers[:-1]] == [la.descriptor.digest for la in before.layers]
    new_layer = after.layers[-1]
    assert new_layer.descriptor.media_type == MEDIA_TYPE_OCI_LAYER_GZIP
    assert new_layer.diff_id == config["rootfs"]["diff_ids"][-1]

    # The layer itself: whiteouts for the deleted file and for the replaced directory's old entries.
    entries = layer_entries(await client.content.read_all(new_layer.descriptor.digest))
    assert {".wh.victim", "data/old/.wh.a", "data/old/.wh.b", "data/old/c", "new.txt", "link"} <= set(entries)
    assert entries["link"].issym() and entries["link"].linkname == "/new.txt"
    assert entries["hard"].islnk() or entries["new.txt"].islnk()
    assert "ready" in entries and "victim" not in entries

    # The image runs and shows the changes; ctr sees it.
    out = rig.ok("run", "--rm", "--name", rig.new_id("check"), name, "sh", "-c", CHECK)
    assert out == CHECKED
    assert name in ok(ctr(rig.d, "images", "ls", "-q")).split()
    assert ok(ctr(rig.d, "run", "--rm", name, rig.new_id("ctr"), "sh", "-c", CHECK)) == CHECKED
    await stop(client, cid)


async def test_commit_stopped_containers(rig: Rig, client: Client) -> None:
    # A container whose task ran and was deleted (dock run in the foreground, without --rm).
    gone = rig.new_id("stopped")
    rig.ok("run", "--name", gone, OCI_BASE, "sh", "-c", CHANGES)
    with pytest.raises(NotFound):
        await client.tasks.get(gone)
    async with recording(client) as seen:
        rig.ok("commit", gone, "committed:stopped")
        await wait_until_async(lambda: "/images/create" in topics(seen, gone), 20, what="the image create event")
    assert topics(seen, gone) == ["/images/create"]  # nothing to pause
    assert rig.ok("run", "--rm", "--name", rig.new_id("check"), "committed:stopped", "sh", "-c", CHECK) == CHECKED

    # A container whose task exited and is still there (STOPPED); the same name is updated.
    exited = rig.new_id("exited")
    rig.ok("run", "-d", "--name", exited, OCI_BASE, "sh", "-c", "echo second > /second.txt")
    await client.tasks.wait(exited)
    assert (await client.tasks.get(exited)).status == Status.STOPPED
    first = (await client.images.get("docker.io/library/committed:stopped")).target.digest
    result = await client.images.commit(exited, "committed:stopped", message="again")
    assert not result.created and result.target.digest != first
    assert (await client.tasks.get(exited)).status == Status.STOPPED
    out = rig.ok("run", "--rm", "--name", rig.new_id("check"), "committed:stopped", "sh", "-c",
                 "cat /second.txt; test -e /new.txt || echo no-new")
    assert out == "second\nno-new\n"
    await client.tasks.delete(exited)


async def test_changes_land_in_the_config(rig: Rig, client: Client) -> None:
    cid = rig.run_detached(OCI_BASE, "mkdir -p /work/sub && chown 1000:1000 /work/sub")
    await wait_ready(client, cid)
    changes = [
        'ENV GREETING="hello world" BASE=2',
        "ENV LEGACY value with spaces",
        "EXPOSE 80 53/udp 8000-8001",
        'LABEL org.example.team=infra "with space"=yes',
        "LABEL base=replaced",
        "WORKDIR /work",
        "WORKDIR sub",
        "USER 1000:1000",
        'VOLUME ["/data", "/cache"]',
        "STOPSIGNAL SIGINT",
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["echo $GREETING from $(pwd) as $(id -u):$(id -g) base=$BASE"]',
    ]
    args = [a for ch in changes for a in ("-c", ch)]
    async with recording(client) as seen:
        rig.ok("commit", "--no-pause", *args, cid, "committed:changes")
        await wait_until_async(lambda: "/images/create" in topics(seen, cid), 20, what="the image create event")
    assert topics(seen, cid) == ["/images/create"]  # --no-pause: the task was left running throughout
    config = (await inspect(client, "docker.io/library/committed:changes")).config
    run = config["config"]
    assert run["Env"] == [BASE_ENV[0], "BASE=2", "GREETING=hello world", "LEGACY=value with spaces"]
    assert run["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert run["Labels"] == {"base": "replaced", "org.example.team": "infra", "with space": "yes"}
    assert run["WorkingDir"] == "/work/sub" and run["User"] == "1000:1000"
    assert run["Volumes"] == {"/data": {}, "/cache": {}} and run["StopSignal"] == "SIGINT"
    assert run["Entrypoint"] == ["/bin/sh", "-c"]
    assert run["Cmd"] == ["echo $GREETING from $(pwd) as $(id -u):$(id -g) base=$BASE"]
    await stop(client, cid)
    # The defaults are what a container of the image runs with.
    out = rig.ok("run", "--rm", "--name", rig.new_id("check"), "committed:changes")
    assert out == "hello world from /work/sub as 1000:1000 base=2\n"

    # ENTRYPOINT drops the base's CMD unless a CMD came first, as in Docker.
    cid2 = rig.run_detached(OCI_BASE, "true")
    await wait_ready(client, cid2)
    result = await client.images.commit(cid2, "committed:entry", changes=["ENTRYPOINT echo hi"])
    config = (await inspect(client, result.name)).config["config"]
    assert config["Entrypoint"] == ["/bin/sh", "-c", "echo hi"] and config.get("Cmd") is None
    await stop(client, cid2)


@pytest.mark.parametrize("base", [OCI_BASE, DOCKER_BASE])
async def test_media_types_follow_the_base_and_zstd_runs(rig: Rig, client: Client, base: str) -> None:
    cid = rig.run_detached(base, CHANGES)
    await wait_ready(client, cid)
    docker = base == DOCKER_BASE
    tag = secrets.token_hex(3)
    gz = await client.images.commit(cid, f"committed:gz-{tag}")
    gz_info = await inspect(client, gz.name)
    assert gz_info.manifest.media_type == (MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST)
    assert gz_info.config_descriptor.media_type == (MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG)
    # The base's layers as they were (`docker save` stores them uncompressed), the new one gzip'd.
    base_type = MEDIA_TYPE_DOCKER_LAYER if docker else MEDIA_TYPE_OCI_LAYER_GZIP
    assert [la.descriptor.media_type for la in gz_info.layers] == [
        base_type, MEDIA_TYPE_DOCKER_LAYER_GZIP if docker else MEDIA_TYPE_OCI_LAYER_GZIP]

    zst = await client.images.commit(cid, f"committed:zstd-{tag}", compression="zstd")
    info = await inspect(client, zst.name)
    # zstd has no Docker media type: the image becomes OCI, base layers renamed (same bytes).
    assert info.manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert info.config_descriptor.media_type == MEDIA_TYPE_OCI_CONFIG
    assert [la.descriptor.media_type for la in info.layers] == [
        MEDIA_TYPE_OCI_LAYER if docker else MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD]
    assert info.layers[0].descriptor.digest == gz_info.layers[0].descriptor.digest
    blob = await client.content.read_all(zst.layer.digest)
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    # Same changes, same tar: but for the whiteouts' mtime, which is the time of each diff (rounded
    # to the second, as containerd's differ), and two commits may fall in different seconds.
    assert _same_but_whiteout_times(blob, await client.content.read_all(gz.layer.digest))
    assert "new.txt" in layer_entries(blob)
    await stop(client, cid)
    assert rig.ok("run", "--rm", "--name", rig.new_id("check"), zst.name, "sh", "-c", CHECK) == CHECKED


async def leftovers(c: Client) -> tuple[list[str], list[str], list[str], list[str]]:
    """What a failed commit must not leave: leases, ingests, blobs (after a collection), snapshots."""
    await c.leases.collect_garbage()
    return ([lease.id for lease in await c.leases.list()], [s.ref for s in await c.content.list_statuses()],
            sorted(i.digest for i in await c.content.list()),
            sorted([s.name async for s in c.snapshots.using("overlayfs").list()]))


async def test_bad_input_is_a_clear_error_and_leaves_nothing(rig: Rig, client: Client) -> None:
    cid = rig.run_detached(OCI_BASE, "echo x > /x")
    await wait_ready(client, cid)
    images = [i.name for i in await client.images.list()]
    before = await leftovers(client)
    async with recording(client) as seen:
        assert rig.fails("commit", "nosuchcontainer", "committed:bad") == (
            'dock: container "nosuchcontainer" in namespace "default": not found')
        assert "invalid reference format" in rig.fails("commit", cid, "Bad::Ref")
        assert rig.fails("commit", "-c", "RUN echo hi", cid, "committed:bad") == (
            "dock: RUN is not a valid change command: commit accepts CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, "
            "WORKDIR, VOLUME, STOPSIGNAL: invalid argument")
        assert "STOPSIGNAL: invalid signal: SIGNOPE" in rig.fails("commit", "-c", "STOPSIGNAL SIGNOPE", cid, "x:1")
        assert "EXPOSE: invalid containerPort: 99999" in rig.fails("commit", "-c", "EXPOSE 99999", cid, "x:1")
        assert "arrays must be comprised of strings only" in rig.fails("commit", "-c", "CMD [1]", cid, "x:1")
        with pytest.raises(InvalidArgument, match="unknown compression 'lz4'"):
            await client.images.commit(cid, "committed:bad", compression="lz4")
        with pytest.raises(InvalidArgument, match="has a digest"):
            await client.images.commit(cid, "committed@sha256:" + "a" * 64)
        with pytest.raises(InvalidArgument, match="a container id is required"):
            await client.images.commit("", "committed:bad")
    assert topics(seen, cid) == []  # refused before the container was touched
    assert (await client.tasks.get(cid)).status == Status.RUNNING
    assert [i.name for i in await client.images.list()] == images
    assert await leftovers(client) == before
    await stop(client, cid)


async def test_a_failure_during_the_diff_still_resumes(rig: Rig, client: Client) -> None:
    cid = rig.run_detached(OCI_BASE, "echo x > /x")
    await wait_ready(client, cid)
    images = [i.name for i in await client.images.list()]
    before = await leftovers(client)
    # The differ stages the layer in <root>/tmp: a file in its place makes the diff fail
    # after the container was paused.
    tmp = rig.d.root / "tmp"
    parked = rig.d.root / f"tmp.parked-{secrets.token_hex(3)}"
    if tmp.exists():
        tmp.rename(parked)
    tmp.write_text("not a directory\n")
    try:
        async with recording(client) as seen:
            with pytest.raises(Internal):
                await client.images.commit(cid, "committed:failed")
            await wait_until_async(lambda: "/tasks/resumed" in topics(seen, cid), 20, what="the resume event")
    finally:
        tmp.unlink()
        if parked.exists():
            parked.rename(tmp)
    assert topics(seen, cid) == ["/tasks/paused", "/tasks/resumed"]
    assert (await client.tasks.get(cid)).status == Status.RUNNING
    assert [i.name for i in await client.images.list()] == images
    assert await leftovers(client) == before
    await stop(client, cid)


async def test_an_image_that_changed_since_is_refused(rig: Rig, client: Client) -> None:
    """The container's image name now points at another image: its layers are not what the
    container's snapshot was made from, so committing on top of them would be wrong."""
    cid = rig.run_detached(OCI_BASE, "true")
    await wait_ready(client, cid)
    moved = f"docker.io/library/moving:{secrets.token_hex(3)}"
    await client.images.tag(OCI_BASE, moved)
    cid2 = rig.run_detached(moved, "true", name="moving")
    await wait_ready(client, cid2)
    other = await client.images.commit(cid, "committed:other")
    await client.images.set_target(moved, other.target)
    with pytest.raises(FailedPrecondition, match="no longer holds the layers"):
        await client.images.commit(cid2, "committed:never")
    await client.images.delete(moved)
    with pytest.raises(NotFound, match="no longer exists"):
        await client.images.commit(cid2, "committed:never")
    for c in (cid, cid2):
        await stop(client, c)
