"""CRI containers (CreateContainer, StartContainer, StopContainer, RemoveContainer,
ContainerStatus, ListContainers, ExecSync): a container of the CRI namespace inside a pod
sandbox, run by the normal runtime (a shim per container) in the pod's namespaces
(supervisor/cri/container_spec.py says how the config maps).

    ctrs = CriContainers(deps, pods, exec_dir)
    cid = await ctrs.create(pod_id, config)      # record + snapshot: CREATED
    await ctrs.start(cid)                        # the task is made and started: RUNNING
    out = await ctrs.exec_sync(cid, ["ls"], 10)  # ExecResult(stdout, stderr, exit_code)
    await ctrs.stop(cid, timeout=10)             # stop signal, SIGKILL after 10 s: EXITED
    await ctrs.remove(cid)                       # the record, snapshot and task go

As under containerd, Create makes only the record and the snapshot; Start makes the task. Once
the init has exited and the container was stopped, its exit (code, time, reason) is kept in the
record and the task (and its shim) deleted; a container whose init exits by itself keeps its task
until StopContainer, RemoveContainer or its pod's stop. Stop and Remove of a container that is not
there succeed, as the CRI asks; ids may be given as unique prefixes (as crictl users type them).
The log (`<pod log_directory>/<log_path>`, CRI format) is written by the shim (containerlog.py).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dockyard_api.dockyard.shim.v1 import stats_pb2 as stats_pb
from dockyard_common import cgroups, containerlog
from dockyard_common.aio import uninterrupted
from dockyard_common.cgroups import normalize_path
from dockyard_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from dockyard_common.mounts import mounted
from dockyard_common.netlabels import CONTAINER as JOIN_NETWORK
from dockyard_common.types import AnyValue, Container, Status
from supervisor.build.copy import additional_gids, make_workdir, resolve_user
from supervisor.cri.container_spec import PodContext, User, container_spec, container_spec_resources, host_device
from supervisor.cri.container_types import (
    ContainerConfig,
    ContainerState,
    ContainerUsage,
    ContainerUser,
    CriContainer,
    Resources,
    SupplementalGroupsPolicy,
)
from supervisor.cri.image_volumes import ImageVolumes
from supervisor.cri.lookup import by_id_prefix
from supervisor.cri.runtime import recursive_read_only
from supervisor.cri.sandbox import KIND_LABEL, SPEC_TYPE_URL, PodSandboxes, SandboxDeps, unpacked_image
from supervisor.cri.sandbox_types import NamespaceMode, Sandbox, SandboxState
from supervisor.images.inspect import Inspection
from supervisor.images.leasing import temporary_lease
from supervisor.runtime.stats import UNLIMITED, metrics_into_sample
from supervisor.runtime.task import Task
from supervisor.runtime.types import CreateOptions, ExecOptions, TaskState

log = logging.getLogger("dockyard.cri")

KIND_CONTAINER = "container"
SANDBOX_LABEL = "io.cri-containerd.sandbox-id"  # for `ctr containers ls` filters
METADATA_EXTENSION = "io.cri-containerd.container.metadata"
METADATA_TYPE_URL = "dockyard.cri/container-metadata/v1"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
KILL_WAIT = 10.0  # seconds for a SIGKILLed init to be reported gone
EXEC_OUTPUT_CAP = 16 << 20  # bytes of each stream ExecSync keeps (containerd's maxExecSyncSize)
START_ERROR_CODE = 128  # containerd's exit code for a container that could not start


@dataclass
class _Meta:
    """What the record keeps besides the spec: the config and what happened to the container."""

    config: dict[str, Any]
    pod_id: str
    image: str
    image_id: str
    log_path: str = ""
    started: bool = False
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    stop_signal: int = signal.SIGTERM  # the image's StopSignal, what StopContainer sends first
    user: dict[str, Any] | None = None  # the first process' uid, gid, supplemental_groups (ContainerStatus)


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass
class _Found:
    record: Container
    meta: _Meta
    config: ContainerConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = ContainerConfig.from_json(self.meta.config)


class CriContainers:
    def __init__(self, deps: SandboxDeps, pods: PodSandboxes, exec_dir: Path, volumes_dir: Path | None = None) -> None:
        self.d = deps
        self.pods = pods
        self.namespace = pods.namespace
        self.snapshotter = pods.settings.snapshotter
        self.exec_dir = exec_dir  # FIFOs of ExecSync
        self.volumes = ImageVolumes(deps, self.namespace, self.snapshotter,
                                    volumes_dir or exec_dir.parent / "image-volumes")
        self._reserve = asyncio.Lock()
        self._pending: set[tuple[str, str, int]] = set()  # names being created: (pod, name, attempt)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        pods.members = self

    def _lock(self, cid: str) -> asyncio.Lock:
        lock = self._locks.get(cid)
        if lock is None:
            lock = self._locks[cid] = asyncio.Lock()
        return lock

    # -- create --------------------------------------------------------------------------

    async def create(self, pod_id: str, config: ContainerConfig) -> str:
        """Make the container (CREATED) in the running pod `pod_id`; its id. Nothing is left if it fails."""
        pod = await self.pods.status(pod_id)
        if pod.state != SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready: cannot create containers in it")
        found = await self.d.images.find(config.image)
        if found is None:
            raise NotFound(f"image {config.image!r} (pull it first)")
        image_ref, image = await unpacked_image(self.d, self.namespace, self.snapshotter, config.image, found)
        if not image.layers:
            raise InvalidArgument(f"image {image_ref}: it has no layers")
        key = (pod.id, config.metadata.name, config.metadata.attempt)
        async with self._reserve:
            for other in await self._all():
                if (other.meta.pod_id, other.config.metadata.name, other.config.metadata.attempt) == key:
                    raise AlreadyExists(f"container name {config.metadata.name!r} (attempt "
                                        f"{config.metadata.attempt}) is reserved for {other.record.id}")
            if key in self._pending:
                raise AlreadyExists(f"container name {config.metadata.name!r} is being created")
            self._pending.add(key)
        cid = secrets.token_hex(32)
        try:
            async with temporary_lease(self.d.leases, self.namespace, self.d.on_lease_release) as lease:
                # Leased until the record refers to it: the collector may run in between.
                with self.volumes.creating(cid):
                    await self._create(pod, config, cid, image_ref, image, lease)
        finally:
            self._pending.discard(key)
        log.info("container %s (%s in pod %s) created", cid, config.metadata.name, pod.id)
        return cid

    async def _create(self, pod: Sandbox, config: ContainerConfig, cid: str, image_ref: str, image: Inspection,
                      lease: str) -> None:
        mounts = await self.d.snapshots.prepare(self.namespace, self.snapshotter, cid, image.layers[-1].chain_id,
                                                lease=lease)
        try:
            runtime_name = await self._runtime_of(pod)
            _check_recursive_read_only(config, runtime_name, self.pods.settings.runtimes)
            made = await self.volumes.make(cid, config, lease)
            workdir = config.working_dir or str(image.config.config.get("WorkingDir") or "")
            merge = config.security.supplemental_groups_policy == SupplementalGroupsPolicy.MERGE
            user = await asyncio.to_thread(_prepare_rootfs, mounts, self.exec_dir,
                                           _user_text(config, image.config.config), workdir, merge)
            user = replace(user, additional_gids=user.additional_gids + config.security.supplemental_groups)
            target_pid = await self._target_pid(config)
            files = self.pods.files.paths(pod.id, pod.config.namespaces.ipc != NamespaceMode.NODE) \
                if self.pods.files is not None else None
            devices = tuple([await asyncio.to_thread(host_device, d.container_path, d.host_path, d.permissions)
                              for d in config.devices])
            spec = container_spec(made.spec_config, PodContext(pod.id, pod.config, pod.pid, files), cid,
                                  self.namespace, image_ref, image.config.config, user, target_pid, devices=devices)
            await asyncio.to_thread(_make_host_paths, config)
            log_path = os.path.join(pod.config.log_directory, config.log_path) \
                if config.log_path and pod.config.log_directory else ""
            meta = _Meta(made.config.to_json(), pod.id, image_ref, image.config_descriptor.digest, log_path,
                         stop_signal=_signal_of(str(image.config.config.get("StopSignal") or "")),
                         user=_user_of(spec))
            record = Container(id=cid, runtime_name=runtime_name,
                               spec=AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode()),
                               labels={KIND_LABEL: KIND_CONTAINER, SANDBOX_LABEL: pod.id, **made.labels},
                               image=image_ref,
                               snapshotter=self.snapshotter, snapshot_key=cid,
                               extensions={METADATA_EXTENSION: _meta_value(meta)})
            await self.d.containers.create(self.namespace, record)
        except BaseException:
            await uninterrupted(self.volumes.remove(cid, config))
            with contextlib.suppress(NotFound):
                await uninterrupted(self.d.snapshots.remove(self.namespace, self.snapshotter, cid))
            raise

    async def _runtime_of(self, pod: Sandbox) -> str:
        return (await self.d.containers.get(self.namespace, pod.id)).runtime_name

    async def _target_pid(self, config: ContainerConfig) -> int:
        ns = config.security.namespaces
        if ns.pid != NamespaceMode.TARGET:
            return 0
        target = await self._find(ns.target_id)
        try:
            state = await self.d.tasks.get(self.namespace, target.record.id).state()
        except NotFound:
            return 0
        return state.pid if state.status == Status.RUNNING else 0

    # -- start ---------------------------------------------------------------------------

    async def start(self, cid: str) -> None:
        found = await self._find(cid)
        cid = found.record.id
        async with self._lock(cid):
            found = await self._find(cid)
            state = await self._task_state(cid)
            if found.meta.started or state is not None:
                raise FailedPrecondition(f"container {cid} is {self._view(found, state).state.name}, not CREATED")
            pod = await self.pods.status(found.meta.pod_id)
            if pod.state != SandboxState.READY:
                raise FailedPrecondition(f"pod sandbox {pod.id} of container {cid} is not ready")
            labels: dict[str, str] = {}
            if pod.config.namespaces.network != NamespaceMode.NODE:
                labels[JOIN_NETWORK] = pod.id  # the wiring joins the pod's namespace, resolv.conf, hosts
            if found.meta.log_path:
                labels[containerlog.LABEL_DRIVER] = containerlog.DRIVER
                labels[containerlog.LABEL_PATH] = found.meta.log_path
            assert found.record.spec is not None
            try:
                await self.volumes.ensure(cid, found.config)
                mounts = await self.d.snapshots.mounts(self.namespace, self.snapshotter, cid)
                task = await self.d.tasks.create(self.namespace, cid, found.record.runtime_name,
                                                 found.record.spec.value, CreateOptions(rootfs=mounts),
                                                 labels=labels)
                try:
                    await task.start()
                except BaseException:
                    with contextlib.suppress(DockyardError):
                        await uninterrupted(self.d.tasks.delete(self.namespace, cid))
                    raise
            except DockyardError as exc:
                now = time.time_ns()
                found.meta = replace(found.meta, started=True, started_at_ns=now, finished_at_ns=now,
                                     exit_code=START_ERROR_CODE, reason="StartError", message=exc.message)
                await self._save(found)
                raise
            found.meta = replace(found.meta, started=True, started_at_ns=time.time_ns())
            await self._save(found)
        log.info("container %s started", cid)

    # -- stop and remove -----------------------------------------------------------------

    async def stop(self, cid: str, timeout: float) -> None:
        """The image's stop signal (SIGTERM unless it names one), then SIGKILL after `timeout`
        seconds (at once if 0); a missing container is no error."""
        try:
            found = await self._find(cid)
        except NotFound:
            return
        async with self._lock(found.record.id):
            await self._stop(found.record.id, timeout)

    async def _stop(self, cid: str, timeout: float) -> None:
        try:
            task = self.d.tasks.get(self.namespace, cid)
        except NotFound:
            return
        state = await task.state()
        if state.status != Status.STOPPED:
            if timeout > 0:
                stop_signal = (await self._find(cid)).meta.stop_signal
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await task.kill(stop_signal)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task.wait(), timeout)
            if (await task.state()).status != Status.STOPPED:
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await task.kill(signal.SIGKILL, all=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task.wait(), KILL_WAIT)
            state = await task.state()
            if state.status != Status.STOPPED:
                raise DeadlineExceeded(f"container {cid}: its process did not end after SIGKILL")
        # The exit goes into the record; the task and its shim go.
        found = await self._find(cid)
        oom = await asyncio.to_thread(_oom_killed, found.record)
        found.meta = replace(found.meta, started=True, finished_at_ns=state.exited_at_ns or time.time_ns(),
                             exit_code=state.exit_status, reason=_reason(state.exit_status, oom))
        await self._save(found)
        with contextlib.suppress(NotFound):
            await self.d.tasks.delete(self.namespace, cid)

    async def remove(self, cid: str) -> None:
        """Kill it if it runs, then remove its task, snapshot and record; a missing container is no error."""
        try:
            found = await self._find(cid)
        except NotFound:
            return
        async with self._lock(found.record.id):
            await self._remove(found.record.id)
        log.info("container %s removed", found.record.id)

    async def _remove(self, cid: str) -> None:
        await self._stop(cid, 0)
        try:
            config: ContainerConfig | None = (await self._find(cid)).config
        except NotFound:
            config = None  # a record we cannot read: whatever is found of its volumes goes
        await self.volumes.remove(cid, config)
        with contextlib.suppress(NotFound):
            await self.d.snapshots.remove(self.namespace, self.snapshotter, cid)
        with contextlib.suppress(NotFound):
            await self.d.containers.delete(self.namespace, cid)
        await self.d.on_deleted(self.namespace, cid)

    async def sweep_image_volumes(self) -> None:
        """At daemon start: image volumes of containers whose record is gone are removed."""
        async def live() -> set[str]:
            return {c.id for c in await self.d.containers.list(self.namespace)}
        await self.volumes.sweep(live)

    async def on_exit(self, namespace: str, cid: str) -> None:
        """A task's init exited (the runtime's exit monitor tells every one): for a container of
        ours the exit goes into its record and the task, with its shim, goes, as containerd's CRI
        does at TaskExit. Kubelet keeps exited containers for a while; their shims need not live."""
        if namespace != self.namespace:
            return
        try:
            record = await self.d.containers.get(namespace, cid)
        except NotFound:
            return
        if record.labels.get(KIND_LABEL) != KIND_CONTAINER:
            return
        async with self._lock(cid):
            state = await self._task_state(cid)
            if state is not None and state.status == Status.STOPPED:
                await self._stop(cid, 0)  # nothing to kill: records the exit, deletes the task

    async def stop_pod(self, pod_id: str) -> None:
        """StopPodSandbox: every container of the pod is killed (containerd's timeout 0)."""
        for found in await self._all(pod_id):
            async with self._lock(found.record.id):
                await self._stop(found.record.id, 0)

    async def remove_pod(self, pod_id: str) -> None:
        for found in await self._all(pod_id):
            async with self._lock(found.record.id):
                await self._remove(found.record.id)

    # -- status and list -----------------------------------------------------------------

    async def status(self, cid: str) -> CriContainer:
        found = await self._find(cid)
        state = await self._task_state(found.record.id)
        view = self._view(found, state)
        if state is not None and state.status == Status.STOPPED and await asyncio.to_thread(_oom_killed, found.record):
            view.reason = _reason(view.exit_code, oom_killed=True)
        return view

    async def info(self, container: CriContainer) -> dict[str, Any]:
        """containerd's verbose status info: what the container is made of."""
        record = await self.d.containers.get(self.namespace, container.id)
        spec = json.loads(record.spec.value) if record.spec else {}
        return {"sandboxID": container.pod_id, "pid": container.pid, "image": container.image,
                "snapshotKey": record.snapshot_key, "snapshotter": record.snapshotter,
                "runtimeType": record.runtime_name, "config": container.config.to_json(), "runtimeSpec": spec}

    async def list(self, cid: str = "", state: ContainerState | None = None, pod_id: str = "",
                   selector: Mapping[str, str] | None = None) -> builtins.list[CriContainer]:
        """The containers matching every filter given: an id (or prefix), a state, a pod (or prefix), labels."""
        records = [f for f in await self._all() if f.record.id.startswith(cid) and f.meta.pod_id.startswith(pod_id)]
        states = {s.id: s for s in await self.d.tasks.states(self.namespace)} if records else {}
        out = []
        for found in records:
            view = self._view(found, states.get(found.record.id))
            if state is not None and view.state != state:
                continue
            if selector and any(view.config.labels.get(k) != v for k, v in selector.items()):
                continue
            out.append(view)
        return sorted(out, key=lambda c: c.created_at_ns)

    # -- stats and resources -------------------------------------------------------------

    async def stats(self, cid: str) -> ContainerUsage:
        found = await self._find(cid)
        return await self.usage(self._view(found, await self._task_state(found.record.id)))

    async def list_stats(self, cid: str = "", pod_id: str = "", selector: Mapping[str, str] | None = None
                         ) -> builtins.list[ContainerUsage]:
        """The usage of every container that runs (a task's cgroup to read), filtered as `list`."""
        return [await self.usage(c) for c in await self.list(cid, None, pod_id, selector)
                if c.state == ContainerState.RUNNING]

    async def usage(self, c: CriContainer) -> ContainerUsage:
        """What the container uses now (its task's cgroup, its writable layer)."""
        now = time.time_ns()
        fields: dict[str, Any] = {}
        sample = await task_sample(self.d, self.namespace, c.id)
        if sample is not None:
            mem = sample.memory
            working_set = max(0, mem.usage - mem.inactive_file)
            fields.update(cpu_usage_ns=sample.cpu.usage_total_ns, memory_working_set=working_set,
                          memory_usage=mem.usage, memory_rss=mem.rss, process_count=sample.pids.current)
            if 0 < mem.limit < UNLIMITED:
                fields["memory_available"] = max(0, mem.limit - working_set)
        with contextlib.suppress(NotFound):
            usage = await self.d.snapshots.usage(self.namespace, self.snapshotter, c.id)
            fields.update(writable_bytes=usage.size, writable_inodes=usage.inodes)
        return ContainerUsage(c, now, fs_mountpoint=str(self.d.images.snapshotter_root), **fields)

    async def update_resources(self, cid: str, resources: Resources) -> None:
        """UpdateContainerResources: the running task's cgroup, and the stored spec for a later start."""
        found = await self._find(cid)
        cid = found.record.id
        async with self._lock(cid):
            found = await self._find(cid)
            assert found.record.spec is not None
            spec = json.loads(found.record.spec.value)
            config = replace(found.config, resources=resources)
            updated = container_spec_resources(spec, config)
            try:
                task = self.d.tasks.get(self.namespace, cid)
            except NotFound:
                task = None
            if task is not None and (await task.state()).status != Status.STOPPED:
                await task.update(AnyValue(RESOURCES_TYPE_URL, json.dumps(updated).encode()), {})
            found.record.spec = AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode())
            found.meta = replace(found.meta, config=config.to_json())
            found.record.extensions[METADATA_EXTENSION] = _meta_value(found.meta)
            found.record = await self.d.containers.update(self.namespace, found.record,
                                                          ["spec", f"extensions.{METADATA_EXTENSION}"])

    # -- logs ----------------------------------------------------------------------------

    async def reopen_log(self, cid: str) -> None:
        """ReopenContainerLog: kubelet renamed the log file; the shim that writes it opens the
        path again (a new file). FailedPrecondition unless the container runs, as containerd."""
        found = await self._find(cid)
        cid = found.record.id
        state = await self._task_state(cid)
        if state is None or state.status not in (Status.RUNNING, Status.PAUSED):
            raise FailedPrecondition(f"container {cid} is not running: its log cannot be reopened")
        if not found.meta.log_path:
            raise FailedPrecondition(f"container {cid} has no log path: there is no log to reopen")
        try:
            await self.d.tasks.get(self.namespace, cid).reopen_log()
        except Unimplemented:
            raise FailedPrecondition(f"container {cid}: the shim of runtime {found.record.runtime_name!r} "
                                     "cannot reopen container logs") from None

    # -- exec ----------------------------------------------------------------------------

    async def exec_target(self, cid: str) -> tuple[str, Task, dict[str, Any]]:
        """For an exec in running container `cid`: its full id, task and init's process spec (the
        exec's starting point: user, env, cwd, capabilities). FailedPrecondition if it does not run."""
        found = await self._find(cid)
        cid = found.record.id
        try:
            task = self.d.tasks.get(self.namespace, cid)
            running = (await task.state()).status == Status.RUNNING
        except NotFound:
            running = False
        if not running:
            raise FailedPrecondition(f"container {cid} is not running")
        assert found.record.spec is not None
        return cid, task, dict(json.loads(found.record.spec.value)["process"])

    async def config_of(self, cid: str) -> tuple[str, ContainerConfig]:
        """Container `cid`'s full id and CRI config (NotFound, InvalidArgument)."""
        found = await self._find(cid)
        return found.record.id, found.config

    async def exec_sync(self, cid: str, cmd: builtins.list[str], timeout: float) -> ExecResult:
        """Run `cmd` in the running container and collect its output; DeadlineExceeded (the
        process killed) when it runs longer than `timeout` seconds (0: no limit)."""
        if not cmd:
            raise InvalidArgument("exec sync: cmd must not be empty")
        cid, task, process = await self.exec_target(cid)
        process.update(args=list(cmd), terminal=False)
        exec_id = f"exec-sync-{secrets.token_hex(6)}"
        await asyncio.to_thread(self.exec_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        fifo_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="exec-", dir=self.exec_dir))
        collector: _Collector | None = None
        try:
            collector = _Collector(fifo_dir)
            await task.exec(exec_id, ExecOptions(spec=AnyValue(PROCESS_TYPE_URL, json.dumps(process).encode()),
                                                 stdout=str(fifo_dir / "stdout"), stderr=str(fifo_dir / "stderr")))
            try:
                await task.start(exec_id)
                try:
                    exit_ = await asyncio.wait_for(task.wait(exec_id), timeout if timeout > 0 else None)
                except TimeoutError:
                    with contextlib.suppress(DockyardError):
                        await task.kill(signal.SIGKILL, exec_id=exec_id)
                    with contextlib.suppress(DockyardError, TimeoutError):
                        await asyncio.wait_for(task.wait(exec_id), KILL_WAIT)
                    raise DeadlineExceeded(f"exec sync in container {cid}: command {cmd[0]!r} timed out after "
                                           f"{timeout:g}s and was killed") from None
            finally:
                with contextlib.suppress(DockyardError):
                    await uninterrupted(task.delete(exec_id))
            stdout, stderr = collector.finish()
            return ExecResult(stdout, stderr, exit_.exit_status)
        finally:
            if collector is not None:
                collector.close()
            await asyncio.to_thread(shutil.rmtree, fifo_dir, True)

    # -- internals -----------------------------------------------------------------------

    async def _task_state(self, cid: str) -> TaskState | None:
        try:
            return await self.d.tasks.get(self.namespace, cid).state()
        except NotFound:
            return None

    async def _all(self, pod_id: str = "") -> builtins.list[_Found]:
        out = []
        for record in await self.d.containers.list(self.namespace):
            if record.labels.get(KIND_LABEL) != KIND_CONTAINER:
                continue
            try:
                found = _found(record)
            except InvalidArgument as exc:  # a record we cannot read is logged, not a failed listing
                log.warning("container %s: %s", record.id, exc)
                continue
            if not pod_id or found.meta.pod_id == pod_id:
                out.append(found)
        return out

    async def _find(self, cid: str) -> _Found:
        """The container `cid` names, in full or by a unique prefix (NotFound, InvalidArgument)."""
        return by_id_prefix(await self._all() if cid else [], lambda f: f.record.id, cid, "container", "containers")

    async def _save(self, found: _Found) -> None:
        found.record.extensions[METADATA_EXTENSION] = _meta_value(found.meta)
        found.record = await self.d.containers.update(self.namespace, found.record,
                                                      [f"extensions.{METADATA_EXTENSION}"])

    @staticmethod
    def _view(found: _Found, state: TaskState | None) -> CriContainer:
        m = found.meta
        created = int(found.record.created_at.timestamp() * 1e9) if found.record.created_at else 0
        out = CriContainer(found.record.id, m.pod_id, found.config, ContainerState.CREATED, created, m.image,
                           m.image_id, started_at_ns=m.started_at_ns, log_path=m.log_path, user=_container_user(found))
        if state is None:
            if m.started:
                out.state = ContainerState.EXITED
                out.finished_at_ns, out.exit_code = m.finished_at_ns, m.exit_code
                out.reason, out.message = m.reason or "Unknown", m.message
            return out
        if state.status in (Status.RUNNING, Status.PAUSED, Status.PAUSING):
            out.state, out.pid = ContainerState.RUNNING, state.pid
        elif state.status == Status.STOPPED:
            out.state = ContainerState.EXITED
            out.finished_at_ns = state.exited_at_ns or 0
            out.exit_code, out.reason = state.exit_status, _reason(state.exit_status)
        elif state.status == Status.UNKNOWN:
            out.state = ContainerState.UNKNOWN
        return out


async def task_sample(deps: SandboxDeps, namespace: str, cid: str) -> stats_pb.Sample | None:
    """The cgroup metrics of task `cid` as its shim reports them; None without a task (or metrics)."""
    try:
        metrics = await deps.tasks.get(namespace, cid).stats()
    except NotFound:
        return None
    if metrics is None:
        return None
    sample = stats_pb.Sample()
    metrics_into_sample(metrics.type_url, metrics.value, sample)
    return sample


def _signal_of(text: str) -> int:
    """An image's StopSignal ("SIGQUIT", "QUIT" or "3"); SIGTERM when none or unknown."""
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        if text:
            log.warning("image stop signal %r is unknown: using SIGTERM", text)
        return int(signal.SIGTERM)


def _reason(exit_code: int, oom_killed: bool = False) -> str:
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def _oom_killed(record: Container) -> bool:
    """Whether the kernel's OOM killer struck in the container's memory cgroup (read while its
    task, and so the cgroup, still exists: the shim removes it at Delete). Blocking: small reads."""
    try:
        rel = normalize_path(json.loads(record.spec.value)["linux"]["cgroupsPath"]) if record.spec else ""
    except (ValueError, KeyError, TypeError, InvalidArgument):
        return False
    if not rel:
        return False
    if cgroups.host_version() == 2:
        path = os.path.join(cgroups.CGROUP_ROOT, cgroups.PARENT, rel, "memory.events")
    else:
        mount = cgroups.v1_mounts().get("memory")
        if mount is None:
            return False
        path = os.path.join(mount, cgroups.PARENT, rel, "memory.oom_control")
    try:
        with open(path) as f:
            counters = dict(line.split(" ", 1) for line in f.read().splitlines() if " " in line)
    except OSError:
        return False
    return int(counters.get("oom_kill", "0").strip() or 0) > 0


def _meta_value(meta: _Meta) -> AnyValue:
    return AnyValue(METADATA_TYPE_URL, json.dumps(asdict(meta)).encode())


def _found(record: Container) -> _Found:
    ext = record.extensions.get(METADATA_EXTENSION)
    if ext is None or ext.type_url != METADATA_TYPE_URL:
        raise InvalidArgument("its stored CRI metadata is missing")
    try:
        meta = _Meta(**json.loads(ext.value))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"its stored CRI metadata is not readable: {exc}") from None
    return _Found(record, meta)


def _check_recursive_read_only(config: ContainerConfig, runtime_name: str, external: Collection[str]) -> None:
    """A recursive read-only mount only where the pod's runtime handler reports the feature."""
    if any(m.recursive_read_only for m in config.mounts) and not recursive_read_only(runtime_name, external):
        raise InvalidArgument(f"container config: recursive_read_only mounts are not supported by runtime "
                              f"{runtime_name!r} here (Status lists the runtime handlers' features)")


def _user_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The process user of an OCI spec, as _Meta keeps it."""
    user = spec.get("process", {}).get("user", {})
    return {"uid": int(user.get("uid", 0)), "gid": int(user.get("gid", 0)),
            "supplemental_groups": [int(g) for g in user.get("additionalGids") or []]}


def _container_user(found: _Found) -> ContainerUser | None:
    """The identity the container's first process started with; from its spec for a record made
    before the metadata kept it."""
    user = found.meta.user
    if user is None and found.record.spec is not None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            user = _user_of(json.loads(found.record.spec.value))
    if user is None:
        return None
    return ContainerUser(user["uid"], user["gid"], tuple(user["supplemental_groups"]))


def _make_host_paths(config: ContainerConfig) -> None:
    """A bind mount's missing host path is made as a directory (containerd does likewise)."""
    for m in config.mounts:
        if not m.image and not os.path.exists(m.host_path):
            try:
                os.makedirs(m.host_path, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise InvalidArgument(f"mount {m.host_path}: cannot make it: {exc.strerror}") from None


def _user_text(config: ContainerConfig, image_config: dict[str, Any]) -> str:
    """`user[:group]` to run as: the security context's, else the image's USER, else root."""
    sec = config.security
    if sec.run_as_user is not None:
        text = str(sec.run_as_user)
    elif sec.run_as_username:
        text = sec.run_as_username
    else:
        text = str(image_config.get("User") or "0")
    if sec.run_as_group is not None:
        text = f"{text.split(':', 1)[0]}:{sec.run_as_group}"
    return text


def _prepare_rootfs(mounts: builtins.list[Any], tmp_root: Path, user_text: str, workdir: str,
                    merge_groups: bool = True) -> User:
    """Blocking. The user as containerd's WithUser/WithAdditionalGIDs resolve it in the image (a
    name, or a uid's primary group, from /etc/passwd; with `merge_groups` (the Merge policy) the
    groups of /etc/group listing the user), and the working directory made if missing (as runc
    makes it; our shim does not). The rootfs is mounted only when either needs it: not for
    `uid:gid` without a working directory."""
    uid_text, sep, gid_text = user_text.partition(":")
    if sep and uid_text.isdigit() and gid_text.isdigit() and not workdir.strip("/"):
        return User(int(uid_text), int(gid_text))
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with mounted(mounts, tmp_root) as root:
        owner = resolve_user(user_text, root)
        merge = merge_groups and not sep
        groups = tuple(additional_gids(owner, root, "" if uid_text.isdigit() else uid_text)) if merge else ()
        if workdir.strip("/"):
            make_workdir(root, workdir, owner)
    return User(owner.uid, owner.gid, groups)


class _Collector:
    """ExecSync's output: FIFOs drained by the loop as bytes come (the process never blocks on a
    full pipe), each stream capped at EXEC_OUTPUT_CAP. Made on the loop (mkfifo and a
    non-blocking open do not wait)."""

    def __init__(self, fifo_dir: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.fds: dict[str, int] = {}
        self.data: dict[str, bytearray] = {}
        try:
            for name in ("stdout", "stderr"):
                os.mkfifo(fifo_dir / name, 0o600)
                # O_RDWR: opening never blocks, and no EOF is seen before the shim opened it.
                self.fds[name] = os.open(fifo_dir / name, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                self.data[name] = bytearray()
                self.loop.add_reader(self.fds[name], self._drain, name)
        except OSError as exc:
            self.close()
            raise Internal(f"exec sync: its output pipes: {exc.strerror or exc}") from None

    def _drain(self, name: str) -> None:
        buf = self.data[name]
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fds[name], 65536):
                room = EXEC_OUTPUT_CAP - len(buf)
                if room > 0:
                    buf += chunk[:room]

    def finish(self) -> tuple[bytes, bytes]:
        """After the process exited (and the shim copied all of its output): what is left."""
        for name in self.fds:
            self._drain(name)
        return bytes(self.data["stdout"]), bytes(self.data["stderr"])

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
