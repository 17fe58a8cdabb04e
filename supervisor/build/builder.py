"""The build executor: a Dockerfile and a context directory in, an image out (issue 13).

    builder = Builder(BuildStores(content, images, snapshots, leases, differ, tasks, unpacker, registry,
                                  BuildCacheStore(db), "overlayfs", root / "tmp"), on_release=collector.schedule)
    result = await builder.build("default", context_dir, BuildRequest(dockerfile=b"...", tags=("app:1",)), progress)

The contract (requests, events, result, errors) is `api.py`'s. How a build runs:

1. Everything about the request is checked before any work: the network mode, the platform,
   the tags (normalized the Docker way, no digests), the Dockerfile (`dockerfile.py`) and the
   plan (`stages.py`: stages, target, the stages it needs). Unused --build-args are "warning"s.
2. Under one temporary lease (deleted at the end, whatever happens), the needed stages run in
   the plan's order. A stage starts FROM an image (the namespace's, pulled when missing or when
   the request says `pull`, for the stage's or the request's platform; unpacked by the daemon's
   Unpacker), `scratch`, or an earlier stage's result; its base's ONBUILD triggers run first.
3. Each instruction is a step, FROM lines included: "step", then "cached" if its result came
   from the cache, RUN's "output", then "done". Steps are numbered across the build; `total`
   counts the needed stages' lines and grows by a base's ONBUILD triggers once that base is
   known. Config instructions change `config.StageState` only (an
   `empty_layer` history entry). COPY/ADD and RUN change the rootfs: an active snapshot on the
   stage's top, the work (copy.py into the mounted snapshot; a task through `runstep.py`), the
   layer diffed against a view of the parent (`imagewrite.ImageWriter.diff`), and the snapshot
   committed under the new chain ID, the name the unpacker gives the same layers.
4. Cache (`cachekey.py`, records in `metadata/buildcache.py`, roots for the collector): every
   step has a key of its parent (the chain ID below it and a digest of the config and ARGs so
   far), the instruction as it runs, the sources it copies and the platform. A hit reuses the
   record's layer and snapshot; a layer step whose blob or snapshot is gone is run again.
   `no_cache` skips the lookups and still records. `Builder.prune` removes records
   (`cacheprune.py`); with `BuildStores.cache_max_size` the least recently used go after each
   build until the cache's own layers fit.
5. The image: the target stage's base image plus every step of its stage chain
   (`ImageWriter.write`), the request's labels added to the config's; named by the first tag
   (the others then point at it too), or, with no tags, `imagewrite.dangling_name(digest)`.
   The config gets the snapshot gc label of the top chain, so the image is unpacked already.

Multi-stage: `COPY --from=<stage>` reads a read-only view of that stage's top snapshot (an
image's rootfs for `--from=<image>`), mounted for the copy only. Only the target's chain of
stages contributes layers to the image.

Errors keep their kind and get the instruction's line (`dockerfile.at_instruction`); a RUN
that exits non-zero is FailedPrecondition with the step, the line, the code and its last lines
of output; the host refusing a file operation is ResourceExhausted (a full disk) or Internal.
Reproducible builds (`epoch.py`): with a SOURCE_DATE_EPOCH build arg the config's and the new
history entries' times are it and layer entries are clamped to it (part of every step's key).

RUN heredocs (`heredoc.py`: the text run by the shell, a `#!` script run as a file) and RUN
--mount (`runmounts.py`: bind from the context, a stage or an image; cache directories kept by
the daemon; tmpfs) are prepared only when the step runs; a bind's source content, like COPY's,
is part of the step's key.

Not done yet: ADD of a URL is never a cache hit (its key would need the download), RUN --mount
of secrets and ssh, a writable bind mount, supplementary groups of the USER.

Nothing of a build outlives it: RUN tasks are deleted (runstep.py), active snapshots and views
removed in `finally` blocks (shielded from cancellation), and what was committed is held by the
lease until the image record and the cache records hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import (
    AlreadyExists,
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unimplemented,
)
from dockyard_common.imagespec import (
    Compression,
    Matcher,
    chain_ids,
    default_platform,
    format_platform,
    parse_platform,
    snapshot_gc_label,
)
from dockyard_common.mounts import mounted
from dockyard_common.reference import InvalidReference, normalize, parse
from dockyard_common.rootpath import secure_join
from dockyard_common.types import Mount
from supervisor.build.api import NETWORK_MODES, BuildEvent, BuildRequest, BuildResult, Progress
from supervisor.build.cachekey import DigestCache, SourceMemo, hash_sources, step_key
from supervisor.build.cacheprune import (
    CacheUsage,
    PruneOptions,
    PruneReport,
    describe,
    image_blobs,
    prune_cache,
)
from supervisor.build.config import CONFIG_INSTRUCTIONS, StageState
from supervisor.build.copy import (
    Source,
    add_into,
    copy_into,
    http_fetch,
    inline_sources,
    parse_chmod,
    parse_chown,
    resolve_sources,
)
from supervisor.build.dockerfile import Dockerfile, Instruction, at_instruction, parse_dockerfile
from supervisor.build.epoch import epoch_time, source_date_epoch
from supervisor.build.heredoc import SCRIPT_DIR, SCRIPT_MODE, Script, run_argv
from supervisor.build.imagewrite import BaseImage, History, ImageWriter, Layer, Step, check_base, docker_layers
from supervisor.build.runmounts import CacheDirs, RunMount, bind_mount, parse_mount, tmpfs_mount
from supervisor.build.runstep import RunSpec, StepRunner
from supervisor.build.stages import SCRATCH, BuildOptions, BuildPlan, CopySource, Stage, plan_build
from supervisor.differ import Differ
from supervisor.images.leasing import temporary_lease
from supervisor.images.resolve import Resolver
from supervisor.images.unpack import UnpackDone, Unpacker
from supervisor.metadata import images as records
from supervisor.metadata.buildcache import BuildCacheStore, Record
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.leases import LeaseStore, Resource
from supervisor.metadata.snapshots import SnapshotStore, resource
from supervisor.remote.pull import PullOptions
from supervisor.remote.registry import Registry
from supervisor.runtime.manager import TaskManager
from supervisor.timeutil import now

log = logging.getLogger("dockyard.build")

COMPRESSION = Compression.GZIP
TAIL_BYTES = 2048  # of a failed RUN's output, in its error message
TAIL_LINES = 5


@dataclass
class BuildStores:
    """What the builder works with: the daemon's stores and runtime, each built once."""

    content: NamespacedContentStore
    images: records.ImageStore
    snapshots: SnapshotStore
    leases: LeaseStore
    differ: Differ
    tasks: TaskManager
    unpacker: Unpacker
    registry: Registry | None  # None: base images must be in the namespace already
    cache: BuildCacheStore
    snapshotter: str
    tmp_root: Path  # for mounts and FIFOs (the differ's)
    cache_max_size: int = 0  # bytes the build cache alone may hold per namespace (cacheprune.py); 0: no limit
    cache_mounts: Path | None = None  # RUN --mount=type=cache directories; None: <tmp_root>/../build-cache-mounts


@dataclass
class StageResult:
    """A stage as far as it has run: its config state, the top of its rootfs (a committed
    snapshot named by chain ID, "" for an empty rootfs), the image its chain of stages starts
    from, and the steps since that image."""

    state: StageState
    chain: str
    base: BaseImage | None
    steps: list[Step] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)  # of every layer below `chain`, base's first


@dataclass(frozen=True)
class _MountSource:
    """A RUN --mount's bind source: a host path (the context's) or a snapshot chain to view,
    and what identifies its content in the step's cache key."""

    host: str = ""
    chain: str = ""
    identity: str = ""


def _in_root(root: Path, path: str, what: str) -> str:
    """`path` inside `root` (symlinks followed within it), which must exist."""
    host = secure_join(str(root), path)
    if not os.path.lexists(host):
        raise NotFound(f"RUN --mount: source {path!r} not found in {what}")
    return host


def _hash_bind(host: str, spec: str) -> str:
    """The content of a bind mount's source in the context, as COPY's sources are hashed."""
    return hash_sources([Source(Path(host), "source", os.path.isdir(host), spec)], owners=False)


def image_tags(tags: tuple[str, ...]) -> list[str]:
    """The request's tags normalized (`app` -> docker.io/library/app:latest), duplicates dropped."""
    out: list[str] = []
    for tag in tags:
        try:
            name = normalize(tag)
        except InvalidReference as exc:
            raise InvalidArgument(f"build: tag {tag!r}: {exc.message}") from None
        if parse(name).digest:
            raise InvalidArgument(f"build: tag {tag!r} has a digest; name the image with a tag")
        if name not in out:
            out.append(name)
    return out


def _digest_json(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def created_by(ins: Instruction, state: StageState) -> str:
    """The history text of a step, as buildkit writes it (RUN: the command as it runs)."""
    if ins.name == "RUN":
        argv = state.command(ins)
        return f"RUN {' '.join(argv)} # buildkit" if not ins.json else f"RUN {json.dumps(argv)} # buildkit"
    text = " ".join(ins.original.split())
    return f"{text} # buildkit" if ins.name in ("COPY", "ADD") else text


class _Build:
    """One build's working state (the Builder is shared by concurrent builds)."""

    def __init__(self, builder: Builder, ns: str, context: Path, request: BuildRequest, progress: Progress,
                 df: Dockerfile, plan: BuildPlan, lease: str, platform: str, epoch: int | None = None) -> None:
        self.b = builder
        self.s = builder.stores
        self.ns = ns
        self.context = context
        self.sources: SourceMemo | None = None  # digests of the context's sources kept from earlier builds
        self.request = request
        self.progress = progress
        self.df = df
        self.plan = plan
        self.lease = lease
        self.platform = platform
        self.epoch = epoch  # SOURCE_DATE_EPOCH (epoch.py), None: times as they are
        self.results: dict[int, StageResult] = {}
        self.building: set[int] = set()
        self.images: dict[str, tuple[BaseImage, str]] = {}  # reference -> (image, unpacked chain)
        self.step = 0
        self.total = sum(1 + len(plan.stages[i].instructions) for i in plan.order)

    async def emit(self, kind: str, stage: Stage, text: str = "", **kw: Any) -> None:
        await self.progress(BuildEvent(kind, self.step, self.total, stage.label, text, **kw))

    # -- stages --------------------------------------------------------------------------

    async def stage(self, index: int) -> StageResult:
        found = self.results.get(index)
        if found is not None:
            return found
        if index in self.building:
            raise InvalidArgument(f"stage {self.plan.stages[index].label} depends on itself "
                                  "(through an ONBUILD trigger's COPY --from)")
        self.building.add(index)
        stage = self.plan.stages[index]
        result = await self._from(stage)
        triggers = result.state.run_triggers(self.df, stage.line)
        self.total += len(triggers)
        for ins in [*triggers, *stage.instructions]:
            self.step += 1
            await self.emit("step", stage, ins.original.strip() or ins.name)
            with at_instruction(ins):
                try:
                    await self.instruction(stage, result, ins)
                except OSError as exc:  # the host's file system refused (full, read-only, ...)
                    kind = ResourceExhausted if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Internal
                    raise kind(f"{ins.name}: {exc.strerror or exc}"
                               + (f": {exc.filename}" if exc.filename else "")) from None
        self.results[index] = result
        self.building.discard(index)
        return result

    async def _from(self, stage: Stage) -> StageResult:
        self.step += 1
        await self.emit("step", stage, f"FROM {stage.base}" + (f" AS {stage.name}" if stage.name else ""))
        if stage.base_stage is not None:
            base = await self.stage(stage.base_stage)
            state = StageState.start(base.state.image, self.plan, stage)
            result = StageResult(state, base.chain, base.base, list(base.steps), list(base.diff_ids))
            text = f"stage {self.plan.stages[stage.base_stage].label}"
        elif stage.base == SCRATCH:
            result = StageResult(StageState.start(None, self.plan, stage), "", None)
            text = "scratch"
        else:
            try:
                image, chain = await self.image(stage.base, stage.platform)
                check_base(image, f"image {stage.base!r}")
            except DockyardError as exc:
                raise type(exc)(f"Dockerfile:{stage.line}: {exc.message}") from None
            state = StageState.start(image.config.raw, self.plan, stage)
            result = StageResult(state, chain, image, [], list(image.config.diff_ids))
            text = image.manifest.config.digest
        await self.emit("done", stage, text)
        return result

    async def image(self, ref: str, platform: str | None) -> tuple[BaseImage, str]:
        """A base (or COPY --from) image for the platform, pulled if needed, unpacked."""
        key = f"{ref}\0{platform or ''}"
        found = self.images.get(key)
        if found is not None:
            return found
        try:
            name = normalize(ref)
        except InvalidReference as exc:
            raise InvalidArgument(f"image {ref!r}: {exc.message}") from None
        wanted = platform or self.platform
        try:
            matcher = Matcher.parse(wanted)
        except InvalidArgument as exc:
            raise InvalidArgument(f"platform {wanted!r}: {exc.message}") from None
        record = None
        if not self.request.pull:
            with contextlib.suppress(NotFound):
                record = await self.s.images.get(self.ns, name)
        if record is None:
            record = await self._pull(name, wanted)
        try:
            resolved = await self.b.resolver.resolve(self.ns, record.target, matcher)
        except NotFound as exc:
            raise NotFound(f"image {ref!r} has nothing for platform "
                           f"{wanted or format_platform(default_platform())}: {exc.message}") from None
        chain = ""
        async for event in self.s.unpacker.unpack(self.ns, record.target, self.s.snapshotter, matcher, self.lease):
            if isinstance(event, UnpackDone):
                chain = event.chain_id
        base = BaseImage(resolved.manifest, resolved.config)
        self.images[key] = (base, chain)
        return base, chain

    async def _pull(self, name: str, platform: str) -> records.Image:
        if self.s.registry is None:
            raise NotFound(f"image {name!r} is not in the namespace (and this daemon "
                           "cannot pull)")
        try:
            async for _ in self.s.registry.pull(self.ns, name, PullOptions(platform=platform,
                                                                          snapshotter=self.s.snapshotter)):
                pass
            return await self.s.images.get(self.ns, name)
        except DockyardError as exc:
            raise NotFound(f"image {name!r} could not be pulled: {exc.message}") from None

    # -- steps -----------------------------------------------------------------------------

    def parent_id(self, result: StageResult) -> str:
        """What a step starts from: the rootfs below it and everything the config and ARGs say."""
        doc: dict[str, Any] = {"chain": result.chain, "config": result.state.image, "args": result.state.args,
                               "diff_ids": result.diff_ids}
        if self.epoch is not None:  # its layers differ in their mtimes
            doc["epoch"] = self.epoch
        return _digest_json(doc)

    async def instruction(self, stage: Stage, result: StageResult, ins: Instruction) -> None:
        if ins.name in CONFIG_INSTRUCTIONS:
            await self.config_step(stage, result, ins)
        elif ins.name in ("COPY", "ADD"):
            await self.copy_step(stage, result, ins)
        elif ins.name == "RUN":
            await self.run_step(stage, result, ins)
        else:  # FROM never reaches here (stages split on it)
            raise ins.error(f"{ins.name} cannot be built here")

    async def config_step(self, stage: Stage, result: StageResult, ins: Instruction) -> None:
        key = step_key(parent=self.parent_id(result), instruction=ins.original, platform=self.platform,
                       extra={"kind": "config", "args": list(ins.args)})
        history = History(created_by=created_by(ins, result.state))
        result.state.apply(ins)
        hit = await self.lookup(key)
        if hit is not None:
            await self.emit("cached", stage)
        else:
            await self.s.cache.put(self.ns, Record(key))
        result.steps.append(Step(history))
        await self.emit("done", stage, ins.name)

    async def lookup(self, key: str) -> Record | None:
        if self.request.no_cache:
            return None
        return await self.s.cache.get(self.ns, key)

    async def reuse(self, record: Record) -> Layer | None:
        """The cached layer, if its blob and snapshot are still there; held by our lease now."""
        if record.layer is None or not record.snapshot or record.snapshotter != self.s.snapshotter:
            return None
        try:
            await self.s.snapshots.stat(self.ns, record.snapshotter, record.snapshot)
            await self.s.content.info(self.ns, record.layer.digest)
            await self.s.leases.add_resource(self.ns, self.lease, resource(record.snapshotter, record.snapshot))
            await self.s.leases.add_resource(self.ns, self.lease, Resource(record.layer.digest, "content"))
        except NotFound:
            return None
        return Layer(record.layer, record.diff_id)

    async def layer_step(self, stage: Stage, result: StageResult, ins: Instruction, key: str,
                         work: Callable[[list[Mount]], Any]) -> None:
        """Reuse the cached layer of `key`, or prepare a snapshot, do `work` on its mounts, diff
        and commit it; the stage's top moves to the new chain."""
        history = History(created_by=created_by(ins, result.state))
        record = await self.lookup(key)
        layer = await self.reuse(record) if record is not None else None
        if layer is not None and record is not None:
            await self.emit("cached", stage)
            chain = record.snapshot
        else:
            layer, chain = await self.make_layer(result, work)
            await self.s.cache.put(self.ns, Record(key, self.s.snapshotter, chain, layer.descriptor, layer.diff_id))
        result.steps.append(Step(history, layer))
        result.diff_ids.append(layer.diff_id)
        result.chain = chain
        await self.emit("done", stage, layer.descriptor.digest)

    async def make_layer(self, result: StageResult, work: Callable[[list[Mount]], Any]) -> tuple[Layer, str]:
        sn = self.s.snapshotter
        active = f"build-{self.lease}-{secrets.token_hex(6)}"
        mounts = await self.s.snapshots.prepare(self.ns, sn, active, result.chain, lease=self.lease)
        committed = False
        try:
            await work(mounts)
            async with self.view(result.chain) as lower:
                docker = docker_layers(result.base, COMPRESSION)
                # the walk runs in a thread on our mounts: a cancelled build lets it end first
                # The step's overlay upperdir names what it changed: only that is walked.
                layer = await uninterrupted(self.b.writer.diff(self.ns, lower, mounts, COMPRESSION, self.lease,
                                                               docker=docker, mtime_clamp=self.epoch,
                                                               from_upperdir=True))
            chain = chain_ids([*result.diff_ids, layer.diff_id])[-1]
            try:
                await self.s.snapshots.commit(self.ns, sn, chain, active, lease=self.lease)
                committed = True
            except AlreadyExists:  # the same layer on the same parent, made before: use that one
                await self.s.leases.add_resource(self.ns, self.lease, resource(sn, chain))
            return layer, chain
        finally:
            if not committed:
                await asyncio.shield(self.b.remove_snapshot(self.ns, active))

    @contextlib.asynccontextmanager
    async def view(self, chain: str) -> AsyncIterator[list[Mount]]:
        """Mounts of a read-only view of `chain` ([] for the empty rootfs), removed after."""
        if not chain:
            yield []
            return
        key = f"build-view-{self.lease}-{secrets.token_hex(6)}"
        mounts = await self.s.snapshots.view(self.ns, self.s.snapshotter, key, chain, lease=self.lease)
        try:
            yield mounts
        finally:
            await asyncio.shield(self.b.remove_snapshot(self.ns, key))

    # -- RUN --------------------------------------------------------------------------------

    async def run_step(self, stage: Stage, result: StageResult, ins: Instruction) -> None:
        security = ins.flag("security")
        if security not in (None, "sandbox"):
            raise Unimplemented(f"RUN --security={security} is not supported")
        network = ins.flag("network") or self.request.network
        if network not in NETWORK_MODES:
            raise ins.error(f"RUN --network={network}: want default, none or host")
        state = result.state
        user, workdir = str(state.config.get("User") or ""), str(state.config.get("WorkingDir") or "/")
        argv, script = run_argv(state.shell(), ins) if ins.heredocs else (state.command(ins), None)
        specs = [parse_mount(text, lambda word: state.expand(ins, word), workdir) for text in ins.flag("mount") or []]
        sources = [await self._mount_source(ins, m) for m in specs]
        doc: dict[str, Any] = {"argv": argv, "env": state.run_env(), "user": user, "workdir": workdir,
                               "network": network}
        if script is not None:
            doc["script"] = script.content
        if specs:
            doc["mounts"] = [{**m.key(), "content": src.identity} for m, src in zip(specs, sources, strict=True)]
        key = step_key(parent=self.parent_id(result), instruction=_digest_json(doc), platform=self.platform,
                       extra={"kind": "run"})

        async def prepare(stack: contextlib.AsyncExitStack) -> RunSpec:
            mounts: list[dict[str, Any]] = []
            if script is not None:
                mounts.append(await stack.enter_async_context(self._script_mount(script)))
            for m, src in zip(specs, sources, strict=True):
                mounts.append(await self._step_mount(stack, m, src))
            return RunSpec(argv, state.run_env(), user, workdir, network, tuple(mounts))

        await self._run(stage, result, ins, key, prepare)

    async def _mount_source(self, ins: Instruction, m: RunMount) -> _MountSource:
        """Where a bind mount reads and what identifies its content for the cache key."""
        if m.type != "bind":
            return _MountSource()
        if not m.from_:
            host = await asyncio.to_thread(_in_root, self.context, m.source, "the build context")
            return _MountSource(host=host, identity=await asyncio.to_thread(_hash_bind, host, m.source))
        chain, what = await self._source_chain(self.plan.source_of(ins, m.from_, "RUN --mount from"), ins)
        if not chain:
            raise NotFound(f"RUN --mount from={m.from_}: the source is empty (scratch)")
        return _MountSource(chain=chain, identity=what)

    async def _step_mount(self, stack: contextlib.AsyncExitStack, m: RunMount, src: _MountSource) -> dict[str, Any]:
        """The OCI mount of one --mount, what it needs held by `stack` for the step."""
        if m.type == "tmpfs":
            return tmpfs_mount(m)
        if m.type == "cache":
            cache_dir = await stack.enter_async_context(self.b.cache_dirs.use(self.ns, m, self._tmp()))
            return bind_mount(str(cache_dir), m)
        if src.chain:
            view = await stack.enter_async_context(self.view(src.chain))
            root = await stack.enter_async_context(self.mounted(view))
            host = await asyncio.to_thread(_in_root, root, m.source, f"from={m.from_}")
            return bind_mount(host, m)
        return bind_mount(src.host, m)

    @contextlib.asynccontextmanager
    async def _script_mount(self, script: Script) -> AsyncIterator[dict[str, Any]]:
        """A heredoc script in a private directory, bound read-only at SCRIPT_DIR for the step."""
        directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="build-script-", dir=self._tmp()))
        try:
            def write() -> None:
                os.chmod(directory, 0o755)  # the step's USER may not be root
                path = directory / script.name
                path.write_text(script.content)
                os.chmod(path, SCRIPT_MODE)

            await asyncio.to_thread(write)
            yield {"destination": SCRIPT_DIR, "type": "bind", "source": str(directory),
                   "options": ["rbind", "ro", "nosuid", "nodev"]}
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, directory, True))

    async def _run(self, stage: Stage, result: StageResult, ins: Instruction, key: str,
                   prepare: Callable[[contextlib.AsyncExitStack], Any]) -> None:
        tail = bytearray()

        async def output(stream: str, data: bytes) -> None:
            tail.extend(data)
            del tail[:-TAIL_BYTES]
            await self.emit("output", stage, data=data, stream=stream)

        async def work(mounts: list[Mount]) -> None:
            async with contextlib.AsyncExitStack() as stack:
                run = await prepare(stack)
                code = await self.b.runner.run(self.ns, run, mounts, output)
            if code != 0:
                lines = bytes(tail).decode(errors="replace").rstrip("\n").splitlines()[-TAIL_LINES:]
                last = ("; last output:\n" + "\n".join(lines)) if lines else ""
                raise FailedPrecondition(
                    f"step {self.step}/{self.total} ({' '.join(ins.original.split())}) "
                    f"exited with code {code}{last}")

        await self.layer_step(stage, result, ins, key, work)

    # -- COPY and ADD -----------------------------------------------------------------------

    async def copy_step(self, stage: Stage, result: StageResult, ins: Instruction) -> None:
        args = result.state.copy_args(ins)
        if args.chmod is not None:
            parse_chmod(args.chmod)  # a bad mode is refused before any work
        source = self._copy_source(stage, ins)
        instruction = _digest_json({"name": ins.name, "sources": list(args.sources), "dest": args.dest,
                                    "chown": args.chown, "chmod": args.chmod, "checksum": args.checksum,
                                    "inline": list(args.inline)})
        workdir = str(result.state.config.get("WorkingDir") or "/")
        with tempfile.TemporaryDirectory(prefix="build-inline-", dir=self._tmp()) as tmp:
            inline = inline_sources(args.inline, Path(tmp)) if args.inline else []
            if source is None:
                await self._copy_from_context(stage, result, ins, args, instruction, inline, workdir)
                return
            if ins.name != "COPY":
                raise ins.error("--from is only valid for COPY")
            chain, what = await self._source_chain(source, ins)
            async with self.view(chain) as src_mounts:
                if not src_mounts:
                    raise NotFound(f"{ins.name} --from={ins.flag('from')}: the source is empty (scratch)")
                async with self.mounted(src_mounts) as src_root:
                    sources = await asyncio.to_thread(resolve_sources, src_root, list(args.sources),
                                                      confined=False, what=ins.name)
                    hashed = await asyncio.to_thread(hash_sources, [*sources, *inline], owners=True)
                    key = step_key(parent=self.parent_id(result), instruction=instruction, sources=hashed,
                                   platform=self.platform, extra={"kind": "copy", "from": what})

                    async def work(mounts: list[Mount]) -> None:
                        await uninterrupted(asyncio.to_thread(self._copy, mounts, args.dest, [*sources, *inline],
                                                              workdir, args.chown, args.chmod, True))

                    await self.layer_step(stage, result, ins, key, work)

    async def _copy_from_context(self, stage: Stage, result: StageResult, ins: Instruction, args: Any,
                                 instruction: str, inline: list[Source], workdir: str) -> None:
        urls = [s for s in args.sources if s.startswith(("http://", "https://", "git@"))] if ins.name == "ADD" else []
        local = [s for s in args.sources if s not in urls]
        sources = await asyncio.to_thread(resolve_sources, self.context, local, confined=True,
                                          what=ins.name) if local else []
        hashed = await asyncio.to_thread(hash_sources, [*sources, *inline], owners=False,
                                         digests=self.b.context_digests, memo=self.sources, root=self.context)
        # ADD of a URL: what the server sends is only known by downloading it, so it is not cached.
        extra: dict[str, Any] = {"kind": "copy", "nonce": secrets.token_hex(8) if urls else ""}
        key = step_key(parent=self.parent_id(result), instruction=instruction, sources=hashed,
                       platform=self.platform, extra=extra)

        async def work(mounts: list[Mount]) -> None:
            if ins.name == "ADD":
                await uninterrupted(asyncio.to_thread(self._add, mounts, args, workdir, inline))
            else:
                await uninterrupted(asyncio.to_thread(self._copy, mounts, args.dest, [*sources, *inline], workdir,
                                                      args.chown, args.chmod, False))

        await self.layer_step(stage, result, ins, key, work)

    def _copy(self, mounts: list[Mount], dest: str, sources: list[Source], workdir: str, chown: str | None,
              chmod: str | None, preserve_owner: bool) -> None:
        with mounted(mounts, self._tmp()) as root:
            owner = parse_chown(chown, root) if chown else None
            mode = parse_chmod(chmod) if chmod else None
            copy_into(root, dest, sources, workdir=workdir, owner=owner, mode=mode, preserve_owner=preserve_owner)

    def _add(self, mounts: list[Mount], args: Any, workdir: str, inline: list[Source]) -> None:
        with mounted(mounts, self._tmp()) as root:
            owner = parse_chown(args.chown, root) if args.chown else None
            mode = parse_chmod(args.chmod) if args.chmod else None
            add_into(root, args.dest, list(args.sources), self.context, workdir=workdir, owner=owner, mode=mode,
                     fetch=http_fetch, checksum=args.checksum)
            if inline:
                copy_into(root, args.dest, inline, workdir=workdir, owner=owner, mode=mode)

    def _copy_source(self, stage: Stage, ins: Instruction) -> CopySource | None:
        if ins.flag("from") is None:
            return None
        for i, candidate in enumerate(stage.instructions):
            if candidate is ins:
                found = stage.copy_from.get(i)
                if found is not None:
                    return found
        return self.plan.copy_source(ins)  # an ONBUILD trigger's

    async def _source_chain(self, source: CopySource, ins: Instruction) -> tuple[str, str]:
        """The top snapshot a COPY --from reads, and what identifies it for the cache."""
        if source.stage is not None:
            other = await self.stage(source.stage)
            return other.chain, f"stage:{other.chain}"
        assert source.image is not None
        image, chain = await self.image(source.image, None)
        return chain, f"image:{image.manifest.config.digest}"

    @contextlib.asynccontextmanager
    async def mounted(self, mounts: list[Mount]) -> AsyncIterator[Path]:
        """`mounts` read-only on a temporary directory for the block (mount and unmount in a
        thread: they may wait on the disk)."""
        cm = mounted(mounts, self._tmp(), readonly=True)
        root = await uninterrupted(asyncio.to_thread(cm.__enter__))
        try:
            yield root
        finally:
            await uninterrupted(asyncio.to_thread(cm.__exit__, None, None, None))

    def _tmp(self) -> Path:
        self.s.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.s.tmp_root


class Builder:
    def __init__(self, stores: BuildStores, on_release: Callable[[], None] = lambda: None) -> None:
        self.stores = stores
        self.on_release = on_release
        self.writer = ImageWriter(stores.content, stores.images, stores.differ)
        self.resolver = Resolver(stores.content)
        self.runner = StepRunner(stores.tasks, stores.tmp_root)
        self.cache_dirs = CacheDirs(stores.cache_mounts or stores.tmp_root.parent / "build-cache-mounts")
        self.context_digests = DigestCache()  # a kept context's files are hashed once (cachekey.py)

    async def build(self, namespace: str, context_dir: Path, request: BuildRequest, progress: Progress,
                    sources: SourceMemo | None = None) -> BuildResult:
        if request.network not in NETWORK_MODES:
            raise InvalidArgument(f"build: network {request.network!r}: want one of {', '.join(NETWORK_MODES)}")
        platform = ""
        if request.platform:
            try:
                platform = format_platform(parse_platform(request.platform))
            except InvalidArgument as exc:
                raise InvalidArgument(f"build: platform {request.platform!r}: {exc.message}") from None
        tags = image_tags(request.tags)
        epoch = source_date_epoch(request.build_args)
        for key, _ in request.labels:
            if not key:
                raise InvalidArgument("build: a label needs a name")
        if not await asyncio.to_thread(Path(context_dir).is_dir):
            raise InvalidArgument(f"build: the context {context_dir} is not a directory")
        df = parse_dockerfile(request.dockerfile)
        target_platform = parse_platform(platform) if platform else None
        plan = plan_build(df, BuildOptions(build_args=dict(request.build_args), target=request.target or None,
                                           target_platform=target_platform))
        first = plan.stages[plan.order[0]]
        for name in plan.unused_build_args:
            await progress(BuildEvent("warning", 0, 0, first.label,
                                      f"build-arg {name} was not consumed by any ARG of the stages built"))
        async with temporary_lease(self.stores.leases, namespace, self.on_release) as lease:
            run = _Build(self, namespace, Path(context_dir), request, progress, df, plan, lease, platform, epoch)
            run.sources = sources
            for index in plan.order:
                await run.stage(index)
            result = await self._write(run, plan.stages[plan.target], run.results[plan.target], tags, lease)
        await self._limit_cache(namespace)
        return result

    async def prune(self, namespace: str, options: PruneOptions) -> PruneReport:
        """Remove build cache records (`cacheprune.py`; the collector then frees their layers) and,
        unless `keep_storage` asks to keep some cache, the RUN --mount=type=cache directories no
        step uses (they are freed at once)."""
        report = await prune_cache(self.stores.cache, self.stores.content, self.stores.images, namespace, options,
                                   self.on_release)
        if options.keep_storage:
            return report
        dirs, freed = await asyncio.to_thread(self.cache_dirs.prune, namespace, options.unused_for, now())
        return PruneReport(report.removed + tuple(dirs), report.reclaimed + freed)

    async def cache_usage(self, namespace: str) -> CacheUsage:
        """The namespace's build cache records and cache directories, and the bytes they hold."""
        recs = await self.stores.cache.list(namespace)
        in_use = await image_blobs(self.stores.content, self.stores.images, namespace)
        return describe(recs, in_use, await asyncio.to_thread(self.cache_dirs.usage, namespace))

    async def _limit_cache(self, namespace: str) -> None:
        """The config's size limit, after each build: least recently used records go first. A
        failure here is logged, not the build's: the image is made."""
        if self.stores.cache_max_size <= 0:
            return
        try:
            report = await self.prune(namespace, PruneOptions(all=True, keep_storage=self.stores.cache_max_size))
        except DockyardError:
            log.exception("build: could not bring the build cache under its size limit")
            return
        if report.removed:
            log.info("build cache of %s over its limit: %d records removed, %d bytes released", namespace,
                     len(report.removed), report.reclaimed)

    async def _write(self, run: _Build, stage: Stage, result: StageResult, tags: list[str],
                     lease: str) -> BuildResult:
        config = dict(result.state.config)
        if run.request.labels:
            config["Labels"] = {**(config.get("Labels") or {}), **dict(run.request.labels)}
        written = await self.writer.write(run.ns, tags[0] if tags else "", result.base, result.steps, config, lease,
                                          author=str(result.state.image.get("author") or ""),
                                          created=epoch_time(run.epoch) if run.epoch is not None else None)
        if result.chain:
            label = snapshot_gc_label(self.stores.snapshotter)
            await self.stores.content.update(run.ns, written.config.digest, {label: result.chain},
                                             [f"labels.{label}"])
        for name in tags[1:]:
            await self._name(run.ns, records.Image(name, written.target.record()))
        log.info("built %s (%s) in namespace %s", ", ".join(tags) or written.name, written.target.digest, run.ns)
        return BuildResult(written.target.digest, written.config.digest, tuple(tags) or (written.name,))

    async def _name(self, ns: str, image: records.Image) -> None:
        try:
            await self.stores.images.update(ns, image, ["target"])
        except NotFound:
            try:
                await self.stores.images.create(ns, image)
            except AlreadyExists:
                await self.stores.images.update(ns, image, ["target"])

    async def remove_snapshot(self, ns: str, key: str) -> None:
        try:
            await self.stores.snapshots.remove(ns, self.stores.snapshotter, key)
        except NotFound:
            pass
        except Exception:  # the lease's end lets the collector take it
            log.exception("build: could not remove snapshot %r", key)

