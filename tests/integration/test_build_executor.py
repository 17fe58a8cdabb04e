"""The build executor (supervisor/build/builder.py) on a real daemon's objects: a dockyardd's
stores, runtime and gRPC server started in this process (the same builders as `Daemon.start`),
the Builder called directly, and the images it makes run by `dock run` against that daemon.

Covered: FROM busybox + RUN + COPY from the context + ENV/WORKDIR/USER/CMD, run and checked;
RUN output as "output" events; a failing RUN (exit code, line, last output; no task, bundle,
snapshot, lease or cgroup left); multi-stage with COPY --from and --target (unneeded stages
never run, only the target's layers); the cache (a rebuild is all "cached", a collection in
between changes nothing, a changed file re-runs from its COPY on, --no-cache runs everything);
FROM scratch + COPY without tags (a dangling name).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor
from supervisor.build.api import BuildEvent, BuildRequest, BuildResult
from supervisor.build.builder import Builder, BuildStores
from supervisor.config import Config
from supervisor.images.unpack import Unpacker
from supervisor.metadata.buildcache import BuildCacheStore
from supervisor.server import Daemon, build_services, claim_root, open_metadata, open_storage, serve_grpc, start_runtime
from tests.daemon import REPO, reap_leftovers, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="builds need root"),
              pytest.mark.asyncio(loop_scope="module")]

NS = "default"
BASE = "docker.io/library/busybox:latest"


@dataclass
class Rig:
    base: Path
    daemon: Daemon
    builder: Builder
    stores: BuildStores
    meta: Any
    storage: Any
    runtime: Any

    async def restart(self) -> None:
        """Stop this daemon and start another on the same root, in place."""
        await self.daemon.stop()
        fresh = await start(self.base)
        self.daemon, self.builder, self.stores = fresh.daemon, fresh.builder, fresh.stores
        self.meta, self.storage, self.runtime = fresh.meta, fresh.storage, fresh.runtime

    @property
    def address(self) -> str:
        return str(self.daemon.config.address)

    async def dock(self, *args: str) -> tuple[int, str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.address}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "dock.cli", *args, env=env, cwd=REPO,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str) -> str:
        code, out, err = await self.dock(*args)
        assert code == 0, f"dock {args}: {code}\n{out}\n{err}"
        return out

    async def build(self, dockerfile: str, context: Path, **kw: Any) -> tuple[BuildResult, list[BuildEvent]]:
        events: list[BuildEvent] = []

        async def progress(ev: BuildEvent) -> None:
            events.append(ev)

        result = await self.builder.build(NS, context, BuildRequest(dockerfile=dockerfile.encode(), **kw), progress)
        return result, events

    async def blob(self, digest: str) -> bytes:
        reader = await self.storage.records.reader(NS, digest)
        try:
            return bytes(await reader.read_at(0, reader.size))
        finally:
            await reader.close()

    async def image_config(self, result: BuildResult) -> dict[str, Any]:
        return json.loads(await self.blob(result.config_digest))  # type: ignore[no-any-return]

    async def layer_names(self, result: BuildResult, index: int) -> list[str]:
        manifest = json.loads(await self.blob(result.manifest_digest))
        data = gzip.decompress(await self.blob(manifest["layers"][index]["digest"]))
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            return sorted(m.name for m in tf.getmembers())


async def start(base: Path) -> Rig:
    """A daemon on `base` (made, or left by an earlier one), wired as `Daemon.start` wires it,
    with a Builder over its objects."""
    cfg = Config(root=base / "root", state=base / "state", address=base / "state" / "dockyard.sock",
                 default_network="none", source=str(base / "config.toml"))
    (base / "config.toml").write_text("")
    daemon = Daemon(cfg)
    stack = daemon._started
    try:
        uid = await claim_root(cfg, daemon.reserve, stack)
        meta = await open_metadata(cfg, daemon.reserve, daemon.registry, stack)
        storage = await open_storage(cfg, meta, daemon.reserve, daemon.registry, stack)
        runtime = await start_runtime(cfg, meta, storage, daemon.events, daemon._shim_binary, daemon.registry, stack)
        await serve_grpc(cfg, build_services(daemon, uid, meta, storage, runtime), daemon.registry, stack,
                         runtime.end_streams)
    except BaseException:
        await daemon.stop()
        raise
    unpacker = Unpacker(storage.records, storage.snapshots, storage.differ, meta.leases, storage.collector.schedule)
    stores = BuildStores(storage.records, storage.images, storage.snapshots, meta.leases, storage.differ,
                         runtime.tasks, unpacker, None, BuildCacheStore(meta.db), cfg.default_snapshotter,
                         cfg.root / "tmp")
    return Rig(base, daemon, Builder(stores, storage.collector.schedule), stores, meta, storage, runtime)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig() -> AsyncIterator[Rig]:
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO)  # the shims are `python -m shim` from this checkout
    base = Path(tempfile.mkdtemp(prefix="dy-bexec-"))
    holder: list[Rig] = []
    with stopping_new_zygotes():
        try:
            holder.append(await start(base))
            archive = base / "busybox.tar"
            archive.write_bytes(busybox_oci_archive(BASE))
            await holder[0].ok("images", "import", str(archive))
            yield holder[0]
        finally:
            if holder:
                await holder[0].daemon.stop()
            reap_leftovers(base)
            shutil.rmtree(base, ignore_errors=True)
            if old_path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old_path


def context(rig: Rig, files: dict[str, str]) -> Path:
    """A build context under the rig's base (removed with it)."""
    root = Path(tempfile.mkdtemp(prefix="ctx-", dir=rig.base))
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def kinds(events: list[BuildEvent], kind: str) -> list[int]:
    return [e.step for e in events if e.kind == kind]


def layer_steps(events: list[BuildEvent]) -> list[int]:
    """Steps other than FROM lines."""
    return [e.step for e in events if e.kind == "step" and not e.text.startswith("FROM ")]


async def test_build_runs_with_env_workdir_user_cmd(rig: Rig) -> None:
    ctx = context(rig, {"hello.txt": "hello from the context\n"})
    dockerfile = """\
FROM busybox
ENV GREETING=hi
WORKDIR /app
RUN echo built > made.txt && echo out-line && echo err-line >&2
COPY hello.txt /app/
USER user
CMD ["sh", "-c", "cat /app/made.txt /app/hello.txt; echo $GREETING; pwd; id -u"]
"""
    result, events = await rig.build(dockerfile, ctx, tags=("built:1",), labels=(("from", "request"),))
    assert result.tags == ("docker.io/library/built:1",)
    outputs = [(e.stream, e.data) for e in events if e.kind == "output"]
    assert any(s == "stdout" and b"out-line" in d for s, d in outputs), outputs
    assert any(s == "stderr" and b"err-line" in d for s, d in outputs), outputs
    assert all(e.total == 7 for e in events if e.kind == "step")
    assert kinds(events, "step") == list(range(1, 8)) and kinds(events, "done") == list(range(1, 8))

    config = await rig.image_config(result)
    assert config["config"]["Env"][-1] == "GREETING=hi"
    assert config["config"]["WorkingDir"] == "/app" and config["config"]["User"] == "user"
    assert config["config"]["Labels"] == {"from": "request"}
    assert len(config["rootfs"]["diff_ids"]) == 3  # busybox + RUN + COPY
    assert [h.get("empty_layer", False) for h in config["history"][1:]] == [True, True, False, False, True, True]
    # The RUN's mount points (/dev/pts, ...) stay out of its layer; its file is in it.
    assert await rig.layer_names(result, 1) == ["app", "app/made.txt"]

    out = await rig.ok("run", "--rm", "--name", "built-run", "built:1")
    assert out == "built\nhello from the context\nhi\n/app\n1000\n"


async def test_failing_run_is_clear_and_leaves_nothing(rig: Rig) -> None:
    leases_before = await rig.meta.leases.list(NS)
    ctx = context(rig, {})
    with pytest.raises(FailedPrecondition) as err:
        await rig.build("FROM busybox\nENV A=1\nRUN echo boom-output && exit 3\n", ctx)
    message = err.value.message
    assert "Dockerfile:3" in message and "exited with code 3" in message and "boom-output" in message, message
    assert "step 3/3" in message, message
    assert leases_before == []
    assert await leftovers(rig) == []
    assert not [p for p in (rig.daemon.config.root / "tmp").iterdir() if p.name.startswith(("build-io", "mnt-"))]


async def test_multi_stage_target(rig: Rig) -> None:
    dockerfile = """\
FROM busybox AS builder
RUN mkdir /out && echo compiled > /out/bin.txt
FROM busybox AS unused
RUN exit 1
FROM scratch AS final
COPY --from=builder /out/bin.txt /bin.txt
FROM busybox
RUN exit 2
"""
    result, events = await rig.build(dockerfile, context(rig, {}), tags=("multi:1",), target="final")
    assert {e.stage for e in events if e.kind == "step"} == {"builder", "final"}
    config = await rig.image_config(result)
    assert len(config["rootfs"]["diff_ids"]) == 1  # only the target's layer
    assert await rig.layer_names(result, 0) == ["bin.txt"]
    assert (await rig.storage.images.get(NS, "docker.io/library/multi:1")).target.digest == result.manifest_digest


async def test_copy_from_an_image_with_chown(rig: Rig) -> None:
    ctx = context(rig, {"mine.txt": "mine\n"})
    dockerfile = ("FROM scratch\nCOPY --from=busybox /etc/passwd /etc/group /etc/\n"
                  "COPY --chown=user:user --chmod=640 mine.txt /home/\n")
    result, _ = await rig.build(dockerfile, ctx)
    assert await rig.layer_names(result, 0) == ["etc", "etc/group", "etc/passwd"]
    manifest = json.loads(await rig.blob(result.manifest_digest))
    data = gzip.decompress(await rig.blob(manifest["layers"][1]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        mine = tf.getmember("home/mine.txt")
    # names looked up in the /etc/passwd the first COPY brought
    assert (mine.uid, mine.gid, mine.mode) == (1000, 1000, 0o640)


async def test_cache_rebuild_and_invalidation(rig: Rig) -> None:
    ctx = context(rig, {"a.txt": "a\n", "b.txt": "b\n"})
    dockerfile = """\
FROM busybox
COPY a.txt /a.txt
RUN echo ran-one && cat /a.txt > /one
ARG V=1
COPY b.txt /b.txt
RUN echo ran-two && cat /b.txt > /two
CMD ["cat", "/one", "/two"]
"""
    first, events = await rig.build(dockerfile, ctx, tags=("cached:1",))
    assert kinds(events, "cached") == []
    # Read now: once the rebuild takes the tag, the first image's config (another `created`)
    # is garbage, and the collector may take it any time after.
    first_rootfs = (await rig.image_config(first))["rootfs"]
    await rig.storage.collector.collect()  # the cache's records keep what they name

    second, events = await rig.build(dockerfile, ctx, tags=("cached:1",))
    assert kinds(events, "cached") == layer_steps(events) == [2, 3, 4, 5, 6, 7]
    assert not [e for e in events if e.kind == "output"], "a cached RUN ran"
    assert (await rig.image_config(second))["rootfs"] == first_rootfs

    (ctx / "b.txt").write_text("b changed\n")
    _, events = await rig.build(dockerfile, ctx, tags=("cached:1",))
    assert kinds(events, "cached") == [2, 3, 4]  # from the changed COPY on, everything runs
    assert any(b"ran-two" in e.data for e in events if e.kind == "output")
    assert not any(b"ran-one" in e.data for e in events if e.kind == "output")

    assert await rig.ok("run", "--rm", "--name", "cached-run", "cached:1") == "a\nb changed\n"

    await rig.restart()  # the records are in metadata.db: the cache survives the daemon
    _, events = await rig.build(dockerfile, ctx, tags=("cached:1",))
    assert kinds(events, "cached") == layer_steps(events)

    _, events = await rig.build(dockerfile, ctx, no_cache=True)
    assert kinds(events, "cached") == []


async def test_scratch_copy_without_tags(rig: Rig) -> None:
    ctx = context(rig, {"files/x.txt": "x\n", "files/sub/y.txt": "y\n"})
    result, _ = await rig.build("FROM scratch\nCOPY files/ /data/\nCMD [\"/data/x.txt\"]\n", ctx)
    assert result.tags == (f"dockyard-dangling@{result.manifest_digest}",)
    record = await rig.storage.images.get(NS, result.tags[0])
    assert record.target == Descriptor(record.target.media_type, result.manifest_digest, record.target.size)
    assert await rig.layer_names(result, 0) == ["data", "data/sub", "data/sub/y.txt", "data/x.txt"]
    config = await rig.image_config(result)
    assert config["config"]["Cmd"] == ["/data/x.txt"] and config["os"] == "linux"


async def leftovers(rig: Rig) -> list[str]:
    """What a build may leave behind: tasks, bundles, active snapshots, leases, cgroups, mounts."""
    found = [f"task {t.id}" for t in rig.runtime.tasks.all() if t.id.startswith("build-")]
    found += [f"bundle {p}" for p in (rig.daemon.config.state / "tasks").glob(f"{NS}/build-*")]
    found += [f"snapshot {s.name}" for s in await rig.storage.snapshots.list(NS, rig.stores.snapshotter)
              if s.name.startswith("build-")]
    found += [f"lease {x.id}" for x in await rig.meta.leases.list(NS)]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/dockyard/{NS}/build-*")]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"dockyard/{NS}/build-*")]
    found += [f"mount {line.split()[1]}" for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(rig.daemon.config.root / "tmp"))]
    return found


async def test_cancelled_build_leaves_nothing(rig: Rig) -> None:
    started = asyncio.Event()
    events: list[BuildEvent] = []

    async def progress(ev: BuildEvent) -> None:
        events.append(ev)
        if ev.kind == "output" and b"started" in ev.data:
            started.set()

    request = BuildRequest(dockerfile=b"FROM busybox\nRUN echo started && sleep 1000\n")
    job = asyncio.ensure_future(rig.builder.build(NS, context(rig, {}), request, progress))
    await asyncio.wait_for(started.wait(), 60)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await leftovers(rig) == []


async def test_onbuild_triggers_run_first(rig: Rig) -> None:
    await rig.build("FROM busybox\nONBUILD RUN echo triggered > /trig\n", context(rig, {}), tags=("onbuild:1",))
    result, events = await rig.build("FROM onbuild:1\nRUN cat /trig\n", context(rig, {}), tags=("onbuild:2",))
    steps = [e.text for e in events if e.kind == "step"]
    assert steps == ["FROM onbuild:1", "RUN echo triggered > /trig", "RUN cat /trig"], steps
    assert b"".join(e.data for e in events if e.kind == "output") == b"triggered\n"
    assert "OnBuild" not in (await rig.image_config(result))["config"]


async def test_run_network_modes_and_index_target(rig: Rig) -> None:
    """none: lo only; default on a daemon run with --default-network none: lo only too; host: the
    host's links, and the host's resolv.conf/hosts bound in without landing in the layer."""
    dockerfile = "FROM busybox AS probe\nRUN ls /sys/class/net | tr '\\n' ' '\nFROM scratch\n"
    host_links = " ".join(sorted(os.listdir("/sys/class/net"))) + " "
    for mode, want in (("none", "lo "), ("default", "lo "), ("host", host_links)):
        result, events = await rig.build(dockerfile, context(rig, {}), network=mode, target="0", no_cache=True)
        out = b"".join(e.data for e in events if e.kind == "output").decode()
        assert out == want, (mode, out)
        assert await rig.layer_names(result, 1) == [], mode  # no mount points left in the layer


@pytest.mark.parametrize(("dockerfile", "error", "words"), [
    ("FROM busybox\nCOPY missing.txt /\n", NotFound, "Dockerfile:2: COPY 'missing.txt': no such file"),
    ("FROM busybox\nCOPY ../outside /\n", InvalidArgument, "Dockerfile:2: COPY '../outside': the source leaves"),
    ("FROM busybox\nRUN true\nFROM nothing-here:1\n", NotFound, "Dockerfile:3: image 'docker.io/library/nothing"),
    ("FROM busybox\nFOO bar\n", InvalidArgument, "Dockerfile:2: unknown instruction: FOO"),
    ("FROM busybox\nUSER ghost\nRUN true\n", NotFound, "Dockerfile:3: USER 'ghost': no user 'ghost'"),
], ids=["missing-source", "outside-context", "unknown-image", "unknown-instruction", "unknown-user"])
async def test_bad_input_is_a_clear_error(rig: Rig, dockerfile: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as err:
        await rig.build(dockerfile, context(rig, {}), tags=("bad:1",))
    assert str(err.value.message).startswith(words), err.value.message  # type: ignore[attr-defined]
    assert await leftovers(rig) == []
    with pytest.raises(NotFound):
        await rig.storage.images.get(NS, "docker.io/library/bad:1")


async def test_cache_records_hold_until_pruned(rig: Rig) -> None:
    """Last in the module: it prunes the cache and removes the built images."""
    sn = rig.stores.snapshotter
    await rig.storage.collector.collect()
    names = {s.name for s in await rig.storage.snapshots.list(NS, sn)}
    records = await rig.stores.cache.list(NS)
    kept = {r.snapshot for r in records if r.snapshot}
    assert kept and kept <= names, "a collection took a snapshot a cache record names"
    for r in records:
        if r.layer is not None:
            await rig.storage.records.info(NS, r.layer.digest)  # still there

    assert await rig.stores.cache.prune(NS) == len(records)
    for image in await rig.storage.images.list(NS):
        if image.name != BASE:
            await rig.storage.images.delete(NS, image.name)
    await rig.storage.collector.collect()
    assert len(await rig.storage.snapshots.list(NS, sn)) == 1  # busybox's one layer
