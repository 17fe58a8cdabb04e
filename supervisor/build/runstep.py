"""A RUN step: one command run as a container task through our shim, on the step's snapshot.

    runner = StepRunner(tasks, tmp_root)
    code = await runner.run(ns, RunSpec(argv, env, user, workdir, network), rootfs_mounts, on_output)

Order, and why:
1. The rootfs (the step's active snapshot) is mounted here first, briefly: WORKDIR's directory
   is made (owned by the USER, as buildkit makes it), USER is resolved against the image's
   /etc/passwd and /etc/group, and every mount destination of the spec that the image lacks is
   noted. Unmounted again before the shim mounts it: one overlay upper is never mounted twice.
2. The spec: containerd's default Linux spec, as `dock run` starts from it
   (dockyard_common/ocispec.py), without /run's tmpfs (buildkit's
   WithoutRunMount: what a RUN writes under /run belongs to the layer), with Docker's default
   capabilities and seccomp profile (dockyard_common), the stage's env, user (its primary group
   and /etc/group memberships as supplementary groups, as containerd and buildah set them) and
   working directory. Network: "none" a new namespace (lo only), "host" the host's (and its resolv.conf
   and hosts, read-only), "default" the daemon's default network through the container labels
   the network wiring reads (dockyard_common/netlabels.py; a daemon run with
   --default-network none gives lo only).
3. stdout and stderr are FIFOs in a private directory, opened here O_RDWR|O_NONBLOCK (no EOF,
   no wait for the shim); their bytes go to `on_output` as they come. The shim reports the exit
   only once it has copied all output (shim/service.py), so after Wait whatever is left in the
   FIFOs is read and the pumps end.
4. Whatever happens (an error, a cancelled build), the task is killed, waited for and deleted
   (bundle and cgroup go with it), and the FIFO directory is removed: nothing of the step
   outlives it.
5. Mount points the spec made in the rootfs that the image did not have (/proc, /dev, /sys,
   /etc/resolv.conf, the step's own `mounts`, ...) are removed again if they are still empty, so they do not end up in
   the layer (buildkit's mount-stub cleaner does the same). Walked with O_NOFOLLOW: the command
   may have left symlinks there.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dockyard_common import ocispec, seccomp
from dockyard_common.aio import uninterrupted
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound
from dockyard_common.mounts import mounted
from dockyard_common.netlabels import BRIDGE, NETWORKS
from dockyard_common.types import Mount
from supervisor.build.copy import Owner, additional_gids, make_workdir, resolve_user
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.types import CreateOptions

log = logging.getLogger("dockyard.build")

RUNTIME = "io.containerd.runc.v2"
HOSTNAME = "buildkitsandbox"  # what buildkit names its RUN containers' host; scripts may look
CHUNK = 32 * 1024
KILL_WAIT = 10.0
# containerd's default mounts without /run's tmpfs (see the module docstring)
_RUN_MOUNTS = [m for m in ocispec.DEFAULT_MOUNTS if m["destination"] != "/run"]
# Files the network wiring or --network host bind into the rootfs.
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts")

Output = Callable[[str, bytes], Awaitable[None]]  # (stream, bytes)
T = TypeVar("T")


@dataclass(frozen=True)
class RunSpec:
    argv: list[str]
    env: list[str]
    user: str  # the stage's USER ("" root)
    workdir: str
    network: str  # "default" | "none" | "host"
    mounts: tuple[dict[str, Any], ...] = ()  # OCI mounts for this step only (heredoc scripts, RUN --mount)


def build_spec(namespace: str, cid: str, run: RunSpec, uid: int, gid: int,
               gids: Sequence[int] = ()) -> dict[str, Any]:
    spec = ocispec.default_spec(namespace, cid)
    spec["mounts"] = copy.deepcopy(_RUN_MOUNTS)
    ocispec.with_default_unix_devices(spec)
    spec["process"].update({"args": list(run.argv), "env": list(run.env), "cwd": run.workdir or "/",
                            "user": {"uid": uid, "gid": gid, "additionalGids": list(gids) or [gid]}})
    spec["hostname"] = HOSTNAME
    spec["mounts"] += [copy.deepcopy(m) for m in run.mounts]
    if run.network == "host":
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        spec["mounts"] += [{"destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]}
                           for p in _NETWORK_FILES]
    spec["linux"]["seccomp"] = seccomp.default_profile().resolve(list(ocispec.DEFAULT_CAPABILITIES))
    return spec


def network_labels(mode: str) -> dict[str, str]:
    """The container labels that ask the wiring for the daemon's default network."""
    return {NETWORKS: json.dumps([BRIDGE])} if mode == "default" else {}


class StepRunner:
    def __init__(self, tasks: TaskManager, tmp_root: Path, runtime: str = RUNTIME) -> None:
        self.tasks = tasks
        self.tmp_root = tmp_root
        self.runtime = runtime

    async def run(self, ns: str, run: RunSpec, rootfs: Sequence[Mount], on_output: Output) -> int:
        """Run the command on `rootfs`; its exit status. See the module docstring."""
        cid = f"build-{secrets.token_hex(8)}"
        owner, gids, stubs = await uninterrupted(asyncio.to_thread(self._prepare_rootfs, list(rootfs), run))
        spec = build_spec(ns, cid, run, owner.uid, owner.gid, gids)
        try:
            return await self._run_task(ns, cid, spec, run, list(rootfs), on_output)
        finally:
            if stubs:
                await uninterrupted(asyncio.to_thread(self._remove_stubs, list(rootfs), stubs))

    def _prepare_rootfs(self, rootfs: list[Mount], run: RunSpec
                        ) -> tuple[Owner, list[int], list[tuple[tuple[str, ...], int]]]:
        with mounted(rootfs, self.tmp_root) as root:
            owner = resolve_user(run.user, root) if run.user else None
            make_workdir(root, run.workdir or "/", owner)
            gids = additional_gids(owner or Owner(0, 0), root)
            destinations = ([m["destination"] for m in _RUN_MOUNTS] + list(_NETWORK_FILES)
                            + [m["destination"] for m in run.mounts])
            stubs = [(parts, depth) for parts in (_parts(d) for d in destinations)
                     if (depth := _first_missing(root, parts)) is not None]
        return owner or Owner(0, 0), gids, stubs

    def _remove_stubs(self, rootfs: list[Mount], stubs: list[tuple[tuple[str, ...], int]]) -> None:
        try:
            with mounted(rootfs, self.tmp_root) as root:
                for parts, depth in sorted(stubs, key=lambda s: len(s[0]), reverse=True):
                    _remove_empty(root, parts, depth)
        except (OSError, DockyardError) as exc:  # the layer then shows an empty mount point
            log.warning("build: could not remove mount points from the rootfs: %s", exc)

    async def _run_task(self, ns: str, cid: str, spec: dict[str, Any], run: RunSpec, rootfs: list[Mount],
                        on_output: Output) -> int:
        self.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fifo_dir = Path(tempfile.mkdtemp(prefix="build-io-", dir=self.tmp_root))
        fds: list[int] = []
        created = False
        try:
            paths = {}
            for stream in ("stdout", "stderr"):
                path = fifo_dir / stream
                os.mkfifo(path, 0o600)
                fds.append(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
                paths[stream] = str(path)
            pumps = _Pumps(fds, on_output)
            opts = CreateOptions(rootfs=rootfs, stdout=paths["stdout"], stderr=paths["stderr"])
            task = await self.tasks.create(ns, cid, self.runtime, json.dumps(spec).encode(), opts,
                                           labels=network_labels(run.network))
            created = True
            try:
                await task.start()
                exit_ = await task.wait()
            finally:
                await pumps.finish()
            return exit_.exit_status
        finally:
            if created:
                await uninterrupted(self._end(ns, cid))
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(fifo_dir, ignore_errors=True)

    async def _end(self, ns: str, cid: str) -> None:
        """Kill (if still running), wait and delete the task: the bundle and cgroup go with it."""
        try:
            task = self.tasks.get(ns, cid)
        except NotFound:
            return
        try:
            with contextlib.suppress(DockyardError):
                await task.kill(signal.SIGKILL, all=True)
            with contextlib.suppress(DockyardError, TimeoutError):
                await asyncio.wait_for(task.wait(), KILL_WAIT)
            await self.tasks.delete(ns, cid)
        except DockyardError as exc:
            log.warning("build: could not delete RUN task %s/%s: %s", ns, cid, exc)


class _Pumps:
    """Copy FIFOs to `on_output` as their bytes come, one event at a time (in order), until
    `finish`: then what is left is read and the copying ends."""

    def __init__(self, fds: list[int], on_output: Output) -> None:
        self.on_output = on_output
        self.streams = dict(zip(fds, ("stdout", "stderr"), strict=True))
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.lock = asyncio.Lock()
        self.jobs = [asyncio.ensure_future(self._pump(fd)) for fd in fds]

    async def _pump(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                data = b""
            if data:
                async with self.lock:
                    await self.on_output(self.streams[fd], data)
                continue
            if self.stop.is_set():
                return
            readable: asyncio.Future[Any] = self.loop.create_future()
            self.loop.add_reader(fd, _wake, readable)
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
            try:
                await asyncio.wait([readable, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.loop.remove_reader(fd)
                readable.cancel()
                stopping.cancel()

    async def finish(self) -> None:
        self.stop.set()
        try:
            await asyncio.gather(*self.jobs)
        finally:
            for job in self.jobs:
                job.cancel()


def _wake(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p and p != ".")


def _first_missing(root: Path, parts: tuple[str, ...]) -> int | None:
    """How many components of `parts` exist before the first missing one (no symlinks
    followed); None when all exist, or something that is not a directory is in the way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return i
            if i == len(parts) - 1 or not stat.S_ISDIR(st.st_mode):
                return None
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return None
    finally:
        os.close(fd)


def _remove_empty(root: Path, parts: tuple[str, ...], keep: int) -> None:
    """Remove `parts` if it is an empty directory or an empty regular file, then its parents
    while they are empty directories, down to the first `keep` components (which the image had)."""
    for depth in range(len(parts), keep, -1):
        prefix = parts[:depth]
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name in prefix[:-1]:
                    nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                st = os.stat(prefix[-1], dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(prefix[-1], dir_fd=fd)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(prefix[-1], dir_fd=fd)
                else:
                    return
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.ELOOP):
                if exc.errno == errno.ENOENT:
                    continue  # removed already (a deeper stub's parent): look further up
                return
            raise


def check_network(mode: str) -> str:
    if mode not in ("default", "none", "host"):
        raise InvalidArgument(f"build: network {mode!r}: want default, none or host")
    return mode
