"""Hostile stream peers and racing clients (the second adversarial round; the first is
tests/integration/test_grpc_inputs.py):

- a peer that opens server streams and never reads them (no WINDOW_UPDATE, or nothing read off
  the socket at all): each stream handed the transport a frame of up to the peer's
  MAX_FRAME_SIZE before the writer looked at back-pressure, and each stuck stream held its
  message several times over (1 000 Content.Read streams: 2-6 GiB of daemon memory). Now what
  waits for such a peer is bounded per connection (`h2.Limits.send_buffer`); past it a stream's
  answer, and new calls, end RESOURCE_EXHAUSTED; a refused handler lets go of its chunk and its
  reader at once (its generator is closed, not left to the garbage collector);
- an event subscriber that does not read is cut off by bytes as well as by count (4 096 events
  of 4 MiB were 16 GiB);
- a `-bin` header that is not base64, or a grpc-timeout of 5 000 digits, raised before the call
  could answer: the client waited for its own deadline and the stream stayed open for ever;
- 50 clients creating, updating, getting and deleting the same containers, images, leases,
  snapshots and volumes get proper codes only, and leave metadata a restart accepts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, field_mask_pb2

from dockyard_api.containerd.services.containers.v1 import containers_pb2 as cpb
from dockyard_api.containerd.services.containers.v1 import containers_pb2_grpc as cgrpc
from dockyard_api.containerd.services.content.v1 import content_pb2 as content_pb
from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from dockyard_api.containerd.services.images.v1 import images_pb2 as ipb
from dockyard_api.containerd.services.images.v1 import images_pb2_grpc as igrpc
from dockyard_api.containerd.services.leases.v1 import leases_pb2 as lpb
from dockyard_api.containerd.services.leases.v1 import leases_pb2_grpc as lgrpc
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2 as spb
from dockyard_api.containerd.services.snapshots.v1 import snapshots_pb2_grpc as sgrpc
from dockyard_api.containerd.services.version.v1 import version_pb2_grpc
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_api.dockyard.volumes.v1 import volumes_pb2 as vpb
from dockyard_api.dockyard.volumes.v1 import volumes_pb2_grpc as vgrpc
from supervisor.grpcserver import Server, h2
from tests.daemon import DaemonProcess, remove_base, start_daemon, traceback_free_daemon
from tests.integration.grpc_stress import serving
from tests.integration.h2_raw import RawClient, grpc_message, request_headers
from tests.waiting import wait_until_async

MiB = 1 << 20
NS = "streams"
VERSION = "/containerd.services.version.v1.Version/Version"
RESOURCE_EXHAUSTED = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])


def rss(pid: int) -> int:
    """Resident memory of `pid` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def fds_naming(pid: int, text: str) -> int:
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            n += text in os.readlink(fd)
    return n


def big_windows() -> bytes:
    """A client preface that lets the server send without limit: the largest windows and frames."""
    settings = struct.pack(">HIHI", h2.INITIAL_WINDOW_SIZE, h2.MAX_WINDOW, h2.MAX_FRAME_SIZE, (1 << 24) - 1)
    return (h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0, settings)
            + h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW - h2.DEFAULT_WINDOW)))


def calls(path: str, n: int, body: bytes = b"", **headers: str) -> bytes:
    block = request_headers(path, **headers)
    return b"".join(h2.frame(h2.HEADERS, h2.END_HEADERS, sid, block) + h2.frame(h2.DATA, h2.END_STREAM, sid, body)
                    for sid in range(1, 2 * n, 2))


# -- our server alone: the books are visible -----------------------------------------------------
chunks = collections.Counter[str]()


async def endless(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """1 MiB messages until the client goes, as Content.Read of a large blob."""
    chunks["started"] += 1
    try:
        while True:
            yield b"x" * MiB
    finally:
        chunks["closed"] += 1


HANDLERS = grpc.method_handlers_generic_handler("test.Streams", {
    "Endless": grpc.unary_stream_rpc_method_handler(endless),
})
SEND_BUFFER = 8 * MiB


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    chunks.clear()
    path = str(tmp_path / "s.sock")
    limits = h2.Limits(send_buffer=SEND_BUFFER, idle_timeout=30)
    async with serving(path, HANDLERS, limits=limits) as server:
        yield server, path


async def test_a_peer_reading_nothing_holds_at_most_the_send_buffer(served: tuple[Server, str]) -> None:
    """Windows wide open and nothing read off the socket: back-pressure is the transport's alone.
    100 endless streams; what the server keeps for them stays within its bounds, and everything
    ends when the peer goes."""
    server, path = served
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        await loop.sock_connect(s, path)
        await loop.sock_sendall(s, big_windows() + calls("/test.Streams/Endless", 100, grpc_message(b"")))
        # Every call was taken, and those past the bound ended (their answers refused).
        await wait_until_async(lambda: [c.last_stream for c in server._connections] == [199]
                               and len(server._calls) <= SEND_BUFFER // MiB + 1, 10, what="the refused streams to end")
        (conn,) = server._connections
        assert conn.parked <= SEND_BUFFER + MiB
        assert conn.transport is not None and conn.transport.get_write_buffer_size() < 512 << 10
        assert chunks["closed"] == chunks["started"] - len(server._calls)  # refused ones let go of what they held
        # Calls that waited for a slot (supervisor/grpcserver/admission.py) started after the
        # bound was reached: refused before their handlers ran.
        assert chunks["started"] < 100
    # the peer went: every stream ends, every generator is closed
    await wait_until_async(lambda: not server._calls and chunks["closed"] == chunks["started"], 10,
                           what="the streams to end")
    assert conn.parked == 0


async def test_streams_without_window_are_refused_past_the_bound(served: tuple[Server, str]) -> None:
    """A gRPC client that never consumes its messages sends no WINDOW_UPDATE: each stream parks
    its next message. Past the bound the calls end with RESOURCE_EXHAUSTED in proper trailers,
    and other clients are served meanwhile."""
    server, path = served
    raw = await RawClient.connect(path)
    await raw.send(calls("/test.Streams/Endless", 60, grpc_message(b"")))
    statuses: collections.Counter[str] = collections.Counter()
    messages: set[str] = set()
    async with asyncio.timeout(10):
        while statuses[RESOURCE_EXHAUSTED] < 60 - SEND_BUFFER // MiB - 1:
            f = await raw.read_frame()
            assert f is not None, "connection closed"
            if f[0] == h2.HEADERS:
                headers = raw.headers_of(f[3])
                if "grpc-status" in headers:
                    statuses[headers["grpc-status"]] += 1
                    messages.add(headers.get("grpc-message", ""))
    assert set(statuses) == {RESOURCE_EXHAUSTED}, statuses
    assert any("not reading" in m for m in messages), messages
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:  # another client: served
        call = ch.unary_stream("/test.Streams/Endless")(b"")
        assert len(await asyncio.wait_for(call.read(), 5)) == MiB  # type: ignore[arg-type]
        call.cancel()
    raw.close()
    await wait_until_async(lambda: not server._calls, 10, what="the streams to end")
    assert chunks["closed"] == chunks["started"]


# -- the daemon ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        yield d


async def _blob(d: DaemonProcess, size: int) -> str:
    data = random.Random(size).randbytes(size)
    async with d.client(NS) as client:
        with contextlib.suppress(Exception):
            await client.leases.create(id="streams-keep")
        client.lease = "streams-keep"
        expected = "sha256:" + hashlib.sha256(data).hexdigest()
        info = await client.content.write(f"streams-{size}", data, expected=expected)
    return info.digest


async def _version_within(d: DaemonProcess, seconds: float) -> None:
    async with grpc.aio.insecure_channel(f"unix://{d.address}") as ch:
        t0 = time.monotonic()
        await version_pb2_grpc.VersionStub(ch).Version(empty_pb2.Empty(), timeout=30)
        assert time.monotonic() - t0 < seconds


async def test_content_read_streams_never_read_keep_the_daemon_small(daemon: DaemonProcess) -> None:
    digest = await _blob(daemon, 8 * MiB)
    pid, hexdigest = daemon.proc.pid, digest.split(":")[1]
    base = peak = rss(pid)
    raw = await RawClient.connect(daemon.address)
    n = 200
    await raw.send(calls("/containerd.services.content.v1.Content/Read", n,
                         grpc_message(content_pb.ReadContentRequest(digest=digest).SerializeToString()),
                         **{"containerd-namespace": NS}))
    refused = 0
    async with asyncio.timeout(30):  # frames are read, windows never credited
        while refused < n - 40:  # 32 MiB of 1 MiB chunks may wait; the rest are refused
            f = await raw.read_frame()
            assert f is not None, "connection closed"
            if f[0] == h2.HEADERS and raw.headers_of(f[3]).get("grpc-status") == RESOURCE_EXHAUSTED:
                refused += 1
            peak = max(peak, rss(pid))
    await _version_within(daemon, 5)
    peak = max(peak, rss(pid))
    # ~3 copies of 1 MiB per stream before: 600 MiB here
    assert peak - base < 200 * MiB, (base // MiB, peak // MiB)
    assert fds_naming(pid, hexdigest) > 1  # the streams still waiting hold their readers...
    raw.close()
    # ...until the client goes (one descriptor stays: the store keeps large blobs open)
    await wait_until_async(lambda: fds_naming(pid, hexdigest) <= 1, 10, what="the readers to be closed")


async def test_many_connections_of_unread_streams_leave_others_served(daemon: DaemonProcess) -> None:
    """40 connections of 100 Content.Read streams each, nothing read. Before: each connection
    parked its own 32 MiB and every one of the 4 000 handlers read its first chunk (the daemon
    went from 70 MiB to 3.9 GiB, and a Version call from another client waited 15 s). Now what
    waits on all connections is bounded (`h2.Limits.send_pool`), calls start a few at a time per
    connection and in turn between connections (admission.py), and other clients are served."""
    digest = await _blob(daemon, 8 * MiB)
    pid = daemon.proc.pid
    base = peak = rss(pid)
    body = grpc_message(content_pb.ReadContentRequest(digest=digest).SerializeToString())
    raws = [await RawClient.connect(daemon.address) for _ in range(40)]
    ended = collections.Counter[str]()

    async def read_all(raw: RawClient) -> None:
        while (f := await raw.read_frame()) is not None:
            if f[0] == h2.HEADERS and "grpc-status" in (headers := raw.headers_of(f[3])):
                ended[headers["grpc-status"]] += 1
            raw.frames.clear()

    readers = [asyncio.create_task(read_all(raw)) for raw in raws]
    try:
        for raw in raws:
            await raw.send(calls("/containerd.services.content.v1.Content/Read", 100, body,
                                 **{"containerd-namespace": NS}))
        for _ in range(5):
            await _version_within(daemon, 5)
            peak = max(peak, rss(pid))
        await wait_until_async(lambda: ended[RESOURCE_EXHAUSTED] >= 3000, 60,
                               what="the calls past the bounds to be refused")
        peak = max(peak, rss(pid))
        assert set(ended) == {RESOURCE_EXHAUSTED}, ended
        assert peak - base < 600 * MiB, (base // MiB, peak // MiB)
    finally:
        for raw in raws:
            raw.close()
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    await _version_within(daemon, 5)


async def test_an_event_subscriber_that_does_not_read_is_cut_off_by_bytes(daemon: DaemonProcess) -> None:
    pid = daemon.proc.pid
    start = len(daemon.log())
    raw = await RawClient.connect(daemon.address)
    await raw.send(calls("/containerd.services.events.v1.Events/Subscribe", 1,
                         grpc_message(events_pb2.SubscribeRequest(filters=['topic=="/streams/big"']).SerializeToString())))
    await raw.until(lambda f: f[0] == h2.HEADERS)  # subscribed (the daemon says so in its headers)
    base = rss(pid)
    async with grpc.aio.insecure_channel(f"unix://{daemon.address}") as ch:
        events = events_pb2_grpc.EventsStub(ch)
        request = events_pb2.PublishRequest(topic="/streams/big", event=any_pb2.Any(type_url="x", value=b"e" * MiB))
        for _ in range(80):  # the publisher is never held up by the subscriber
            await events.Publish(request, metadata=[("containerd-namespace", NS)], timeout=10)
    await wait_until_async(lambda: "event subscriber fell" in daemon.log()[start:], 10,
                           what="the subscriber to be cut off")
    # 80 MiB would have been queued for it; 16 MiB at most now
    assert rss(pid) - base < 60 * MiB, (base // MiB, rss(pid) // MiB)
    raw.close()
    await _version_within(daemon, 5)


async def _raw_call(d: DaemonProcess, **headers: str) -> dict[str, str]:
    """A Version call with extra request headers; the headers and trailers it got."""
    raw = await RawClient.connect(d.address)
    try:
        await raw.send(calls(VERSION, 1, grpc_message(b""), **headers))
        got: dict[str, str] = {}
        async with asyncio.timeout(10):  # unanswered before: the client waited for its deadline
            while "grpc-status" not in got:
                f = await raw.read_frame()
                assert f is not None and f[0] != h2.RST_STREAM, f
                if f[0] == h2.HEADERS:
                    got.update(raw.headers_of(f[3]))
        return got
    finally:
        raw.close()


@pytest.mark.parametrize("value", ["a", "!!!!", "a====", "YQ=x"])
async def test_binary_metadata_that_is_not_base64_is_answered(daemon: DaemonProcess, value: str) -> None:
    got = await _raw_call(daemon, **{"x-trace-bin": value})
    assert got["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])  # grpc-go's answer
    assert "malformed binary metadata" in got["grpc-message"]


async def test_binary_metadata_padded_or_not_is_accepted(daemon: DaemonProcess) -> None:
    for value in ("YQ", "YQ==", ""):
        assert (await _raw_call(daemon, **{"x-trace-bin": value}))["grpc-status"] == "0"


@pytest.mark.parametrize("value", ["9" * 5000 + "S", "9" * 400 + "H", "99999999999999999999n", "99999999H",
                                   "\u00b2S", "-1S", "1x", "S", ""],
                         ids=["5000-digits", "400-digits", "20-digits", "max", "superscript", "negative", "unit",
                              "no-digits", "empty"])
async def test_absurd_grpc_timeouts_are_no_deadline(daemon: DaemonProcess, value: str) -> None:
    assert (await _raw_call(daemon, **{"grpc-timeout": value}))["grpc-status"] == "0"


# -- races --------------------------------------------------------------------------------------
SPEC = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
TARGET = descriptor_pb2.Descriptor(media_type="application/vnd.oci.image.manifest.v1+json",
                                   digest="sha256:" + "a" * 64, size=10)
# A code a client may see when others act on the same ids at the same time.
PROPER = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
          grpc.StatusCode.FAILED_PRECONDITION}


OPS = ("containers.Create", "containers.Delete", "containers.Get", "containers.Update", "images.Create",
       "images.Delete", "images.Get", "images.Update", "leases.Create", "leases.Delete", "leases.AddResource",
       "leases.DeleteResource", "snapshots.Prepare", "snapshots.Remove", "snapshots.Stat", "snapshots.Commit",
       "volumes.Create", "volumes.Delete", "volumes.Get")


def _call(ch: grpc.aio.Channel, op: str, k: int, rng: random.Random) -> Any:
    """The call `op` on the k-th id of each kind (every client shares the same few ids)."""
    md: Any = [("containerd-namespace", "race")]
    cid, img, lid, key, vol = f"c{k}", f"img{k}", f"l{k}", f"s{k}", f"v{k}"
    c, i, le = cgrpc.ContainersStub(ch), igrpc.ImagesStub(ch), lgrpc.LeasesStub(ch)
    s, v = sgrpc.SnapshotsStub(ch), vgrpc.VolumesStub(ch)
    snapshot = lpb.Resource(id=key, type="snapshots/overlayfs")
    match op:
        case "containers.Create":
            return c.Create(cpb.CreateContainerRequest(container=cpb.Container(
                id=cid, spec=SPEC, runtime=cpb.Container.Runtime(name="io.containerd.runc.v2"),
                snapshotter="overlayfs", snapshot_key=key)), metadata=md, timeout=30)
        case "containers.Delete":
            return c.Delete(cpb.DeleteContainerRequest(id=cid), metadata=md, timeout=30)
        case "containers.Get":
            return c.Get(cpb.GetContainerRequest(id=cid), metadata=md, timeout=30)
        case "containers.Update":
            return c.Update(cpb.UpdateContainerRequest(container=cpb.Container(id=cid, labels={"x": str(rng.random())}),
                                                       update_mask=field_mask_pb2.FieldMask(paths=["labels"])),
                            metadata=md, timeout=30)
        case "images.Create":
            return i.Create(ipb.CreateImageRequest(image=ipb.Image(name=img, target=TARGET)), metadata=md, timeout=30)
        case "images.Delete":
            return i.Delete(ipb.DeleteImageRequest(name=img, sync=rng.random() < 0.5), metadata=md, timeout=30)
        case "images.Get":
            return i.Get(ipb.GetImageRequest(name=img), metadata=md, timeout=30)
        case "images.Update":
            return i.Update(ipb.UpdateImageRequest(image=ipb.Image(name=img, labels={"y": "1"}, target=TARGET)),
                            metadata=md, timeout=30)
        case "leases.Create":
            return le.Create(lpb.CreateRequest(id=lid), metadata=md, timeout=30)
        case "leases.Delete":
            return le.Delete(lpb.DeleteRequest(id=lid, sync=rng.random() < 0.5), metadata=md, timeout=30)
        case "leases.AddResource":
            return le.AddResource(lpb.AddResourceRequest(id=lid, resource=snapshot), metadata=md, timeout=30)
        case "leases.DeleteResource":
            return le.DeleteResource(lpb.DeleteResourceRequest(id=lid, resource=snapshot), metadata=md, timeout=30)
        case "snapshots.Prepare":
            return s.Prepare(spb.PrepareSnapshotRequest(snapshotter="overlayfs", key=key),
                             metadata=[*md, ("containerd-lease", lid)], timeout=30)
        case "snapshots.Remove":
            return s.Remove(spb.RemoveSnapshotRequest(snapshotter="overlayfs", key=key), metadata=md, timeout=30)
        case "snapshots.Stat":
            return s.Stat(spb.StatSnapshotRequest(snapshotter="overlayfs", key=key), metadata=md, timeout=30)
        case "snapshots.Commit":
            return s.Commit(spb.CommitSnapshotRequest(snapshotter="overlayfs", key=key, name=key + "-c"),
                            metadata=md, timeout=30)
        case "volumes.Create":
            return v.Create(vpb.CreateVolumeRequest(name=vol), metadata=md, timeout=30)
        case "volumes.Delete":
            return v.Delete(vpb.DeleteVolumeRequest(name=vol), metadata=md, timeout=30)
        case _:
            return v.Get(vpb.GetVolumeRequest(name=vol), metadata=md, timeout=30)


async def _racer(ch: grpc.aio.Channel, rng: random.Random, rounds: int, seen: collections.Counter[str]) -> None:
    for _ in range(rounds):
        op = rng.choice(OPS)
        try:
            await _call(ch, op, rng.randrange(3), rng)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code not in PROPER:
                seen[f"{op}: {code.name} {exc.details()[:300]}"] += 1
        seen[code.name] += 1


async def test_fifty_clients_racing_on_the_same_ids_get_proper_codes() -> None:
    d = start_daemon()
    try:
        seen: collections.Counter[str] = collections.Counter()
        channels = [grpc.aio.insecure_channel(f"unix://{d.address}") for _ in range(10)]
        try:
            await asyncio.gather(*(_racer(channels[n % 10], random.Random(n), 40, seen) for n in range(50)))
            improper = [k for k in seen if ":" in k]
            assert improper == [], improper
            assert seen["OK"] > 200 and seen["NOT_FOUND"] > 50, seen  # the races did happen
            ch, md = channels[0], [("containerd-namespace", "race")]
            containers = cgrpc.ContainersStub(ch)
            listed = (await containers.List(cpb.ListContainersRequest(), metadata=md)).containers
            for ctr in listed:  # List agrees with Get
                assert (await containers.Get(cpb.GetContainerRequest(id=ctr.id), metadata=md)).container == ctr
            leases = lgrpc.LeasesStub(ch)
            snapshots = sgrpc.SnapshotsStub(ch)
            names = {info.name async for page in snapshots.List(spb.ListSnapshotsRequest(snapshotter="overlayfs"),
                                                                  metadata=md) for info in page.info}
            for name in names:  # List agrees with Stat
                stat = await snapshots.Stat(spb.StatSnapshotRequest(snapshotter="overlayfs", key=name), metadata=md)
                assert stat.info.name == name
            for lease in (await leases.List(lpb.ListRequest(), metadata=md)).leases:
                await leases.ListResources(lpb.ListResourcesRequest(id=lease.id), metadata=md)
            ids = sorted(ctr.id for ctr in listed)
        finally:
            for c in channels:
                await c.close()
        d.stop()
        assert "Traceback" not in d.log()[d.log_start:], d.log()[-5000:]
        d = start_daemon(d.base)  # the same root starts cleanly and reads the same records
        async with grpc.aio.insecure_channel(f"unix://{d.address}") as ch:
            listed = (await cgrpc.ContainersStub(ch).List(cpb.ListContainersRequest(),
                                                          metadata=[("containerd-namespace", "race")])).containers
            assert sorted(ctr.id for ctr in listed) == ids
        assert "Traceback" not in d.log()[d.log_start:]
    finally:
        remove_base(d)
