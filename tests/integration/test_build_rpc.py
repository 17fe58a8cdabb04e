"""The dockyard.build.v1.Builder RPC and `dock build` against a real dockyardd: bad contexts and
options are clear errors, the daemon's private copy of the context is always removed (also
when the client goes away mid-upload or mid-build), and `dock build` then `dock run` end to end.

The base image is busybox from tests/images.py (local material), imported as
docker.io/library/busybox:latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dock.build import BuildAPI, BuildEvent, BuildOptions, BuildResult, ContextReceived, Event
from dock.client import Client
from dockyard_common.errors import InvalidArgument
from tests.daemon import REPO, DaemonProcess, remove_base, shim_pids, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

DOCKERFILE = b"FROM busybox\n"


@dataclass
class Rig:
    d: DaemonProcess
    tmp: Path

    def dock(self, *args: str, stdin: bytes | None = None, cwd: Path | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.d.address, "TMPDIR": str(self.tmp)}
        return subprocess.run([sys.executable, "-m", "dock.cli", *args], input=stdin, capture_output=True, env=env,
                              timeout=timeout, cwd=cwd or REPO)

    def ok(self, *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> str:
        res = self.dock(*args, stdin=stdin, cwd=cwd)
        err = res.stderr.decode(errors="replace")
        assert res.returncode == 0, f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stdout!r}\n{err}"
        assert "Traceback" not in err, err
        return res.stdout.decode(errors="replace")

    def fails(self, *args: str, stdin: bytes | None = None) -> str:
        """stderr of a dock command that must fail cleanly: rc 1, one line, no Python in it."""
        res = self.dock(*args, stdin=stdin)
        err = res.stderr.decode(errors="replace").strip()
        assert res.returncode == 1, f"dock {shlex.join(args)}: rc {res.returncode}: {res.stdout!r} {err}"
        assert "Traceback" not in err and "Error:" not in err and "Exception" not in err, err
        assert len(err.splitlines()) == 1, err
        return err

    def build_dirs(self) -> list[str]:
        tmp = self.d.root / "tmp"
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("build-context-")) if tmp.is_dir() else []


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="dy-build-") as tmp, stopping_new_zygotes():
        d = start_daemon()
        try:
            archive = Path(tmp) / "busybox.tar"
            archive.write_bytes(busybox_oci_archive())
            r = Rig(d, Path(tmp))
            r.ok("images", "import", "--unpack", str(archive))
            yield r
        finally:
            remove_base(d)


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with rig.d.client() as c:
        yield c


def tar_of(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    return buf.getvalue()


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


async def events_of(c: Client, context: bytes | AsyncIterator[bytes], options: BuildOptions) -> list[Event]:
    return [e async for e in BuildAPI(c).build(context, options)]


async def no_build_dirs(rig: Rig) -> None:
    await wait_until_async(lambda: not rig.build_dirs(), 30, what="the build's private directory to go")


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "message"), [
    (os.urandom(2048), "not a valid tar"),
    (tar_of(("a", b"x" * 5000))[:2000], "not a valid tar"),
    (tar_of(("ok", b"1"), ("../../escaped", b"x")), "'../../escaped' leaves the context"),
    (tar_of(symlink("out", "/"), ("out/tmp/escaped", b"x")), "'out/tmp/escaped' is below the symlink 'out'"),
    (tar_of(symlink("up", "../../../.."), ("up/escaped", b"x")), "below the symlink 'up'"),
])
async def test_bad_context_is_invalid_argument(rig: Rig, client: Client, context: bytes, message: str) -> None:
    before = set(Path("/tmp").iterdir())
    with pytest.raises(InvalidArgument, match=message):
        await events_of(client, context, BuildOptions(dockerfile=DOCKERFILE))
    await no_build_dirs(rig)
    assert not any(p.name == "escaped" for p in set(Path("/tmp").iterdir()) - before)
    assert not list(rig.d.base.rglob("escaped")), "an entry of a refused context was written"


async def test_device_in_context_is_refused(rig: Rig, client: Client) -> None:
    dev = tarfile.TarInfo("null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    with pytest.raises(InvalidArgument, match="'null' is a device"):
        await events_of(client, tar_of(dev), BuildOptions(dockerfile=DOCKERFILE))
    await no_build_dirs(rig)


@pytest.mark.parametrize(("options", "message"), [
    (BuildOptions(dockerfile=b""), "the Dockerfile is empty"),
    (BuildOptions(dockerfile=b"  \n"), "the Dockerfile is empty"),
    (BuildOptions(dockerfile=DOCKERFILE, build_args=[("", "x")]), "build argument ''"),
    (BuildOptions(dockerfile=DOCKERFILE, build_args=[("A=B", "x")]), "build argument 'A=B'"),
    (BuildOptions(dockerfile=DOCKERFILE, labels=[("", "x")]), "label ''"),
    (BuildOptions(dockerfile=DOCKERFILE, network="bridge"), "network 'bridge'"),
], ids=["empty", "blank", "arg-no-key", "arg-key-with-eq", "label-no-key", "network"])
async def test_bad_options_are_invalid_argument(rig: Rig, client: Client, options: BuildOptions,
                                                message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await events_of(client, tar_of(("a", b"a")), options)
    await no_build_dirs(rig)


def test_cli_missing_dockerfile(rig: Rig) -> None:
    ctx = rig.tmp / f"ctx-{secrets.token_hex(4)}"
    ctx.mkdir()
    (ctx / "a").write_text("a\n")
    err = rig.fails("build", "-t", "app:nodockerfile", str(ctx))
    assert err.startswith("dock: cannot read the Dockerfile") and "Dockerfile" in err, err
    err = rig.fails("build", str(ctx / "missing"))
    assert "not a directory" in err, err
    err = rig.fails("build", "-", stdin=b"")
    assert "the Dockerfile is empty" in err, err


def test_cli_bad_build_arg(rig: Rig) -> None:
    ctx = rig.tmp / f"ctx-{secrets.token_hex(4)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(DOCKERFILE)
    err = rig.fails("build", "--build-arg", "=x", str(ctx))
    assert err.startswith("dock: invalid --build-arg '=x': want KEY=VALUE"), err


def test_cli_bad_context_tar_on_stdin(rig: Rig) -> None:
    bad = tar_of(("Dockerfile", DOCKERFILE), ("../../escaped", b"x"))
    err = rig.fails("build", "-", stdin=bad)
    assert "leaves the context" in err, err


async def test_contexts_a_dead_daemon_left_are_removed() -> None:
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    stale = base / "root" / "tmp" / "build-context-stale"
    (stale / "context").mkdir(parents=True)
    (stale / "context" / "file").write_text("left by a daemon that was killed mid-build\n")
    other = base / "root" / "tmp" / "build-io-other"  # not ours to sweep
    other.mkdir()
    d = start_daemon(base)
    try:
        async with d.client() as c:
            with pytest.raises(InvalidArgument):
                await events_of(c, b"not a tar" * 100, BuildOptions(dockerfile=DOCKERFILE))
        assert not stale.exists()
        assert other.is_dir()
    finally:
        remove_base(d)


# -- the client going away -------------------------------------------------------------------------


async def test_disconnect_during_upload_removes_the_context(rig: Rig, client: Client) -> None:
    never = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield tar_of(("a", b"a" * 10000))[:4096]
        await never.wait()

    async def consume() -> None:
        await events_of(client, stalling(), BuildOptions(dockerfile=DOCKERFILE))

    task = asyncio.create_task(consume())
    try:
        await wait_until_async(lambda: rig.build_dirs() or task.done(), 30, what="the build to start receiving")
        assert not task.done(), task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await no_build_dirs(rig)


# -- with the executor (supervisor/build/builder.py) -----------------------------------------------


def app_context(rig: Rig) -> Path:
    ctx = rig.tmp / f"app-{secrets.token_hex(4)}"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "hello.txt").write_text("hello from the context\n")
    (ctx / "src" / "ignored.tmp").write_text("must not be sent\n")
    (ctx / ".dockerignore").write_text("**/*.tmp\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY src/ /app/\n"
        "RUN echo built-by-run > /app/run.txt && ls /app\n"
        'CMD ["sh", "-c", "cat /app/hello.txt /app/run.txt; ls /app"]\n')
    return ctx


def test_build_then_run(rig: Rig) -> None:
    ctx = app_context(rig)
    out = rig.ok("build", "-t", "app:1", "--progress", "plain", str(ctx))
    assert "Step 1/4 : FROM busybox" in out, out
    assert "hello.txt" in out and "ignored.tmp" not in out, out  # the RUN step's output
    assert "Successfully tagged docker.io/library/app:1" in out, out
    run = rig.ok("run", "--rm", "--name", f"app-{secrets.token_hex(4)}", "app:1")
    assert run.splitlines() == ["hello from the context", "built-by-run", "hello.txt", "run.txt"], run
    assert not rig.build_dirs()


def test_build_json_progress_and_tar_context_on_stdin(rig: Rig) -> None:
    ctx = app_context(rig)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(ctx, arcname=".")
    out = rig.ok("build", "-t", "app:stdin", "--progress", "json", "-", stdin=buf.getvalue())
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["type"] == "context"
    assert any(r["type"] == "step" for r in records)
    assert records[-1]["type"] == "result" and records[-1]["tags"] == ["docker.io/library/app:stdin"]


def test_dockerfile_on_stdin(rig: Rig) -> None:
    ctx = app_context(rig)
    dockerfile = b'FROM busybox\nCOPY src/hello.txt /h\nCMD ["cat", "/h"]\n'
    out = rig.ok("build", "-t", "app:stdin-dockerfile", "-f", "-", str(ctx), stdin=dockerfile)
    assert "Step 2/3 : COPY src/hello.txt /h" in out, out
    run = rig.ok("run", "--rm", "--name", f"app-{secrets.token_hex(4)}", "app:stdin-dockerfile")
    assert run == "hello from the context\n", run


def test_failing_run_is_one_clear_line(rig: Rig) -> None:
    ctx = rig.tmp / f"fail-{secrets.token_hex(4)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo about-to-fail && exit 3\n")
    err = rig.fails("build", str(ctx))
    assert "Dockerfile:2" in err and "exited with code 3" in err and "about-to-fail" in err, err
    assert not rig.build_dirs()


async def test_disconnect_during_build_leaves_nothing(rig: Rig, client: Client) -> None:
    leases_before = {lease.id for lease in await client.leases.list()}
    containers_before = {c.id for c in await client.containers.list()}
    shims_before = shim_pids(rig.d)
    dockerfile = b"FROM busybox\nRUN echo started && sleep 1000\n"
    seen: list[Event] = []
    async for event in BuildAPI(client).build(tar_of(("a", b"a")), BuildOptions(dockerfile=dockerfile,
                                                                                 no_cache=True)):
        seen.append(event)
        if isinstance(event, BuildEvent) and event.kind == "output" and b"started" in event.data:
            break  # leaving the iteration cancels the call, as a client that goes away does
    assert any(isinstance(e, ContextReceived) for e in seen)
    assert not any(isinstance(e, BuildResult) for e in seen)
    await no_build_dirs(rig)
    await wait_until_async(lambda: shim_pids(rig.d) <= shims_before, 30, what="the RUN step's shim to end")

    async def clean() -> bool:
        containers = {c.id for c in await client.containers.list()}
        leases = {lease.id for lease in await client.leases.list()}
        return containers <= containers_before and leases <= leases_before

    await wait_until_async(clean, 30, what="the build's containers and leases to go")
    mounts = Path("/proc/self/mounts").read_text()
    assert str(rig.d.root / "tmp") not in mounts, mounts


async def test_killed_client_cancels_the_build(rig: Rig, client: Client) -> None:
    """`dock build` killed mid-RUN (its connection closes without a word): the build stops and
    leaves nothing behind."""
    containers_before = {c.id for c in await client.containers.list()}
    shims_before = shim_pids(rig.d)
    ctx = rig.tmp / f"killed-{secrets.token_hex(4)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo started && sleep 1000\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": rig.d.address, "TMPDIR": str(rig.tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "build", "--no-cache", "--progress", "plain", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        lines = []
        while (line := await asyncio.to_thread(proc.stdout.readline)) and b"started" not in line:
            lines.append(line)
        assert line, f"dock build ended before its RUN step started: {lines}"
        assert rig.build_dirs()
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    await no_build_dirs(rig)
    await wait_until_async(lambda: shim_pids(rig.d) <= shims_before, 30, what="the RUN step's shim to end")

    async def no_containers() -> bool:
        return {c.id for c in await client.containers.list()} <= containers_before

    await wait_until_async(no_containers, 30, what="the build's container to go")
