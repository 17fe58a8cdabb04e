"""Garbage collection in a real dockyardd: content written through Content/Write, held by
leases and labels, collected through Leases/Delete(sync) and the dockyard.gc.v1 Collect RPC."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from dock.client import Client
from dockyard_api.containerd.services.content.v1 import content_pb2 as cpb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as spb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc
from dockyard_common.errors import NotFound
from supervisor.content.local import LocalContentStore
from tests.daemon import DaemonProcess


@pytest.fixture
def daemon(daemon: DaemonProcess) -> DaemonProcess:
    """The daemon once its start-up collection is done: the tests count what their own
    collections remove, and that one would race them for it."""
    daemon.wait_startup_collection()
    return daemon


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(daemon: DaemonProcess, digest: str) -> str:
    return str(daemon.root / "content" / "blobs" / "sha256" / digest.removeprefix("sha256:"))


def metadata(ns: str, lease: str = "") -> list[tuple[str, str]]:
    return [("containerd-namespace", ns)] + ([("containerd-lease", lease)] if lease else [])


async def write(daemon: DaemonProcess, ns: str, data: bytes, *, lease: str = "",
                labels: dict[str, str] | None = None, commit: bool = True, ref: str = "") -> str:
    """Content/Write as ctr drives it: STAT, WRITE, COMMIT (or no commit: an abandoned ingest)."""
    digest = digest_of(data)
    reqs = [cpb.WriteContentRequest(action=cpb.STAT, ref=ref or f"ref-{digest}", total=len(data),
                                    expected=digest if commit else ""),
            cpb.WriteContentRequest(action=cpb.WRITE, offset=0, data=data)]
    if commit:
        reqs.append(cpb.WriteContentRequest(action=cpb.COMMIT, offset=len(data), total=len(data),
                                            expected=digest, labels=labels or {}))
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        call = content_pb2_grpc.ContentStub(ch).Write(iter(reqs), metadata=metadata(ns, lease))
        async for _ in call:
            pass
    return digest


async def content_call(daemon: DaemonProcess, ns: str, method: str, request: object) -> object:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        return await getattr(content_pb2_grpc.ContentStub(ch), method)(request, metadata=metadata(ns))


async def exists(daemon: DaemonProcess, ns: str, digest: str) -> bool:
    try:
        await content_call(daemon, ns, "Info", cpb.InfoRequest(digest=digest))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return False
    return True


async def relabel(daemon: DaemonProcess, ns: str, digest: str, labels: dict[str, str]) -> None:
    req = cpb.UpdateRequest(info=cpb.Info(digest=digest, labels=labels))
    req.update_mask.paths.append("labels")
    await content_call(daemon, ns, "Update", req)


def on_disk(daemon: DaemonProcess, digest: str) -> bool:
    return os.path.exists(blob_path(daemon, digest))


async def test_content_under_a_lease_lives_until_the_lease_is_deleted(client: Client, daemon: DaemonProcess) -> None:
    lease = await client.leases.create("pull-1", expires=timedelta(hours=1))
    digest = await write(daemon, "default", b"layer bytes", lease=lease.id)
    assert [(r.type, r.id) for r in await client.leases.resources("pull-1")] == [("content", digest)]
    stats = await client.leases.collect_garbage()
    assert stats.content_removed == 0
    assert await exists(daemon, "default", digest) and on_disk(daemon, digest)
    await client.leases.delete("pull-1", sync=True)  # collected before the reply
    assert not await exists(daemon, "default", digest)
    assert not on_disk(daemon, digest)


async def test_client_wide_lease_holds_everything_the_block_creates(client: Client, daemon: DaemonProcess) -> None:
    async with client.leased() as lease:
        digest = digest_of(b"held by the block")
        await client.content.write("block-ref", b"held by the block", expected=digest)
        await client.snapshots.prepare("block-snap")
        assert {(r.type, r.id) for r in await client.leases.resources(lease)} == {
            ("content", digest), ("snapshots/overlayfs", "block-snap")}
        assert (await client.leases.collect_garbage()).content_removed == 0
    assert client.lease == ""
    assert [x.id for x in await client.leases.list()] == []
    await client.leases.collect_garbage()
    assert not await exists(daemon, "default", digest)
    with pytest.raises(NotFound):
        await client.snapshots.stat("block-snap")


async def test_lease_delete_without_sync_collects_soon(client: Client, daemon: DaemonProcess) -> None:
    await client.leases.create("l")
    digest = await write(daemon, "default", b"soon gone", lease="l")
    await client.leases.delete("l")
    deadline = time.monotonic() + 5
    while on_disk(daemon, digest) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not on_disk(daemon, digest) and not await exists(daemon, "default", digest)


async def test_gc_root_label_keeps_content(client: Client, daemon: DaemonProcess) -> None:
    await client.leases.create("l")
    rooted = await write(daemon, "default", b"rooted", lease="l", labels={"containerd.io/gc.root": "now"})
    plain = await write(daemon, "default", b"plain", lease="l")
    await client.leases.delete("l", sync=True)
    assert await exists(daemon, "default", rooted) and on_disk(daemon, rooted)
    assert not await exists(daemon, "default", plain) and not on_disk(daemon, plain)
    await relabel(daemon, "default", rooted, {})
    stats = await client.leases.collect_garbage()
    assert stats.content_removed == 1 and not on_disk(daemon, rooted)


async def test_gc_ref_content_labels_keep_children(client: Client, daemon: DaemonProcess) -> None:
    await client.leases.create("l")
    config = await write(daemon, "default", b'{"config": true}', lease="l")
    layer = await write(daemon, "default", b"layer", lease="l")
    unrelated = await write(daemon, "default", b"unrelated", lease="l")
    manifest = await write(daemon, "default", b'{"manifest": true}', lease="l", labels={
        "containerd.io/gc.root": "x",
        "containerd.io/gc.ref.content.config": config,
        "containerd.io/gc.ref.content.l.0": layer,
    })
    await client.leases.delete("l", sync=True)
    for d in (manifest, config, layer):
        assert await exists(daemon, "default", d) and on_disk(daemon, d)
    assert not on_disk(daemon, unrelated)
    # the manifest loses its root: the whole image goes
    await relabel(daemon, "default", manifest, {"containerd.io/gc.ref.content.config": config,
                                                "containerd.io/gc.ref.content.l.0": layer})
    stats = await client.leases.collect_garbage()
    assert stats.content_removed == 3
    assert not any(on_disk(daemon, d) for d in (manifest, config, layer))


async def test_blob_shared_by_two_namespaces(daemon: DaemonProcess) -> None:
    data = b"the same bytes in two namespaces"
    root = {"containerd.io/gc.root": "x"}
    async with daemon.client("a") as a, daemon.client("b") as b:
        await a.leases.create("l")
        await b.leases.create("l")
        digest = await write(daemon, "a", data, lease="l", labels=root)
        assert await write(daemon, "b", data, lease="l", labels=root) == digest
        await a.leases.delete("l")
        await b.leases.delete("l")
        await content_call(daemon, "a", "Delete", cpb.DeleteContentRequest(digest=digest))
        stats = await a.leases.collect_garbage()
        assert stats.content_removed == 0  # the record is gone already; b still has one
        assert on_disk(daemon, digest) and await exists(daemon, "b", digest)
        assert not await exists(daemon, "a", digest)
        await relabel(daemon, "b", digest, {})
        stats = await b.leases.collect_garbage()
        assert stats.content_removed == 1 and not on_disk(daemon, digest)


def backdate_ingests(daemon: DaemonProcess, age: timedelta) -> None:
    """Age every ingest record, as if `age` had passed (the daemon keeps running meanwhile)."""
    conn = sqlite3.connect(daemon.root / "metadata.db", timeout=10)
    try:
        with conn:
            conn.execute("UPDATE ingests SET created_at=?", ((datetime.now(UTC) - age).isoformat(),))
    finally:
        conn.close()


async def statuses(daemon: DaemonProcess, ns: str) -> list[str]:
    resp = await content_call(daemon, ns, "ListStatuses", cpb.ListStatusesRequest())
    return [s.ref for s in resp.statuses]  # type: ignore[attr-defined]


async def test_abandoned_ingest_is_removed_after_the_grace_period(client: Client, daemon: DaemonProcess) -> None:
    await write(daemon, "default", b"half a blob", commit=False, ref="abandoned")
    await client.leases.create("l")
    await write(daemon, "default", b"leased half", commit=False, ref="leased", lease="l")
    ingest_dir = daemon.root / "content" / "ingest"
    assert await statuses(daemon, "default") == ["abandoned", "leased"]
    stats = await client.leases.collect_garbage()
    assert stats.ingests_removed == 0  # young: within the 24 hour grace period
    backdate_ingests(daemon, timedelta(hours=25))
    stats = await client.leases.collect_garbage()
    assert stats.ingests_removed == 1
    assert await statuses(daemon, "default") == ["leased"]
    assert len(os.listdir(ingest_dir)) == 1
    await client.leases.delete("l", sync=True)
    assert await statuses(daemon, "default") == [] and os.listdir(ingest_dir) == []


async def test_orphaned_backend_blobs_are_removed_once_old(client: Client, daemon: DaemonProcess) -> None:
    backend = LocalContentStore(daemon.root / "content")  # the daemon's store, shared on disk
    digests = []
    for data in (b"orphan old", b"orphan young"):
        d = digest_of(data)
        w = await backend.writer(f"orphan-{d}", total=len(data), expected=d)
        await w.write(data, 0)
        await w.commit(len(data), d)
        digests.append(d)
    hour_ago = time.time() - 3600
    os.utime(blob_path(daemon, digests[0]), (hour_ago, hour_ago))
    await client.leases.collect_garbage()
    assert not on_disk(daemon, digests[0])
    assert on_disk(daemon, digests[1])  # may be a write whose record is not committed yet


async def test_nothing_reachable_is_ever_removed(daemon: DaemonProcess) -> None:
    """A graph of 30 blobs over two namespaces, roots and references mixed; exactly the
    unreachable ones go, and a second collection removes nothing more."""
    blobs = {i: f"blob {i}".encode() for i in range(30)}
    d = {i: digest_of(b) for i, b in blobs.items()}
    refs = {0: [1, 2], 1: [3], 3: [4, 0], 5: [6], 7: [8], 10: [11, 12], 12: [13], 20: [21]}
    rooted = {0, 10, 22}
    held_by_lease = {5, 14}
    expected_alive = {0, 1, 2, 3, 4, 10, 11, 12, 13, 22, 5, 6, 14}
    async with daemon.client("graph") as c:
        await c.leases.create("build")
        await c.leases.create("keep")
        for i in sorted(blobs, reverse=True):
            labels = {f"containerd.io/gc.ref.content.{n}": d[t] for n, t in enumerate(refs.get(i, []))}
            if i in rooted:
                labels["containerd.io/gc.root"] = "x"
            await write(daemon, "graph", blobs[i], lease="build", labels=labels)
            if i in held_by_lease:
                await c.leases.add_resource("keep", d[i], "content")
        await c.leases.delete("build", sync=True)
        alive = {i for i in blobs if await exists(daemon, "graph", d[i])}
        assert alive == expected_alive
        assert {i for i in blobs if on_disk(daemon, d[i])} == expected_alive
        stats = await c.leases.collect_garbage()
        assert stats.content_removed == 0
        await c.leases.delete("keep", sync=True)
        alive = {i for i in blobs if await exists(daemon, "graph", d[i])}
        assert alive == expected_alive - {5, 6, 14}


async def test_collect_reports_stats(client: Client) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.leases.create("expired", {"containerd.io/gc.expire": past})
    stats = await client.leases.collect_garbage()
    assert stats.leases_removed == 1 and stats.duration >= 0
    with pytest.raises(NotFound):
        await client.leases.delete("expired")


async def snap_call(daemon: DaemonProcess, method: str, request: object, ns: str = "default",
                    lease: str = "") -> object:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stub = snapshots_pb2_grpc.SnapshotsStub(ch)
        return await getattr(stub, method)(request, metadata=metadata(ns, lease))


async def snap_exists(daemon: DaemonProcess, key: str) -> bool:
    try:
        await snap_call(daemon, "Stat", spb.StatSnapshotRequest(snapshotter="native", key=key))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return False
    return True


def native_dirs(daemon: DaemonProcess) -> list[str]:
    return [n for n in os.listdir(daemon.root / "snapshots" / "native" / "snapshots") if not n.startswith(".")]


async def test_snapshots_held_by_leases_labels_and_parents(client: Client, daemon: DaemonProcess) -> None:
    """ctr's unpack in miniature: layers prepared and committed under a lease, the config
    blob referring to the top of the chain; then a container snapshot under its own lease."""
    await client.leases.create("unpack")
    for key, parent in (("extract-1", ""), ("extract-2", "chain-1")):
        await snap_call(daemon, "Prepare", spb.PrepareSnapshotRequest(snapshotter="native", key=key, parent=parent),
                        lease="unpack")
        name = "chain-" + key[-1]
        await snap_call(daemon, "Commit", spb.CommitSnapshotRequest(snapshotter="native", name=name, key=key),
                        lease="unpack")
    await snap_call(daemon, "Prepare", spb.PrepareSnapshotRequest(snapshotter="native", key="scratch"),
                    lease="unpack")
    config = await write(daemon, "default", b'{"rootfs": "chain-2"}', lease="unpack", labels={
        "containerd.io/gc.root": "x", "containerd.io/gc.ref.snapshot.native": "chain-2"})
    await client.leases.create("ctr-1")
    await snap_call(daemon, "Prepare", spb.PrepareSnapshotRequest(snapshotter="native", key="ctr-1",
                                                                  parent="chain-2"), lease="ctr-1")
    assert len(native_dirs(daemon)) == 4
    await client.leases.delete("unpack", sync=True)
    assert await snap_exists(daemon, "chain-1") and await snap_exists(daemon, "chain-2")
    assert await snap_exists(daemon, "ctr-1") and not await snap_exists(daemon, "scratch")
    assert len(native_dirs(daemon)) == 3
    # the container goes: its snapshot with it; the image's chain stays
    await client.leases.delete("ctr-1", sync=True)
    assert not await snap_exists(daemon, "ctr-1") and await snap_exists(daemon, "chain-2")
    # the image goes: everything does, children before parents
    await relabel(daemon, "default", config, {"containerd.io/gc.ref.snapshot.native": "chain-2"})
    stats = await client.leases.collect_garbage()
    assert (stats.content_removed, stats.snapshots_removed) == (1, 2)
    assert not await snap_exists(daemon, "chain-1") and native_dirs(daemon) == []


async def test_gc_root_label_keeps_a_snapshot(client: Client, daemon: DaemonProcess) -> None:
    await snap_call(daemon, "Prepare", spb.PrepareSnapshotRequest(
        snapshotter="native", key="rooted", labels={"containerd.io/gc.root": "2025-01-01T00:00:00Z"}))
    await snap_call(daemon, "View", spb.ViewSnapshotRequest(snapshotter="native", key="bare-view"))
    # The unlabelled view goes, as containerd collects `ctr snapshots view` (this collection's, or
    # the daemon's start-up one if it came after the View); the rooted one stays.
    await client.leases.collect_garbage()
    assert await snap_exists(daemon, "rooted") and not await snap_exists(daemon, "bare-view")
