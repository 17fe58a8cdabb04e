"""Diff.Apply writes only into an active snapshot (supervisor/differ.py `_check_writable`).

A committed snapshot's tree is shared by every image and snapshot on it, and a view of one is a
read-only bind of that very tree: before, a client applying a layer onto a view's mounts (or an
overlay naming a committed snapshot's directory as its upperdir) rewrote the committed layer
under every container using it. Driven over gRPC as `ctr` and containerd's client send it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import grpc
import pytest

from dockyard_api.containerd.services.diff.v1 import diff_pb2, diff_pb2_grpc
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from dockyard_api.containerd.types import descriptor_pb2, mount_pb2
from dockyard_common.mountopts import overlay_dirs
from tests.ctr import ctr, ok
from tests.daemon import DaemonProcess, traceback_free_daemon
from tests.unit.archive_fixtures import build_tar, file

pytestmark = pytest.mark.root

NS = "applytarget"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        yield d


def layer(name: str, data: bytes) -> bytes:
    return build_tar([file(name, data, mode=0o644)])


def stored(d: DaemonProcess, blob: bytes) -> descriptor_pb2.Descriptor:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    ok(ctr(d, "content", "ingest", "--expected-size", str(len(blob)), "--expected-digest", digest,
           f"layer-{digest[7:19]}", namespace=NS, input=blob, binary=True))
    return descriptor_pb2.Descriptor(media_type=LAYER_TYPE, digest=digest, size=len(blob))


def refused(call: grpc.UnaryUnaryMultiCallable, request: object, code: grpc.StatusCode,
            md: list[tuple[str, str]]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(request, metadata=md, timeout=30)
    assert err.value.code() == code, err.value.details()  # type: ignore[attr-defined]
    return str(err.value.details())  # type: ignore[attr-defined]


def test_layers_go_into_active_snapshots_only(daemon: DaemonProcess) -> None:
    channel = grpc.insecure_channel(f"unix://{daemon.address}")
    # what the test makes is leased, as ctr's pulls are: the collector takes nothing from under it
    lease = ok(ctr(daemon, "leases", "create", namespace=NS)).split()[0]
    md = [("containerd-namespace", NS), ("containerd-lease", lease)]
    try:
        snaps, diff = snapshots_pb2_grpc.SnapshotsStub(channel), diff_pb2_grpc.DiffStub(channel)
        sn = "overlayfs"
        base = snaps.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter=sn, key="base-active"),
                             metadata=md, timeout=30).mounts
        diff.Apply(diff_pb2.ApplyRequest(diff=stored(daemon, layer("etc/motd", b"committed\n")), mounts=base),
                   metadata=md, timeout=30)
        snaps.Commit(snapshots_pb2.CommitSnapshotRequest(snapshotter=sn, name="base", key="base-active"),
                     metadata=md, timeout=30)
        committed_fs = base[0].source  # the bind of a parentless snapshot: its fs, now committed
        motd = os.path.join(committed_fs, "etc", "motd")
        hostile = stored(daemon, layer("etc/motd", b"rewritten\n"))

        # A view of the committed snapshot: a read-only bind of its very tree.
        view = snaps.View(snapshots_pb2.ViewSnapshotRequest(snapshotter=sn, key="view", parent="base"),
                          metadata=md, timeout=30).mounts
        assert view[0].type == "bind" and view[0].source == committed_fs
        message = refused(diff.Apply, diff_pb2.ApplyRequest(diff=hostile, mounts=view),
                          grpc.StatusCode.FAILED_PRECONDITION, md)
        assert "holds a committed snapshot of the overlayfs snapshotter" in message, message

        # An overlay naming the committed tree as its upperdir (with an active snapshot's workdir).
        child = snaps.Prepare(snapshots_pb2.PrepareSnapshotRequest(snapshotter=sn, key="child", parent="base"),
                              metadata=md, timeout=30).mounts
        dirs = overlay_dirs(list(child[0].options))
        assert dirs.upper and dirs.lowers == (committed_fs,)
        steered = [mount_pb2.Mount(type="overlay", source="overlay", options=[
            f"workdir={dirs.work}", f"upperdir={committed_fs}", f"lowerdir={dirs.upper}"])]
        refused(diff.Apply, diff_pb2.ApplyRequest(diff=hostile, mounts=steered),
                grpc.StatusCode.FAILED_PRECONDITION, md)
        with open(motd, "rb") as f:
            assert f.read() == b"committed\n"  # the committed layer is as it was

        # The active child takes the layer, in its own upperdir.
        diff.Apply(diff_pb2.ApplyRequest(diff=hostile, mounts=child), metadata=md, timeout=30)
        with open(os.path.join(dirs.upper, "etc", "motd"), "rb") as f:
            assert f.read() == b"rewritten\n"
        with open(motd, "rb") as f:
            assert f.read() == b"committed\n"
        for key in ("child", "view", "base"):
            snaps.Remove(snapshots_pb2.RemoveSnapshotRequest(snapshotter=sn, key=key), metadata=md, timeout=30)
    finally:
        ok(ctr(daemon, "leases", "delete", lease, namespace=NS))
        channel.close()
