"""Containers from images, and running their tasks in the foreground: what `dock run` does.

The client does the work containerd's client does (ctr-calls.md §2, "run --rm"):

    image      Images/Get (the name normalized: `busybox` is docker.io/library/busybox:latest),
               the manifest for this platform (through an index if need be), the config
    unpack     when Snapshots/Stat(chain ID) says NotFound: per layer Prepare → Diff/Apply →
               Commit, checking each applied digest against the config's diff ID
    snapshot   Snapshots/Prepare(key = container id, parent = chain ID), in a lease
    spec       dock.oci, with the snapshot mounted read-only on the host for a moment to read
               the image's /etc/passwd and /etc/group
    container  Containers/Create, then the lease goes (the container now holds the snapshot)
    task       FIFOs in a private temp dir → Tasks/Create → Start → copy stdio, forward
               signals as Tasks/Kill, resize a terminal → Wait → Tasks/Delete
               (with -i or -t: Tasks/Create without stdio → the daemon's Attach (dock/attach.py)
               → Start, so ctrl-p ctrl-q detaches and leaves it running; FIFOs again when the
               task's shim does not serve attach, e.g. containerd's runc shim)

Whatever fails, what this run made is undone in reverse order: no task, container,
snapshot, lease, anonymous volume or FIFO dir of it stays behind. Only success keeps the
container (and, with `--rm`, not even that).

What the daemon does at the exit, the daemon owns (dockyard_common/autoremove.py, restartpolicy.py):
- `--rm`: the container carries the auto-remove label and the daemon removes it, with its
  anonymous volumes, whenever its task exits (also after ctrl-p ctrl-q, or when this client was
  killed). A foreground run subscribes to its events before Tasks/Create (RemovalWatch; the
  daemon says when the subscription is in place) and waits for its /containers/delete (Docker's
  `wait --condition=removed`), so the next command no longer sees it. Through the daemon's attach
  (-i, or -t with a log) the exit status comes from the attach stream; through FIFOs (a plain
  foreground run, which every runtime's shim serves) from the task's /tasks/exit event, never
  from Tasks/Wait, which the daemon's removal could beat. The one client-side removal left, as
  `ctr run --rm`: -i/-t with a shim that does not serve attach (the fallback below).
- A restart policy in the foreground goes through the daemon's attach: the first run is shown and
  its exit status comes from that task's own shim, so a restart that follows at once cannot be
  mistaken for it; the task and the container stay for the daemon. A shim that does not serve
  attach (containerd's runc shim) cannot do this: refused, use -d.

    code = await run(client, RunRequest("busybox", "hello", SpecOptions(args=["echo", "hi"]), rm=True))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import termios
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, TypeVar

from dock import autopull, volumes
from dock.client import Client
from dock.containers import RUNC_V2, oci_spec_any
from dock.events import Envelope
from dock.lookup import NAME_LABEL, in_dock_words, resolve
from dock.network import BRIDGE, NetworkOptions
from dock.oci import STOP_SIGNAL_LABEL, ImageConfig, RootFS, SpecOptions, build_spec
from dock.ps import LAST_EXIT_LABEL, last_exit_label
from dock.rootfs import container_mounts_of, mounted_readonly
from dock.snapshots import DEFAULT_SNAPSHOTTER, SnapshotsAPI
from dock.stdio import ProcessIO, write_all
from dock.tasks import Status
from dockyard_common import attachsock, autoremove
from dockyard_common import healthcheck as hc
from dockyard_common import imagespec as docs
from dockyard_common import restartpolicy as rp
from dockyard_common.aio import uninterrupted
from dockyard_common.containerlog import DRIVER as LOG_DRIVER
from dockyard_common.containerlog import LABEL_DRIVER
from dockyard_common.errors import (
    AlreadyExists,
    DockyardError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from dockyard_common.types import AnyValue, Container, Mount

RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"  # an empty runc Options message, as ctr sends
DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"
LEASE_TTL = timedelta(hours=24)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
T = TypeVar("T")
KILL_WAIT = 10.0  # seconds for a killed task to stop during cleanup
REMOVE_WAIT = 30.0  # seconds for the daemon to remove an --rm container before we do it ourselves
EXIT_TOPIC = "/tasks/exit"
DELETE_TOPIC = "/containers/delete"


@dataclass
class ResolvedImage:
    name: str
    manifest: docs.Manifest
    config: docs.ImageConfig
    chain_ids: list[str]

    @property
    def chain_id(self) -> str:
        return self.chain_ids[-1]

    @property
    def run_config(self) -> ImageConfig:
        return ImageConfig.from_json(self.config.config)


@dataclass
class RunRequest:
    image: str
    id: str
    spec: SpecOptions = field(default_factory=SpecOptions)
    rm: bool = False
    detach: bool = False
    interactive: bool = False
    snapshotter: str = ""  # "" = the namespace's default, else overlayfs
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = RUNC_V2
    platform: str = ""  # "" = this host's
    # None: no network labels, the spec alone rules (as a containerd client); the CLI always sets it
    network: NetworkOptions | None = None
    detach_keys: str = ""  # with -t and -i: Docker's syntax, "" is ctrl-p,ctrl-q
    # `--pull` (dock/autopull.py): "never" keeps an SDK caller's run to the store; the CLI says "missing"
    pull: str = autopull.NEVER
    # `--health-*`/`--no-healthcheck` (dockyard_common/healthcheck.py): merged with the image's
    # HEALTHCHECK field by field; None: the image's as it is
    health: hc.HealthConfig | None = None
    # `--name`: the id is the container's name, also written as its NAME_LABEL, so the daemon
    # refuses the create when another container holds the name (dock/lookup.py)
    named: bool = False

    @property
    def restarts(self) -> bool:
        """A restart policy in the labels: the daemon restarts the task when it exits."""
        return rp.State.of(self.labels).policy.restarts

    @property
    def attachable(self) -> bool:
        """Our shim serves attach for it (it has an open stdin or a log): output and exit status
        can come through the daemon instead of FIFOs."""
        return self.interactive or self.labels.get(LABEL_DRIVER) == LOG_DRIVER

    @property
    def through_attach(self) -> bool:
        """A foreground run whose stdio goes through the daemon's attach rather than FIFOs: with an
        open stdin (so it can detach), a log's terminal, or a restart policy (the first run's
        exit status then comes from its own shim, never from a restarted task)."""
        return self.interactive or (self.attachable and (self.spec.tty or self.restarts))

    @property
    def auto_remove(self) -> bool:
        """`--rm` done by the daemon (every run that asks for it: a restart policy is refused with
        it): the client's exit, even by SIGKILL, leaves nothing behind once the task ends."""
        return self.rm and not self.restarts


# -- images ------------------------------------------------------------------------------------


async def resolve_image(client: Client, ref: str, platform: str = "") -> ResolvedImage:
    """The image `ref` names: its manifest for `platform` (the host's by default) and config."""
    image = await client.images.find(ref)
    matcher = docs.Matcher.parse(platform)
    desc = docs.Descriptor(image.target.media_type, image.target.digest, image.target.size)
    for _ in range(docs.MAX_INDEX_DEPTH):
        data = await client.content.read_all(desc.digest)
        doc = docs.parse_document(data, desc.media_type, f"image {image.name} {desc.digest}")
        if isinstance(doc, docs.Manifest):
            break
        best = matcher.best(doc.manifests)
        if best is None:
            raise NotFound(f"image {image.name}: no manifest for platform {matcher}")
        desc = best
    else:
        raise InvalidArgument(f"image {image.name}: indexes nested deeper than {docs.MAX_INDEX_DEPTH}")
    config = docs.parse_config(await client.content.read_all(doc.config.digest), f"image {image.name} config")
    if not config.diff_ids or len(config.diff_ids) != len(doc.layers):
        raise InvalidArgument(f"image {image.name}: {len(doc.layers)} layers but {len(config.diff_ids)} diff IDs")
    return ResolvedImage(image.name, doc, config, docs.chain_ids(config.diff_ids))


async def _exists(snaps: SnapshotsAPI, key: str) -> bool:
    try:
        await snaps.stat(key)
    except NotFound:
        return False
    return True


async def ensure_unpacked(client: Client, image: ResolvedImage, snaps: SnapshotsAPI) -> bool:
    """Unpack the image's layers that are not yet snapshots (as ctr: Stat, Prepare, Apply,
    Commit per layer); True when anything was unpacked. `snaps` should carry a lease."""
    if await _exists(snaps, image.chain_id):
        return False
    for i, layer in enumerate(image.manifest.layers):
        chain = image.chain_ids[i]
        if await _exists(snaps, chain):
            continue
        key = f"extract-{time.time_ns()}-{secrets.token_hex(4)} {chain}"
        mounts = await snaps.prepare(key, image.chain_ids[i - 1] if i else "")
        try:
            applied = await client.diff.apply(layer.record(), mounts)
            if applied.digest != image.config.diff_ids[i]:
                raise InvalidArgument(f"wrong diff id calculated on extraction {image.config.diff_ids[i]!r}: "
                                      f"got {applied.digest}")
            try:
                await snaps.commit(chain, key)
            except AlreadyExists:  # unpacked meanwhile by someone else: theirs is as good
                await snaps.remove(key)
        except BaseException:
            with contextlib.suppress(DockyardError):
                await snaps.remove(key)
            raise
        await client.content.set_labels(layer.digest, {docs.LABEL_UNCOMPRESSED: image.config.diff_ids[i]})
    # The config keeps the unpacked chain alive for as long as the image keeps the config.
    await client.content.set_labels(image.manifest.config.digest,
                                    {docs.snapshot_gc_label(snaps.snapshotter): image.chain_id})
    return True


async def default_snapshotter(client: Client) -> str:
    """The namespace's `containerd.io/defaults/snapshotter` label, else overlayfs."""
    try:
        ns = await client.get_namespace(client.namespace)
    except NotFound:
        return DEFAULT_SNAPSHOTTER
    return ns.labels.get(DEFAULT_SNAPSHOTTER_LABEL) or DEFAULT_SNAPSHOTTER


# -- containers --------------------------------------------------------------------------------


def _build_spec_on(mounts: list[Mount], namespace: str, cid: str, config: ImageConfig,
                   opts: SpecOptions) -> dict[str, object]:
    """Mount the new snapshot read-only in a temp dir, build the spec reading its /etc files,
    unmount. (Blocking: run in a thread.)"""
    with mounted_readonly(mounts) as root:
        return build_spec(namespace, cid, config, opts, RootFS(root))


async def create_container(client: Client, req: RunRequest, undo: contextlib.AsyncExitStack,
                           err: TextIO | None = None) -> Container:
    """The container `req` describes, with its snapshot; `undo` gets what removes them again.
    The progress of a pull `req.pull` asks for goes to `err` (default stderr)."""
    container, _ = await _create_container(client, req, undo, err)
    return container


async def _resolve_pulling(client: Client, req: RunRequest, snapshotter: Callable[[], Awaitable[str]],
                           err: TextIO | None) -> ResolvedImage:
    """resolve_image, after a pull when `req.pull` asks for one (the image's platform from the
    store lacking counts as missing, as with Docker). Nothing of the run exists yet, and the
    daemon's pull leaves nothing behind when it fails."""
    if req.pull != autopull.ALWAYS:
        try:
            return await resolve_image(client, req.image, req.platform)
        except NotFound:
            if req.pull != autopull.MISSING:
                raise
    await autopull.pull_for_run(client, req.image, platform=req.platform, snapshotter=await snapshotter(),
                                missing=req.pull == autopull.MISSING, out=err)
    return await resolve_image(client, req.image, req.platform)


async def _create_container(client: Client, req: RunRequest, undo: contextlib.AsyncExitStack,
                            err: TextIO | None = None) -> tuple[Container, list[Mount]]:
    """create_container, with the rootfs mounts Snapshots/Prepare returned: `dock run` hands them
    to Tasks/Create as they are instead of asking Containers/Get and Snapshots/Mounts again."""
    if req.network is not None:
        await check_network(client, req.network)
    autopull.check_policy(req.pull)
    # The namespace's default snapshotter is asked for while the image is resolved (one round trip
    # less on the way to Tasks/Create); the image's errors still come first.
    asked = None if req.snapshotter else asyncio.ensure_future(default_snapshotter(client))

    async def snapshotter_of_run() -> str:
        return req.snapshotter if asked is None else await asked

    try:
        image = await _resolve_pulling(client, req, snapshotter_of_run, err)
    except BaseException:
        if asked is not None:
            asked.cancel()
            with contextlib.suppress(BaseException):
                await asked
        raise
    snapshotter = await snapshotter_of_run()
    config = image.run_config
    if req.network is not None:
        req.network.publish_exposed(config.exposed_ports)
    lease = await client.leases.create(f"dock-run-{time.time_ns()}-{secrets.token_hex(4)}", expires=LEASE_TTL)
    try:
        snaps = client.snapshots.using(snapshotter, lease=lease.id)
        await ensure_unpacked(client, image, snaps)
        mounts = await snaps.prepare(req.id, image.chain_id)  # AlreadyExists: the id is taken; nothing of ours
        undo.push_async_callback(_quietly, client.snapshots.using(snapshotter).remove, req.id)
        opts = req.spec
        if not opts.annotations and req.labels:
            opts.annotations = dict(req.labels)  # ctr passes --label as annotations too
        if req.interactive:  # Docker's OpenStdin: the shim keeps its stdin for attached clients
            opts.annotations = {**opts.annotations, attachsock.OPEN_STDIN: "true"}
        # -v NAME:/path made on first use; -v /path and the image's VOLUMEs: anonymous volumes
        volume_labels = await volumes.attach_named(client, opts, req.id, config.volumes, undo)
        spec = await uninterrupted(asyncio.to_thread(_build_spec_on, mounts, client.namespace, req.id, config, opts))
        # an image's labels never name the container: only --name (or the user's --label) does
        labels = {**{k: v for k, v in config.labels.items() if k != NAME_LABEL}, **req.labels,
                  **({NAME_LABEL: req.id} if req.named else {}),
                  **(req.network.labels() if req.network else {}), **volume_labels,
                  STOP_SIGNAL_LABEL: req.labels.get(STOP_SIGNAL_LABEL) or config.stop_signal or "SIGTERM",
                  **hc.labels_for(hc.merge(req.health, config.healthcheck), hc.image_shell(image.config.config)),
                  **(autoremove.labels() if req.auto_remove else {})}
        container = Container(
            id=req.id, runtime_name=req.runtime, spec=oci_spec_any(spec), labels=labels, image=image.name,
            runtime_options=AnyValue(RUNC_OPTIONS_TYPE_URL, b"") if req.runtime == RUNC_V2 else None,
            snapshotter=snapshotter, snapshot_key=req.id)
        async with in_dock_words(client, req.id, req.id):  # a rename that claimed the name first
            created = await client.containers.create(container)
        undo.push_async_callback(_quietly, client.containers.delete, req.id)
        await volumes.seed_named(client, created)  # Docker's copy-up into empty volumes, before any task
        return created, mounts
    finally:
        await _quietly(client.leases.delete, lease.id)


async def check_network(client: Client, net: NetworkOptions) -> None:
    """Before anything is made: the networks named exist (the default one is made on first use), and
    so does the container whose network is joined (whether its task runs, the daemon checks when
    this one's task is created); so a typo fails at once, in its own words. That container is named
    as every command names one (id, renamed name, unique id prefix: dock/lookup.py) and replaced by
    its id, which the label the daemon reads must hold."""
    for name in net.networks:
        if name != BRIDGE:  # the daemon's default network: made on first use, or none at all
            await client.networks.inspect(name)
    if net.mode == "container":
        net.container = (await resolve(client, net.container)).id


_background: set[asyncio.Task[None]] = set()


def _spawn(fn: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any) -> None:
    """Fire and forget (from signal handlers), keeping a reference until it is done."""
    task = asyncio.get_running_loop().create_task(_quietly(fn, *args, **kwargs))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _quietly(fn: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any) -> None:
    """Cleanup that must not hide the error that made it run."""
    with contextlib.suppress(DockyardError):
        await fn(*args, **kwargs)


async def remove_container(client: Client, cid: str) -> None:
    """ctr's `containers delete`: refuse while a task runs; else remove the container and its snapshot."""
    container = await client.containers.get(cid)
    try:
        task = await client.tasks.get(cid)
    except NotFound:
        pass
    else:
        if task.status not in (Status.STOPPED, Status.CREATED):
            raise FailedPrecondition(f"cannot delete a non stopped container {cid}: task is {task.status.name.lower()}")
        await client.tasks.delete(cid)
    if container.snapshot_key and container.snapshotter:
        with contextlib.suppress(NotFound):
            await client.snapshots.using(container.snapshotter).remove(container.snapshot_key)
    await client.containers.delete(cid)


async def destroy_task(client: Client, cid: str) -> None:
    """Kill the task if it runs, wait for it to stop, delete it (for cleanup paths)."""
    with contextlib.suppress(DockyardError):
        await client.tasks.kill(cid, signal.SIGKILL, all=True)
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline:
        try:
            state = await client.tasks.get(cid)
        except NotFound:
            return
        except DockyardError:
            break
        if state.status in (Status.STOPPED, Status.CREATED):
            break
        await asyncio.sleep(0.05)
    await _quietly(client.tasks.delete, cid)


# -- the foreground task -------------------------------------------------------------------------


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Our terminal in raw mode (keys go to the container as typed), restored afterwards."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.columns, size.lines


class Interrupted(Exception):
    """A signal arrived before there was a task to forward it to."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """Our signals while a run is in progress. Until `forward_to` names a process they cancel
    the work (so cleanup runs) and surface as Interrupted; after, each one is sent to the
    process as Tasks/Kill, as ctr does."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.target: tuple[str, str] | None = None
        self.got: list[int] = []
        self._main: asyncio.Task[object] | None = None

    def forward_to(self, cid: str, exec_id: str = "") -> None:
        self.target = (cid, exec_id)

    def _on_signal(self, signum: int) -> None:
        if self.target is not None:
            cid, exec_id = self.target
            _spawn(self.client.tasks.kill, cid, signum, exec_id=exec_id)
        elif self._main is not None and not self.got:
            self.got.append(signum)
            self._main.cancel()

    @contextlib.asynccontextmanager
    async def installed(self) -> AsyncIterator[Signals]:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        for sig in FORWARDED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield self
        except asyncio.CancelledError:
            if self.got and self._main is not None and self._main.uncancel() == 0:
                raise Interrupted(self.got[0]) from None
            raise
        finally:
            for sig in FORWARDED_SIGNALS:
                loop.remove_signal_handler(sig)


async def attach(client: Client, cid: str, io: ProcessIO, signals: Signals, start: Callable[[], Awaitable[int]],
                 *, exec_id: str = "", tty: bool = False, interactive: bool = False, in_fd: int = 0,
                 out_fd: int = 1, exited: Callable[[], Awaitable[int]] | None = None) -> int:
    """Start the created process (by `start`), copy its stdio, forward our signals to it,
    keep its terminal the size of ours; its exit status once it is gone (from `exited` when
    given, else Tasks/Wait), with its output all copied."""
    loop = asyncio.get_running_loop()

    def on_resize() -> None:
        if (size := terminal_size(out_fd)) is not None:
            _spawn(client.tasks.resize, cid, size[0], size[1], exec_id=exec_id)

    def on_stdin_eof() -> None:
        _spawn(client.tasks.close_io, cid, exec_id=exec_id)

    raw: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if tty and interactive and os.isatty(in_fd):
        raw = raw_terminal(in_fd)
    with raw:
        await start()
        signals.forward_to(cid, exec_id)
        if tty:
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
            on_resize()
        try:
            if interactive:
                io.start_stdin(on_stdin_eof)
            code = await _unless_output_gone(io, exited() if exited is not None else _wait_code(client, cid, exec_id))
            await io.drain()
        finally:
            if tty:
                loop.remove_signal_handler(signal.SIGWINCH)
    return code


async def _wait_code(client: Client, cid: str, exec_id: str) -> int:
    return (await client.tasks.wait(cid, exec_id)).code


async def _unless_output_gone(io: ProcessIO, waiting: Awaitable[int]) -> int:
    """`waiting`'s exit status; BrokenPipeError as soon as our output has no reader any more (the
    caller's undo then ends the process, as SIGPIPE ends a pipeline's writer): a process that
    never exits must not keep the command waiting, copying into nowhere."""
    wait = asyncio.ensure_future(waiting)
    gone: asyncio.Future[Any] = io.output_gone
    try:
        await asyncio.wait({wait, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        wait.cancel()
        raise
    if wait.done():
        return wait.result()
    wait.cancel()
    with contextlib.suppress(asyncio.CancelledError, DockyardError):
        await wait
    raise io.output_gone.result()


async def run(client: Client, req: RunRequest, *, in_fd: int = 0, out_fd: int = 1, err_fd: int = 2) -> int:
    """`dock run`: the container, its task in the foreground (or detached); the exit status.
    Without `rm` the container stays (the task does not, unless a restart policy keeps it for
    the daemon), as with `ctr run`."""
    if req.restarts and not req.detach and not req.attachable:
        raise InvalidArgument("a restart policy in the foreground needs the container's log (label "
                              f"{LABEL_DRIVER}={LOG_DRIVER}) or an open stdin; or run it detached")
    try:
        async with Signals(client).installed() as signals, contextlib.AsyncExitStack() as container_undo, \
                contextlib.AsyncExitStack() as watching:  # a RemovalWatch, when the daemon removes it
            _, rootfs = await _create_container(client, req, container_undo, _text_on(err_fd))
            async with contextlib.AsyncExitStack() as task_undo:
                if req.detach:
                    await client.tasks.create(req.id, rootfs)  # no stdio: the shim gives it /dev/null
                    task_undo.push_async_callback(destroy_task, client, req.id)
                    await client.tasks.start(req.id)
                    task_undo.pop_all()
                    container_undo.pop_all()
                    await asyncio.to_thread(write_all, out_fd, f"{req.id}\n".encode())
                    return 0
                daemon_owned = req.auto_remove or req.restarts  # the daemon acts on the exit
                daemon_removes = req.auto_remove
                if req.through_attach:
                    # Through the daemon's attach (its shim holds the stdio): detaching works, and
                    # `dock attach` can come back later.
                    try:
                        watch = await watching.enter_async_context(RemovalWatch.of(client, req.id)) \
                            if req.auto_remove else None
                        try:
                            await client.tasks.create(req.id, rootfs)  # our shim: the spec says tty
                        except DockyardError as exc:
                            raise _NotAttachable from exc  # runc's shim wants FIFOs for a tty
                        task_undo.push_async_callback(destroy_task, client, req.id)
                        code = await _run_attached(client, req, signals, in_fd, out_fd, err_fd)
                    except _NotAttachable:
                        # Another runtime's shim (containerd's runc shim): no attach socket. The
                        # task never started: it goes, and FIFOs are used as a containerd client
                        # would (a real error then shows again, from that Create). With --rm we remove
                        # it ourselves after all, as ctr run --rm: the label goes before the task is
                        # killed, so the daemon does not take that kill's exit for the end of the run.
                        if req.auto_remove:
                            await _set_labels(client, req.id, {autoremove.LABEL: ""})
                            daemon_removes = False
                        await watching.aclose()
                        await task_undo.aclose()
                        if req.restarts:
                            raise FailedPrecondition(f"runtime {req.runtime}: its shim does not serve attach, so a "
                                                     "restart policy needs the container detached (-d)") from None
                    else:
                        if code is None or daemon_owned:  # detached, or the daemon removes or restarts it
                            task_undo.pop_all()
                            container_undo.pop_all()
                            if code is None:
                                return 0
                            if watch is not None:
                                await watch.removed()
                            return code
                        container_undo.pop_all()
                        await _keep_last_exit(client, req, code)
                        return code
                io = await ProcessIO.open(req.id, stdin=req.interactive, tty=req.spec.tty, out_fd=out_fd,
                                          err_fd=err_fd, in_fd=in_fd)
                task_undo.push_async_callback(io.close)
                # With the daemon's --rm the status comes from the exit event, watched from before
                # the task exists: Tasks/Wait could come after the daemon deleted the task.
                watch = await watching.enter_async_context(RemovalWatch.of(client, req.id)) \
                    if daemon_removes else None
                await client.tasks.create(req.id, rootfs, io.stdin, io.stdout, io.stderr, req.spec.tty)
                ended = False  # the task ran and exited: the daemon's to delete now, not ours

                async def undo_task() -> None:
                    if not ended:
                        await destroy_task(client, req.id)

                task_undo.push_async_callback(undo_task)
                code = await attach(client, req.id, io, signals, lambda: client.tasks.start(req.id),
                                    tty=req.spec.tty, interactive=req.interactive, in_fd=in_fd, out_fd=out_fd,
                                    exited=watch.exited if watch is not None else None)
                if watch is not None:
                    ended = True
                    await watch.removed()
                    container_undo.pop_all()  # removed, with its anonymous volumes, by the daemon
            if not req.rm:
                container_undo.pop_all()
                if watch is None:
                    await _keep_last_exit(client, req, code)
            return code  # with rm (not the daemon's): container_undo removes it and its anonymous volumes now
    except Interrupted as exc:
        return 128 + exc.signum


def _text_on(fd: int) -> TextIO:
    """`fd` as a text stream for a pull's progress lines (for 2, stderr itself: one buffer). Every
    line is flushed as written, and the fd stays open when the stream goes."""
    if fd == 2:
        return sys.stderr
    return open(fd, "w", encoding="utf-8", closefd=False)


async def _keep_last_exit(client: Client, req: RunRequest, code: int) -> None:
    """The container stays and its task goes: what `ps -a` and inspect show of the exit."""
    if not req.rm:
        with contextlib.suppress(DockyardError):  # the container went meanwhile: nothing to keep
            await _set_labels(client, req.id, {LAST_EXIT_LABEL: last_exit_label(code, datetime.now(UTC))})


async def _set_labels(client: Client, cid: str, labels: dict[str, str]) -> None:
    """Set (with "": remove) some of a container's labels."""
    patch = Container(id=cid, runtime_name="", spec=None, labels=labels)
    await client.containers.update(patch, [f"labels.{k}" for k in labels])


class RemovalWatch:
    """The daemon's events about one `--rm` container, subscribed to before its task starts (the
    daemon says when the subscription is in place), so none can pass unseen: its init's exit
    status (/tasks/exit, which the daemon publishes before it removes the container: Tasks/Wait
    could come after the task is gone) and its removal (/containers/delete, which the daemon
    publishes last, after the anonymous volumes went), which the client waits for, as Docker's
    waits for `condition=removed`, so the next command no longer sees any of it."""

    def __init__(self, client: Client, cid: str, stream: AsyncIterator[Envelope]) -> None:
        self.client = client
        self.cid = cid
        self._stream = stream

    @classmethod
    @contextlib.asynccontextmanager
    async def of(cls, client: Client, cid: str) -> AsyncIterator[RemovalWatch]:
        ns = json.dumps(client.namespace)
        async with client.events.subscribed(f'topic=="{EXIT_TOPIC}",namespace=={ns}',
                                            f'topic=="{DELETE_TOPIC}",namespace=={ns}') as stream:
            yield cls(client, cid, stream)

    async def _next(self, topic: str) -> dict[str, Any]:
        async for env in self._stream:
            found = env.event
            if env.namespace != self.client.namespace or env.topic != topic:
                continue
            if topic == DELETE_TOPIC and found.get("id") == self.cid:
                return found
            if topic == EXIT_TOPIC and found.get("container_id") == self.cid \
                    and found.get("id", "") in ("", self.cid):  # the init's exit, not an exec's
                return found
        raise Unavailable(f"container {self.cid}: the daemon's events ended before its task exited")

    async def exited(self) -> int:
        """The init's exit status, once it has exited."""
        return int((await self._next(EXIT_TOPIC)).get("exit_status", 0))

    async def removed(self, timeout: float = REMOVE_WAIT) -> None:
        """Until the daemon has removed the container whose task exited. A daemon that has not
        by `timeout` (one that does not know the label), or whose events fail, leaves it to us."""
        try:
            await asyncio.wait_for(self._next(DELETE_TOPIC), timeout)
        except (TimeoutError, DockyardError):
            await _quietly(remove_container, self.client, self.cid)
            await _quietly(volumes.remove_anonymous, self.client, self.cid)


async def _run_attached(client: Client, req: RunRequest, signals: Signals, in_fd: int, out_fd: int,
                        err_fd: int) -> int | None:
    """Attach to the created task, start it, copy its stdio until it exits (its status) or we
    detach (None)."""
    from dock.attach import Attached, AttachOptions
    from dock.attach import attach as attach_stdio

    started = False

    async def start(_: Attached) -> None:
        nonlocal started
        started = True
        await client.tasks.start(req.id)
        signals.forward_to(req.id)

    opts = AttachOptions(stdin=req.interactive, detach_keys=req.detach_keys, close_stdin=True, in_fd=in_fd,
                         out_fd=out_fd, err_fd=err_fd)
    try:
        return await attach_stdio(client, req.id, opts, start, raw_terminal, terminal_size)
    except FailedPrecondition:
        if started:
            raise
        raise _NotAttachable from None


class _NotAttachable(Exception):
    """The task's shim does not serve attach (it is not ours)."""


async def container_mounts(client: Client, cid: str) -> list[Mount]:
    """The rootfs mounts of a container's snapshot (what Tasks/Create takes)."""
    return await container_mounts_of(client, await client.containers.get(cid))
