"""Synced build contexts against a real dockyardd: the daemon keeps a directory's context between
builds and only what changed is sent; the image is the one the whole context gives; bad
manifests are clear errors; a client that goes away leaves nothing half-kept; the kept copy
survives a daemon restart and goes with `dock builder prune`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dock.build import (
    BuildAPI,
    BuildEvent,
    BuildOptions,
    BuildResult,
    ContextReceived,
    Event,
    SyncedContext,
    _scan_context,
    directory_context,
)
from dock.client import Client
from dockyard_api.dockyard.build.v1 import build_pb2 as pb
from dockyard_api.dockyard.build.v1 import build_pb2_grpc as pb_grpc
from tests.daemon import REPO, DaemonProcess, remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

# With SOURCE_DATE_EPOCH the image digest depends only on the content: how it was sent cannot show.
DOCKERFILE = (b"FROM busybox\nARG SOURCE_DATE_EPOCH\nCOPY . /app/\n"
              b"RUN cat /app/conf/settings; ls -la /app /app/conf > /listing\n")
EPOCH = [("SOURCE_DATE_EPOCH", "1700000000")]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with tempfile.TemporaryDirectory(prefix="dy-buildsync-") as tmp, stopping_new_zygotes():
        d = start_daemon()
        try:
            archive = Path(tmp) / "busybox.tar"
            archive.write_bytes(busybox_oci_archive())
            dock(d, "images", "import", "--unpack", str(archive))
            yield d
        finally:
            d.stop()
            remove_base(d)


def dock(d: DaemonProcess, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    res = subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, env=env, timeout=300,
                         text=True)
    assert res.returncode == 0, f"dock {args}: {res.stdout}{res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[Client]:
    async with daemon.client() as c:
        yield c


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "settings").write_text("colour=blue\n")
    (root / "bulk").mkdir()
    for i in range(300):
        (root / "bulk" / f"f{i}").write_text(f"{i}\n" * 10)
    (root / "old").write_text("to be removed\n")
    os.link(root / "conf" / "settings", root / "settings-link")
    os.symlink("conf/settings", root / "alias")
    (root / "skipped.tmp").write_text("ignored\n")
    (root / ".dockerignore").write_text("*.tmp\n")
    return root


async def build(c: Client, context: SyncedContext | AsyncIterator[bytes], **kw: object) -> list[Event]:
    options = BuildOptions(dockerfile=DOCKERFILE, build_args=EPOCH, **kw)  # type: ignore[arg-type]
    return [e async for e in BuildAPI(c).build(context, options)]


def received(events: list[Event]) -> ContextReceived:
    return next(e for e in events if isinstance(e, ContextReceived))


def result(events: list[Event]) -> BuildResult:
    return next(e for e in events if isinstance(e, BuildResult))


def output(events: list[Event]) -> bytes:
    return b"".join(getattr(e, "data", b"") for e in events)


def kept(d: DaemonProcess) -> list[str]:
    root = d.root / "build-contexts"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


async def test_only_changes_are_sent_and_the_image_is_the_whole_contexts(client: Client, ctx: Path) -> None:
    first = await build(client, SyncedContext(ctx))
    entries = received(first).entries
    assert entries > 300 and received(first).reused == 0

    again = await build(client, SyncedContext(ctx))
    assert (received(again).entries, received(again).reused) == (0, entries)
    assert result(again).manifest_digest == result(first).manifest_digest

    # A file changed in place (its hard link with it), one removed, one added, a mode changed.
    (ctx / "conf" / "settings").write_text("colour=red!\n")
    (ctx / "old").unlink()
    (ctx / "conf" / "new").write_text("new\n")
    os.chmod(ctx / "bulk" / "f7", 0o600)
    changed = await build(client, SyncedContext(ctx), no_cache=True)
    got = received(changed)
    assert 0 < got.entries < 10 and got.reused > 290, got
    assert b"colour=red!" in output(changed)

    whole = await build(client, directory_context(ctx), no_cache=True)
    assert result(whole).manifest_digest == result(changed).manifest_digest


async def test_the_kept_context_survives_a_restart_and_goes_with_prune(ctx: Path) -> None:
    with stopping_new_zygotes():
        d = start_daemon()
        try:
            archive = ctx.parent / "bb.tar"
            archive.write_bytes(busybox_oci_archive())
            dock(d, "images", "import", "--unpack", str(archive))
            async with d.client() as c:
                await build(c, SyncedContext(ctx))
            assert len(kept(d)) == 1
            d.stop()
            d = start_daemon(d.base)
            async with d.client() as c:
                assert received(await build(c, SyncedContext(ctx))).entries == 0
            out = dock(d, "builder", "prune", "-a", "-f")
            assert kept(d) == [], out
            async with d.client() as c:
                assert received(await build(c, SyncedContext(ctx))).reused == 0
        finally:
            d.stop()
            remove_base(d)


async def raw_build(c: Client, requests: list[pb.BuildRequest]) -> list[pb.BuildResponse]:
    stub = pb_grpc.BuilderStub(c.channel)

    async def gen() -> AsyncIterator[pb.BuildRequest]:
        for r in requests:
            yield r

    return [m async for m in stub.Build(gen(), metadata=c.metadata())]


def options(key: str = "test-key") -> pb.BuildRequest:
    return pb.BuildRequest(options=pb.BuildOptions(dockerfile=b"FROM busybox\n", context_key=key))


def manifest(*entries: pb.ContextEntry, last: bool = True) -> pb.BuildRequest:
    return pb.BuildRequest(manifest=pb.ContextManifest(entries=list(entries), last=last))


@pytest.mark.parametrize(("requests", "message"), [
    ([options(), manifest(pb.ContextEntry(path="../etc/passwd", mode=0o100644))], "leaves the context"),
    ([options(), manifest(pb.ContextEntry(path="a/b", mode=0o100644))], "parent is not a directory"),
    ([options(), manifest(pb.ContextEntry(path="dev", mode=0o020644))], "not a file, directory"),
    ([options(), pb.BuildRequest(chunk=b"x" * 512)], "starts with its manifest"),
    ([options(), manifest(pb.ContextEntry(path="a", mode=0o100644), last=False)], "without its last message"),
    ([options(), manifest(pb.ContextEntry(path="a", mode=0o100644, size=1))], "were not sent"),
])
async def test_bad_manifests_are_invalid_argument(daemon: DaemonProcess, client: Client,
                                                  requests: list[pb.BuildRequest], message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_build(client, requests)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert message in (info.value.details() or ""), info.value.details()
    await no_build_dirs(daemon)


async def no_build_dirs(d: DaemonProcess) -> None:
    tmp = d.root / "tmp"
    await wait_until_async(lambda: not [p for p in tmp.iterdir() if p.name.startswith("build-context-")],
                           30, what="the build's private directory to go")


@pytest.mark.parametrize("sent", ["nothing", "part of the tar"])
async def test_a_client_gone_after_the_manifest_keeps_nothing_half_made(daemon: DaemonProcess, client: Client,
                                                                          ctx: Path, sent: str) -> None:
    await build(client, SyncedContext(ctx, key="gone"))
    (ctx / "conf" / "settings").write_text("changed\n")
    stub = pb_grpc.BuilderStub(client.channel)
    stalled = asyncio.Event()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("conf")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        info = tarfile.TarInfo("conf/settings")
        info.size = 8
        tar.addfile(info, io.BytesIO(b"partial\n"))

    async def gen() -> AsyncIterator[pb.BuildRequest]:
        yield options("gone")
        yield manifest(pb.ContextEntry(path="conf", mode=0o40755, mtime_ns=1),
                       pb.ContextEntry(path="conf/settings", mode=0o100644, size=8, mtime_ns=2))
        if sent != "nothing":  # the daemon is then blocked halfway through writing the tree
            await stalled.wait()
            yield pb.BuildRequest(chunk=buf.getvalue()[:1024])
        await asyncio.Event().wait()  # never sends the rest

    call = stub.Build(gen(), metadata=client.metadata())

    async def read() -> None:
        async for m in call:
            if m.WhichOneof("response") == "wanted":
                stalled.set()

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(stalled.wait(), 60)
    finally:
        call.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
    await no_build_dirs(daemon)
    # What was kept before is gone (the sync never completed), so everything is sent again, and
    # the build sees the file as it is now.
    events = await build(client, SyncedContext(ctx, key="gone"), no_cache=True)
    assert received(events).reused == 0
    assert b"changed" in output(events)


async def test_the_daemon_refuses_what_it_did_not_ask_for(daemon: DaemonProcess, client: Client, ctx: Path) -> None:
    await build(client, SyncedContext(ctx, key="strict"))
    (ctx / "conf" / "settings").touch()  # so that it is wanted; the tar then says something else
    entries = await asyncio.to_thread(_entries, ctx)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bulk/f1")  # unchanged: not asked for
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw_build(client, [options("strict"), manifest(*entries), pb.BuildRequest(chunk=buf.getvalue())])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "was not asked for" in (err.value.details() or "")
    # Nothing of it was kept: the next build is sent whole and sees the directory as it is.
    events = await build(client, SyncedContext(ctx, key="strict"), no_cache=True)
    assert received(events).reused == 0
    assert b"colour=blue" in output(events)


def _entries(root: Path) -> list[pb.ContextEntry]:
    return _scan_context(root, None)[1]


async def test_a_change_re_runs_only_the_copy_that_covers_it(client: Client, ctx: Path) -> None:
    dockerfile = b"FROM busybox\nCOPY conf/ /conf/\nCOPY bulk/ /bulk/\nRUN cat /bulk/f3 /conf/settings\n"

    async def steps() -> tuple[list[int], bytes]:
        events = [e async for e in BuildAPI(client).build(SyncedContext(ctx, key="memo"),
                                                          BuildOptions(dockerfile=dockerfile))]
        return sorted(e.step for e in events if isinstance(e, BuildEvent) and e.kind == "cached"), output(events)

    await steps()
    assert (await steps())[0] == [2, 3, 4]  # nothing changed: every step from the cache
    (ctx / "bulk" / "f3").write_text("three, changed\n")
    cached, out = await steps()
    assert cached == [2] and b"three, changed" in out  # the digest kept for bulk/ was dropped
    (ctx / "conf" / "settings").write_text("colour=green\n")
    cached, out = await steps()
    assert cached == [] and b"colour=green" in out  # the first COPY's layer is the next ones' parent
    assert (await steps())[0] == [2, 3, 4]
