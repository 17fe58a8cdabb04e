"""Snapshots service: every RPC through the SDK and raw gRPC, against a real dockyardd.

Mounts the daemon returns are mounted on the host for real (as root) and their contents checked.
Snapshots that must outlive a garbage collection carry `containerd.io/gc.root` (as ctr's
prepare and commit add it) or are held by a lease.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from dock.client import Client
from dock.snapshots import Info, Kind, Mount, SnapshotsAPI, Usage
from dockyard_api.containerd.events import snapshot_pb2 as snap_events
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as pb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as pb_grpc
from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition, InvalidArgument, NotFound
from supervisor.metadata.db import Database
from supervisor.metadata.snapshots import COMMIT_LABEL, SnapshotStore
from supervisor.snapshotter import NativeSnapshotter, OverlaySnapshotter
from tests.conformance.mounts import mount_all, mounts_under, unmount
from tests.daemon import REPO, DaemonProcess, start_daemon, subscribed

ROOT = {"containerd.io/gc.root": "2026-01-01T00:00:00Z"}
SNAPSHOTTERS = ["overlayfs", "native"]


class Mounter:
    """Mounts snapshot mounts under a private temp dir; unmounts everything at teardown."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dy-mnt-"))
        self.targets: list[str] = []

    def mount(self, mounts: list[Mount], name: str) -> str:
        target = str(self.base / name)
        os.makedirs(target, exist_ok=True)
        mount_all(mounts, target)
        self.targets.append(target)
        return target

    def umount(self, target: str) -> None:
        unmount(target)
        self.targets.remove(target)

    def close(self) -> None:
        for target in reversed(self.targets):
            unmount(target)
        self.targets.clear()
        assert mounts_under(str(self.base)) == []
        for entry in os.listdir(self.base):
            os.rmdir(self.base / entry)
        os.rmdir(self.base)


@pytest.fixture
def mounter() -> Iterator[Mounter]:
    m = Mounter()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(params=SNAPSHOTTERS)
def snaps(request: pytest.FixtureRequest, client: Client) -> SnapshotsAPI:
    return client.snapshots.using(request.param)


@contextmanager
def exact(kind: type[DockyardError], message: str) -> Iterator[None]:
    """Expect error `kind` with exactly `message` (the text before containerd's kind suffix)."""
    with pytest.raises(kind) as info:
        yield
    assert info.value.message == message


def write(root: str, path: str, data: bytes) -> None:
    with open(os.path.join(root, path), "wb") as f:
        f.write(data)


def read(root: str, path: str) -> bytes:
    with open(os.path.join(root, path), "rb") as f:
        return f.read()


def backend_dirs(daemon: DaemonProcess, snapshotter: str) -> list[str]:
    """The snapshot directories the backend holds (ids), hidden ones left out."""
    path = daemon.root / "snapshots" / snapshotter / "snapshots"
    return sorted(e for e in os.listdir(path) if not e.startswith("."))


# -- lifecycle ------------------------------------------------------------------------------


async def test_lifecycle(snaps: SnapshotsAPI) -> None:
    mounts = await snaps.prepare("extract-1 sha256:aa", "", {"a": "1", **ROOT})
    assert mounts and mounts[0].type == "bind" and mounts[0].options == ["rw", "rbind"]
    assert await snaps.mounts("extract-1 sha256:aa") == mounts
    active = await snaps.stat("extract-1 sha256:aa")
    assert (active.name, active.parent, active.kind, active.labels) == (
        "extract-1 sha256:aa", "", Kind.ACTIVE, {"a": "1", **ROOT})
    assert active.created_at == active.updated_at and active.created_at.tzinfo is not None

    await snaps.commit("sha256:chain1", "extract-1 sha256:aa", {"b": "2", **ROOT})
    with pytest.raises(NotFound, match="snapshot extract-1 sha256:aa does not exist"):
        await snaps.stat("extract-1 sha256:aa")
    base = await snaps.stat("sha256:chain1")
    # Commit moves the record: new name, same (empty) parent, the commit's labels, fresh times.
    assert (base.name, base.parent, base.kind, base.labels) == ("sha256:chain1", "", Kind.COMMITTED,
                                                                 {"b": "2", **ROOT})
    assert base.created_at >= active.created_at

    await snaps.prepare("layer2", "sha256:chain1", ROOT)
    await snaps.commit("sha256:chain2", "layer2", ROOT)
    assert (await snaps.stat("sha256:chain2")).parent == "sha256:chain1"  # parent link kept
    ctr = await snaps.prepare("container", "sha256:chain2", ROOT)
    assert (await snaps.stat("container")).parent == "sha256:chain2"
    viewed = await snaps.view("view", "sha256:chain2", ROOT)
    # A view is read-only: a bind "ro", or an overlay without an upper dir.
    assert "ro" in viewed[0].options or not any(o.startswith("upperdir=") for o in viewed[0].options)
    assert "ro" not in ctr[0].options
    assert (await snaps.stat("view")).kind == Kind.VIEW

    listed = {i.name: i async for i in snaps.list()}
    assert sorted(listed) == ["container", "sha256:chain1", "sha256:chain2", "view"]
    assert listed["sha256:chain1"] == await snaps.stat("sha256:chain1")
    assert await snaps.usage("view") == Usage(0, 0)
    assert (await snaps.usage("sha256:chain1")).inodes >= 1

    for key in ("view", "container", "sha256:chain2", "sha256:chain1"):
        await snaps.remove(key)
    assert await snaps.all() == []


async def test_mount_contents(snaps: SnapshotsAPI, mounter: Mounter, daemon: DaemonProcess) -> None:
    target = mounter.mount(await snaps.prepare("base-tmp", "", ROOT), "base")
    os.mkdir(os.path.join(target, "etc"))
    write(target, "etc/group", b"root:x:0:\n")
    write(target, "gone", b"x")
    mounter.umount(target)
    await snaps.commit("base", "base-tmp", ROOT)

    top = mounter.mount(await snaps.prepare("top-tmp", "base", ROOT), "top")
    assert read(top, "etc/group") == b"root:x:0:\n"
    write(top, "etc/group", b"root:x:0:\nwheel:x:10:\n")
    os.unlink(os.path.join(top, "gone"))
    write(top, "new", b"new")
    mounter.umount(top)
    await snaps.commit("top", "top-tmp", ROOT)

    view = mounter.mount(await snaps.view("look", "top", ROOT), "look")
    assert sorted(os.listdir(view)) == ["etc", "new"]
    assert read(view, "etc/group") == b"root:x:0:\nwheel:x:10:\n"
    with pytest.raises(OSError) as err:
        write(view, "nope", b"")
    assert err.value.errno == errno.EROFS
    mounter.umount(view)

    # The lower layer is untouched, and a container on it sees the old contents.
    again = mounter.mount(await snaps.prepare("ctr", "base", ROOT), "ctr")
    assert sorted(os.listdir(again)) == ["etc", "gone"]
    mounter.umount(again)
    # Every mount source lies under the daemon's root: keys never reach paths.
    for m in await snaps.mounts("ctr"):
        for opt in [m.source, *m.options]:
            if "/" in opt:
                path = opt.split("=", 1)[-1]
                for part in path.split(":"):
                    assert part.startswith(str(daemon.root)), part

    for key in ("ctr", "look", "top", "base"):
        await snaps.remove(key)
    await snaps.cleanup()  # waits for the background removal of the data
    assert backend_dirs(daemon, snaps.snapshotter) == []


ODD_KEYS = ["with space", "/abs/mount/dir", "../../../etc", "..", "a/../../b", "default/1/base",
            "tab\tand\nnewline", "ключ ✓", "k" * 1000]


async def test_odd_keys(snaps: SnapshotsAPI, mounter: Mounter, daemon: DaemonProcess) -> None:
    await snaps.prepare("base-tmp", "", ROOT)
    await snaps.commit("base", "base-tmp", ROOT)
    parent = "base"
    for i, key in enumerate(ODD_KEYS):
        target = mounter.mount(await snaps.prepare(key, parent, ROOT), f"m{i}")
        write(target, f"f{i}", b"x")
        mounter.umount(target)
        await snaps.commit(key + " committed", key, ROOT)
        info = await snaps.stat(key + " committed")
        assert (info.name, info.parent) == (key + " committed", parent)
        parent = key + " committed"
    for key in ODD_KEYS:
        await snaps.view(key, parent, ROOT)
    view = mounter.mount(await snaps.mounts(ODD_KEYS[0]), "view")
    assert sorted(os.listdir(view)) == sorted(f"f{i}" for i in range(len(ODD_KEYS)))
    mounter.umount(view)
    assert not os.path.exists("/abs") and not os.path.exists("/b")
    names = {i.name async for i in snaps.list()}
    assert names == {"base", *ODD_KEYS, *(k + " committed" for k in ODD_KEYS)}
    # A key shaped like a backend key is just a key.
    assert (await snaps.stat("default/1/base")).kind == Kind.VIEW
    for key in ODD_KEYS:
        await snaps.remove(key)
    for key in reversed(ODD_KEYS):
        await snaps.remove(key + " committed")
    await snaps.remove("base")
    await snaps.cleanup()
    assert backend_dirs(daemon, snaps.snapshotter) == []


# -- errors -----------------------------------------------------------------------------------


async def test_errors_in_containerds_words(snaps: SnapshotsAPI) -> None:
    for call in (snaps.stat, snaps.mounts, snaps.usage, snaps.remove):
        with exact(NotFound, "snapshot missing does not exist"):
            await call("missing")  # type: ignore[operator]
    with exact(NotFound, "snapshot missing does not exist"):
        await snaps.commit("x", "missing")
    with exact(NotFound, "parent snapshot nope does not exist"):
        await snaps.prepare("x", "nope")

    await snaps.prepare("active", "", ROOT)
    await snaps.view("v", "", ROOT)
    with exact(InvalidArgument, 'parent "active" is not committed snapshot'):
        await snaps.prepare("x", "active")
    with exact(InvalidArgument, 'parent "v" is not committed snapshot'):
        await snaps.view("x", "v")
    with exact(AlreadyExists, 'snapshot "active"'):
        await snaps.prepare("active", "")
    with exact(AlreadyExists, 'snapshot "active"'):
        await snaps.view("active", "")
    with exact(AlreadyExists, 'snapshot "v"'):
        await snaps.commit("v", "active")
    with pytest.raises(FailedPrecondition):
        await snaps.commit("c", "v")  # views are never committable
    with pytest.raises(InvalidArgument):
        await snaps.prepare("", "")
    with pytest.raises(InvalidArgument):
        await snaps.commit("", "active")
    with pytest.raises(InvalidArgument, match="NUL"):
        await snaps.prepare("a\x00b", "")
    with pytest.raises(InvalidArgument, match="label key and value greater than maximum size"):
        await snaps.prepare("big", "", {"k": "v" * 5000})

    await snaps.commit("c", "active", ROOT)
    with exact(AlreadyExists, 'target snapshot "c"'):  # unpack's "already unpacked" signal
        await snaps.prepare("extract c", "", {"containerd.io/snapshot.ref": "c"})
    with pytest.raises(FailedPrecondition):
        await snaps.mounts("c")
    with pytest.raises(FailedPrecondition):
        await snaps.commit("c2", "c")
    await snaps.prepare("child", "c", ROOT)
    with exact(FailedPrecondition, "cannot remove snapshot with child"):
        await snaps.remove("c")
    # None of the failures left anything behind.
    assert sorted(i.name for i in await snaps.all()) == ["c", "child", "v"]
    await snaps.remove("child")
    await snaps.remove("c")


async def test_unknown_snapshotter(client: Client) -> None:
    with exact(InvalidArgument, "snapshotter not loaded: zfs"):
        await client.snapshots.using("zfs").prepare("x")
    with exact(InvalidArgument, "snapshotter not loaded: zfs"):
        await client.snapshots.using("zfs").all()
    with exact(InvalidArgument, "snapshotter argument missing"):
        await client.snapshots.using("").stat("x")


async def test_snapshotters_are_separate(client: Client) -> None:
    overlay, native = client.snapshots.using("overlayfs"), client.snapshots.using("native")
    await overlay.prepare("same", "", ROOT)
    with pytest.raises(NotFound):
        await native.stat("same")
    await native.prepare("same", "", ROOT)
    assert [i.name for i in await native.all()] == ["same"]
    await overlay.remove("same")
    assert (await native.stat("same")).kind == Kind.ACTIVE
    await native.remove("same")


async def test_update_field_masks(snaps: SnapshotsAPI) -> None:
    await snaps.prepare("s", "", {"a": "1", "b": "2", **ROOT})
    before = await snaps.stat("s")
    got = await snaps.update(Info("s", labels={"a": "x", "c": "3"}), ["labels.a", "labels.b"])
    assert got.labels == {"a": "x", **ROOT}  # b: absent in the update, so removed
    assert got.updated_at > before.updated_at and got.created_at == before.created_at
    assert got.kind == Kind.ACTIVE
    got = await snaps.update(Info("s", parent="ignored", labels={"only": "this"}), ["labels"])
    assert (got.labels, got.parent) == ({"only": "this"}, "")
    got = await snaps.update(Info("s", labels={"all": "new", **ROOT}))  # no mask: every label
    assert got.labels == {"all": "new", **ROOT}
    assert await snaps.stat("s") == got
    got = await snaps.set_labels("s", {"containerd.io/gc.ref.content.l.0": "sha256:ab", "all": ""})
    assert got.labels == {"containerd.io/gc.ref.content.l.0": "sha256:ab", **ROOT}
    with exact(InvalidArgument, 'cannot update "parent" field on snapshot "s"'):
        await snaps.update(Info("s", labels={"x": "y"}), ["labels.x", "parent"])
    with exact(InvalidArgument, 'cannot update "kind" field on snapshot "s"'):
        await snaps.update(Info("s"), ["kind"])
    assert await snaps.stat("s") == got  # all or nothing
    with pytest.raises(InvalidArgument, match="label key and value greater than maximum size"):
        await snaps.set_labels("s", {"k": "v" * 5000})
    with exact(NotFound, "snapshot missing does not exist"):
        await snaps.set_labels("missing", {"a": "b"})
    with pytest.raises(InvalidArgument):
        await snaps.update(Info(""), ["labels"])
    await snaps.remove("s")


async def test_list_filters(client: Client) -> None:
    s = client.snapshots
    await s.prepare("p-tmp", "", ROOT)
    await s.commit("p", "p-tmp", {"l": "1", **ROOT})
    await s.prepare("a", "p", {"l": "2", **ROOT})
    await s.view("v", "p", ROOT)
    await s.prepare("lone", "", {"team": "x.y", **ROOT})
    cases = {
        (): ["a", "lone", "p", "v"],
        ("kind==committed",): ["p"],
        ("kind==active",): ["a", "lone"],
        ("kind==view",): ["v"],
        ("parent==p",): ["a", "v"],
        ('parent==""',): ["lone", "p"],  # containerd's adaptor: parent is always present
        ("parent!=p",): ["lone", "p"],
        ("name==lone",): ["lone"],
        ("name~=^[av]$",): ["a", "v"],
        ("labels.l",): ["a", "p"],
        ("labels.l==2",): ["a"],
        ("labels.team==x.y",): ["lone"],
        ("kind==view", "name==lone"): ["lone", "v"],  # several filters: any may match
        ("kind==active,labels.l==2",): ["a"],  # selectors in one filter: all must match
        ("",): ["a", "lone", "p", "v"],
    }
    for filters, expected in cases.items():
        assert sorted(i.name for i in await s.all(*filters)) == expected, filters
    with pytest.raises(InvalidArgument, match="filters: parse error"):
        await s.all("name==")


async def test_list_streams_in_batches(daemon: DaemonProcess, client: Client) -> None:
    await client.snapshots.prepare("base-tmp", "", ROOT)
    await client.snapshots.commit("base", "base-tmp", ROOT)
    await asyncio.gather(*(client.snapshots.view(f"v{i:03}", "base", ROOT) for i in range(230)))
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stub = pb_grpc.SnapshotsStub(ch)
        batches = [len(r.info) async for r in stub.List(pb.ListSnapshotsRequest(snapshotter="overlayfs"),
                                                        metadata=[("containerd-namespace", "default")])]
    assert batches == [100, 100, 31]


# -- namespaces, leases, events ---------------------------------------------------------------


async def test_namespace_isolation(daemon: DaemonProcess, mounter: Mounter) -> None:
    async with daemon.client("ns-a") as a, daemon.client("ns-b") as b:
        target = mounter.mount(await a.snapshots.prepare("base-tmp", "", ROOT), "a")
        write(target, "owner", b"a")
        mounter.umount(target)
        await a.snapshots.commit("base", "base-tmp", ROOT)
        with pytest.raises(NotFound):
            await b.snapshots.stat("base")
        with exact(NotFound, "parent snapshot base does not exist"):
            await b.snapshots.prepare("x", "base")
        assert await b.snapshots.all() == []
        # The same key in another namespace is another snapshot.
        target = mounter.mount(await b.snapshots.prepare("base-tmp", "", ROOT), "b")
        assert os.listdir(target) == []
        write(target, "owner", b"b")
        mounter.umount(target)
        await b.snapshots.commit("base", "base-tmp", ROOT)
        for c, owner in ((a, b"a"), (b, b"b")):
            view = mounter.mount(await c.snapshots.view("look", "base", ROOT), "look")
            assert read(view, "owner") == owner
            mounter.umount(view)
        # A namespace holding snapshots cannot be deleted, in containerd's words.
        with pytest.raises(FailedPrecondition, match='snapshots on "overlayfs" snapshotter'):
            await a.delete_namespace("ns-a")
        for c in (a, b):
            await c.snapshots.remove("look")
            await c.snapshots.remove("base")
        await a.delete_namespace("ns-a")
        assert [n.name for n in await a.list_namespaces()] == ["ns-b"]


async def test_namespace_is_created_by_first_snapshot(client: Client) -> None:
    assert await client.list_namespaces() == []
    await client.snapshots.prepare("first", "", ROOT)
    assert [n.name for n in await client.list_namespaces()] == ["default"]
    await client.snapshots.remove("first")


async def test_leases_hold_new_snapshots(client: Client, daemon: DaemonProcess) -> None:
    lease = await client.leases.create("unpack")
    held = client.snapshots.using(lease="unpack")
    await held.prepare("extract", "")
    assert [(r.id, r.type) for r in await client.leases.resources(lease.id)] == [
        ("extract", "snapshots/overlayfs")]
    await held.commit("layer", "extract")
    assert [(r.id, r.type) for r in await client.leases.resources(lease.id)] == [
        ("layer", "snapshots/overlayfs")]
    # Held by the lease only: a collection keeps it while the lease lives.
    await client.leases.collect_garbage()
    assert (await client.snapshots.stat("layer")).kind == Kind.COMMITTED
    await client.leases.delete(lease.id, sync=True)
    with pytest.raises(NotFound):
        await client.snapshots.stat("layer")
    assert backend_dirs(daemon, "overlayfs") == []

    # A call in a lease that does not exist creates nothing, not even backend data.
    with exact(NotFound, 'lease "gone"'):
        await client.snapshots.using(lease="gone").prepare("x", "")
    assert await client.snapshots.all() == []
    assert backend_dirs(daemon, "overlayfs") == []


async def test_unrooted_snapshots_are_collected(client: Client) -> None:
    # containerd does the same: a view without gc.root or a lease is garbage.
    await client.snapshots.view("loose", "")
    await client.snapshots.prepare("kept", "", ROOT)
    await client.leases.collect_garbage()
    assert [i.name for i in await client.snapshots.all()] == ["kept"]
    await client.snapshots.remove("kept")


async def test_events(daemon: DaemonProcess, client: Client) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        call = await subscribed(ch, 'topic~="^/snapshot/"')
        await client.snapshots.prepare("k", "", ROOT)
        await client.snapshots.view("v", "", ROOT)  # no event, as containerd
        await client.snapshots.commit("n", "k", ROOT)
        await client.snapshots.remove("v")
        envs = []
        async for env in call:
            envs.append(env)
            if len(envs) == 3:
                break
        call.cancel()
    assert [(e.topic, e.event.type_url, e.namespace) for e in envs] == [
        ("/snapshot/prepare", "containerd.events.SnapshotPrepare", "default"),
        ("/snapshot/commit", "containerd.events.SnapshotCommit", "default"),
        ("/snapshot/remove", "containerd.events.SnapshotRemove", "default"),
    ]
    assert snap_events.SnapshotPrepare.FromString(envs[0].event.value) == snap_events.SnapshotPrepare(key="k")
    assert snap_events.SnapshotCommit.FromString(envs[1].event.value) == snap_events.SnapshotCommit(
        key="k", name="n")
    assert snap_events.SnapshotRemove.FromString(envs[2].event.value) == snap_events.SnapshotRemove(key="v")
    await client.snapshots.remove("n")


# -- raw gRPC ------------------------------------------------------------------------------------


async def test_raw_grpc(daemon: DaemonProcess) -> None:
    """What ctr sends, and the codes it relies on."""
    md = [("containerd-namespace", "tapx7")]
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stub = pb_grpc.SnapshotsStub(ch)

        async def code(call: object) -> grpc.StatusCode:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call  # type: ignore[misc]
            return info.value.code()

        stat = pb.StatSnapshotRequest(snapshotter="overlayfs", key="sha256:chain")
        assert await code(stub.Stat(stat, metadata=md)) == grpc.StatusCode.NOT_FOUND  # "unpack it"
        resp = await stub.Prepare(pb.PrepareSnapshotRequest(snapshotter="overlayfs", key="extract-1 sha256:chain",
                                                            labels=ROOT), metadata=md)
        assert [m.type for m in resp.mounts] == ["bind"]
        await stub.Commit(pb.CommitSnapshotRequest(snapshotter="overlayfs", name="sha256:chain",
                                                   key="extract-1 sha256:chain", labels=ROOT), metadata=md)
        info = (await stub.Stat(stat, metadata=md)).info
        assert (info.name, info.kind, dict(info.labels)) == ("sha256:chain", pb.COMMITTED, ROOT)
        assert info.created_at.seconds > 0
        ctr = pb.PrepareSnapshotRequest(snapshotter="overlayfs", key="tapc1", parent="sha256:chain", labels=ROOT)
        mounts = (await stub.Prepare(ctr, metadata=md)).mounts
        assert mounts[0].type == "overlay" and mounts[0].source == "overlay"
        assert [o.split("=")[0] for o in mounts[0].options][-3:] == ["workdir", "upperdir", "lowerdir"]
        assert await code(stub.Prepare(ctr, metadata=md)) == grpc.StatusCode.ALREADY_EXISTS
        rm = pb.RemoveSnapshotRequest(snapshotter="overlayfs", key="sha256:chain")
        assert await code(stub.Remove(rm, metadata=md)) == grpc.StatusCode.FAILED_PRECONDITION
        bad = pb.PrepareSnapshotRequest(snapshotter="overlayfs", key="x", parent="tapc1")
        assert await code(stub.Prepare(bad, metadata=md)) == grpc.StatusCode.INVALID_ARGUMENT
        bad = pb.PrepareSnapshotRequest(snapshotter="btrfs", key="x")
        assert await code(stub.Prepare(bad, metadata=md)) == grpc.StatusCode.INVALID_ARGUMENT
        # Zero times in an Update request (as Go's zero time arrives) are ignored.
        upd = pb.UpdateSnapshotRequest(snapshotter="overlayfs", info=pb.Info(name="tapc1", labels={"foo": "bar"}),
                                       update_mask=field_mask_pb2.FieldMask(paths=["labels.foo"]))
        upd.info.created_at.seconds = -62135596800
        got = (await stub.Update(upd, metadata=md)).info
        assert dict(got.labels) == {"foo": "bar", **ROOT} and got.created_at.seconds > 0
        usage = await stub.Usage(pb.UsageRequest(snapshotter="overlayfs", key="tapc1"), metadata=md)
        assert usage.inodes >= 1 and usage.size >= 0
        await stub.Cleanup(pb.CleanupRequest(snapshotter="overlayfs"), metadata=md)
        assert await code(stub.Stat(stat)) == grpc.StatusCode.FAILED_PRECONDITION  # no namespace header
        await stub.Remove(pb.RemoveSnapshotRequest(snapshotter="overlayfs", key="tapc1"), metadata=md)
        await stub.Remove(rm, metadata=md)
        assert await code(stub.Remove(rm, metadata=md)) == grpc.StatusCode.NOT_FOUND


# -- concurrency, restart, recovery -------------------------------------------------------------


async def test_concurrent_prepares_and_removes(client: Client, daemon: DaemonProcess) -> None:
    s = client.snapshots.using("native")
    await s.prepare("base-tmp", "", ROOT)
    await s.commit("base", "base-tmp", ROOT)
    outcomes = await asyncio.gather(*(s.prepare("contested", "base", ROOT) for _ in range(6)),
                                    return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if isinstance(o, BaseException))
    await s.remove("contested")
    # Removing a parent while children are being prepared on it: either order, never both.
    for round_ in range(5):
        await s.prepare(f"p{round_}-tmp", "base", ROOT)
        await s.commit(f"p{round_}", f"p{round_}-tmp", ROOT)
        child, removal = await asyncio.gather(s.prepare(f"c{round_}", f"p{round_}", ROOT), s.remove(f"p{round_}"),
                                              return_exceptions=True)
        if isinstance(removal, BaseException):
            assert isinstance(removal, FailedPrecondition) and not isinstance(child, BaseException)
            await s.remove(f"c{round_}")
            await s.remove(f"p{round_}")
        else:
            assert isinstance(child, NotFound)
    await s.remove("base")
    await s.cleanup()
    assert await s.all() == []
    assert backend_dirs(daemon, "native") == []


async def test_snapshots_survive_restart(daemon: DaemonProcess, mounter: Mounter) -> None:
    async with daemon.client() as c:
        target = mounter.mount(await c.snapshots.prepare("l-tmp", "", ROOT), "l")
        write(target, "kept", b"yes")
        mounter.umount(target)
        await c.snapshots.commit("l", "l-tmp", {"x": "1", **ROOT})
        mounts = await c.snapshots.prepare("ctr", "l", ROOT)
        before = await c.snapshots.all()
    assert daemon.stop() == 0
    d2 = start_daemon(base=daemon.base)
    try:
        async with d2.client() as c:
            assert await c.snapshots.all() == before
            assert await c.snapshots.mounts("ctr") == mounts
            target = mounter.mount(mounts, "ctr")
            assert read(target, "kept") == b"yes"
            mounter.umount(target)
            await c.snapshots.remove("ctr")
            await c.snapshots.remove("l")
    finally:
        assert d2.stop() == 0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, NativeSnapshotter]]:
    db = await Database.open(tmp_path / "metadata.db")
    backend = await NativeSnapshotter.open(tmp_path / "native")
    try:
        yield db, backend
    finally:
        await backend.close()
        await db.close()


async def test_store_completes_an_interrupted_commit(store: tuple[Database, NativeSnapshotter]) -> None:
    """A crash between the backend commit and the record update: the next store finishes it."""
    db, backend = store
    first = SnapshotStore(db, {"native": backend})
    await first.prepare("ns", "native", "active", "", {"a": "1"})
    bkey = await db.read(lambda conn: conn.execute("SELECT backend_key FROM snapshots").fetchone()[0])
    # What commit() does before its record update, as the crash left it.
    intent = {"namespace": "ns", "from": "active", "backend_from": bkey, "name": "done",
              "labels": {"b": "2"}, "lease": ""}
    await backend.commit("ns/99/done", bkey, labels={COMMIT_LABEL: json.dumps(intent)})
    again = SnapshotStore(db, {"native": backend})
    info = await again.stat("ns", "native", "done")
    assert (info.name, info.kind, info.labels) == ("done", Kind.COMMITTED, {"b": "2"})
    with pytest.raises(NotFound):
        await again.stat("ns", "native", "active")
    await again.remove("ns", "native", "done")
    await again.drain()
    assert [i async for i in backend.walk()] == []


async def test_store_cleanup_removes_orphans(store: tuple[Database, NativeSnapshotter]) -> None:
    """Backend snapshots no record refers to (a crash after the backend step) go at cleanup."""
    db, backend = store
    s = SnapshotStore(db, {"native": backend})
    await s.prepare("ns", "native", "live-tmp", "")
    await s.commit("ns", "native", "live", "live-tmp")
    await s.prepare("ns", "native", "kid", "live")
    await backend.prepare("ns/50/orphan", "")
    await backend.commit("ns/51/orphan-parent", "ns/50/orphan")
    await backend.view("ns/52/orphan-child", "ns/51/orphan-parent")
    assert sorted(await s.sweep("native")) == ["ns/51/orphan-parent", "ns/52/orphan-child"]
    await s.cleanup("native")
    recorded = await db.read(lambda c: sorted(r[0] for r in c.execute("SELECT backend_key FROM snapshots")))
    assert sorted([i.name async for i in backend.walk()]) == recorded
    assert {i.name for i in await s.list("ns", "native")} == {"live", "kid"}


async def test_store_removes_data_in_order(store: tuple[Database, NativeSnapshotter]) -> None:
    """Background removals keep their order: a child's data goes before its parent's."""
    db, backend = store
    s = SnapshotStore(db, {"native": backend})
    parent = ""
    for i in range(5):
        await s.prepare("ns", "native", f"l{i}-tmp", parent)
        await s.commit("ns", "native", f"l{i}", f"l{i}-tmp")
        parent = f"l{i}"
    for i in reversed(range(5)):
        await s.remove("ns", "native", f"l{i}")  # returns before the data is gone
    await s.drain()
    assert [i async for i in backend.walk()] == []


async def test_store_compensates_a_failed_record(store: tuple[Database, NativeSnapshotter]) -> None:
    db, backend = store
    s = SnapshotStore(db, {"native": backend})
    with pytest.raises(NotFound):
        await s.prepare("ns", "native", "x", "", lease="no-such-lease")
    assert [i async for i in backend.walk()] == []


async def test_store_unknown_overlay_only_when_loaded(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "metadata.db")
    overlay = await OverlaySnapshotter.open(tmp_path / "overlayfs")
    try:
        s = SnapshotStore(db, {"overlayfs": overlay})
        with pytest.raises(InvalidArgument, match="snapshotter not loaded: native"):
            await s.prepare("ns", "native", "x")
        await s.prepare("ns", "overlayfs", "x")
        assert [i.name for i in await s.list("ns", "overlayfs")] == ["x"]
        await s.remove("ns", "overlayfs", "x")
    finally:
        await overlay.close()
        await db.close()


# -- the dock CLI ------------------------------------------------------------------------------


def dock(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": daemon.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True,
                          env=env, timeout=30, cwd=REPO)


def test_cli(daemon: DaemonProcess, mounter: Mounter) -> None:
    def ok(*args: str) -> str:
        res = dock(daemon, *args)
        assert res.returncode == 0, res.stderr
        return res.stdout

    target = str(mounter.base / "t")
    os.mkdir(target)
    printed = ok("snapshots", "prepare", "--target", target, "base tmp")
    assert printed.startswith("mount -t bind ") and printed.endswith(f" {target} -o rw,rbind\n")
    assert ok("snapshots", "mounts", target, "base tmp") == printed
    res = subprocess.run(shlex.split(printed), capture_output=True, text=True)  # as a user would
    assert res.returncode == 0, res.stderr
    mounter.targets.append(target)
    write(target, "big", b"x" * 100_000)
    mounter.umount(target)
    ok("snapshots", "commit", "--label", "team=red", "base", "base tmp")
    ok("snap", "--snapshotter", "native", "prepare", "elsewhere")
    ok("snapshots", "prepare", "ctr", "base")
    ok("snapshots", "view", "look", "base")

    rows = [line.split() for line in ok("snapshots", "ls").splitlines()]
    assert rows == [["KEY", "PARENT", "KIND"], ["base", "Committed"], ["ctr", "base", "Active"],
                    ["look", "base", "View"]]
    assert ok("snapshots", "ls", "-q", "kind==committed") == "base\n"
    listed = json.loads(ok("--format", "json", "snapshots", "ls"))
    assert [(i["name"], i["kind"]) for i in listed] == [("base", "committed"), ("ctr", "active"), ("look", "view")]
    assert ok("snapshots", "--snapshotter", "native", "ls", "-q") == "elsewhere\n"
    assert ok("snapshots", "tree").splitlines() == [" base", "  \\_ ctr", "  \\_ look"]

    usage = [line.split() for line in ok("snapshots", "usage", "base").splitlines()]
    assert usage[0] == ["KEY", "SIZE", "INODES"] and usage[1][0] == "base" and usage[1][2] in ("KiB", "MiB")
    raw = json.loads(ok("--format", "json", "snapshots", "usage", "base"))
    assert raw[0]["key"] == "base" and raw[0]["size"] >= 100_000 and raw[0]["inodes"] >= 2

    info = json.loads(ok("--format", "json", "snapshots", "info", "base"))
    assert (info["name"], info["kind"], info["labels"]["team"]) == ("base", "committed", "red")
    assert "containerd.io/gc.root" in info["labels"]  # like ctr: kept until removed
    assert "kind:" in ok("snapshots", "info", "ctr")
    assert "tier=1" in ok("snapshots", "label", "base", "tier=1", "team=")
    assert "team" not in json.loads(ok("--format", "json", "snapshots", "info", "base"))["labels"]
    mounts = json.loads(ok("--format", "json", "snapshots", "mounts", target, "ctr"))
    assert mounts[0]["type"] == "overlay"

    res = dock(daemon, "snapshots", "rm", "base")
    assert res.returncode == 1 and res.stderr.strip() == "dock: cannot remove snapshot with child: failed precondition"
    res = dock(daemon, "snapshots", "rm", "nothere")
    assert res.returncode == 1 and "snapshot nothere does not exist: not found" in res.stdout
    res = dock(daemon, "snapshots", "--snapshotter", "zfs", "ls")
    assert res.returncode == 1 and res.stderr.strip() == "dock: snapshotter not loaded: zfs: invalid argument"
    assert ok("snapshots", "rm", "ctr", "look", "base").split() == ["ctr", "look", "base"]
    ok("snapshots", "--snapshotter", "native", "rm", "elsewhere")
    assert ok("snapshots", "ls", "-q") == ""
