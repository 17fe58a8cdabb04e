"""Pod sandboxes (CRI RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus,
ListPodSandbox): a sandbox is a container of the CRI namespace running the sandbox image's pause
process, which holds the pod's namespaces; its network comes from the daemon's network wiring
(supervisor/cri/sandbox_spec.py says how the config maps).

    pods = PodSandboxes(deps, SandboxSettings("registry.k8s.io/pause:3.10", "dockyard", "overlayfs"))
    pod_id = await pods.run(config)          # 64 hex digits; the task runs, the network is up
    (await pods.status(pod_id)).ips          # ["10.88.0.2"]
    await pods.stop(pod_id)                  # the task goes (and with it the network): NOTREADY
    await pods.remove(pod_id)                # the container and its snapshot go

The pod's containers (supervisor/cri/containers.py, registered as `members`) are stopped before
the pause process and removed with the pod. Files the containers share (a /dev/shm tmpfs, the
hostname file) are made on the host before the sandbox starts and go with the pod (podfiles.py).

State lives in the metadata database: the container record (kind label, network labels, the
pod's config in an extension) plus the task the runtime recovers after a restart, so a daemon
restart lists the same pods in the same states. Stop and remove of a pod that is not there
succeed, as the CRI asks; ids may be given as unique prefixes (as crictl users type them).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import secrets
import signal
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition, Internal, InvalidArgument, NotFound
from dockyard_common.imagespec import Matcher
from dockyard_common.jsonutil import json_value
from dockyard_common.ocispec import SPEC_TYPE_URL
from dockyard_common.types import AnyValue, Container, Status
from supervisor.cri.decoded import Decoded
from supervisor.cri.images import CriImage, CriImages, PullAuth, is_image_id, reference_of
from supervisor.cri.inputs import check_pod
from supervisor.cri.lookup import by_id_prefix
from supervisor.cri.podfiles import PodFiles
from supervisor.cri.runtime import user_namespaces_problem
from supervisor.cri.sandbox_spec import network_labels, sandbox_spec
from supervisor.cri.sandbox_types import NamespaceMode, PodConfig, PodMetadata, Sandbox, SandboxState
from supervisor.cri.shimgroups import GROUP_ANNOTATION, GROUP_LABEL, pick_group
from supervisor.images.inspect import Inspection, Inspector
from supervisor.images.unpack import Unpacker
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.leases import LeaseStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.network.wiring import ContainerNetworks
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.types import CreateOptions, TaskState

log = logging.getLogger("dockyard.cri")

KIND_LABEL = "io.cri-containerd.kind"  # containerd's: "sandbox" or "container"
KIND_SANDBOX = "sandbox"
METADATA_EXTENSION = "io.cri-containerd.sandbox.metadata"
METADATA_TYPE_URL = "dockyard.cri/sandbox-metadata/v1"
DEFAULT_RUNTIME = "io.containerd.runc.v2"
HANDLERS = {"": DEFAULT_RUNTIME, "runc": DEFAULT_RUNTIME}  # containerd's default handler names
STOP_WAIT = 10.0  # seconds for the killed pause process to be reported gone


@dataclass(frozen=True)
class SandboxDeps:
    containers: ContainerStore
    tasks: TaskManager
    snapshots: SnapshotStore
    networks: ContainerNetworks
    images: CriImages
    inspector: Inspector
    unpacker: Unpacker
    on_deleted: Callable[[str, str], Awaitable[None]]  # the runtime's: a container record is gone
    leases: LeaseStore  # a container's snapshot is leased until its record refers to it
    on_lease_release: Callable[[], None]  # the collector's: something may have become garbage


@dataclass(frozen=True)
class SandboxSettings:
    sandbox_image: str
    default_network: str
    snapshotter: str
    runtimes: tuple[str, ...] = ()  # more runtime names a handler may name (the daemon's [runtimes])
    files_dir: Path | None = None  # where pods' shared files go (podfiles.py); None: none shared
    pods_per_shim: int = 1  # pods one shim serves (shimgroups.py); 1: a shim per pod
    probe_dir: Path | None = None  # where ID-mapped mounts are tried (the snapshots' filesystem)


class PodMembers(Protocol):
    """The pod's containers (supervisor/cri/containers.py), which go before their sandbox."""

    async def stop_pod(self, pod_id: str) -> None: ...

    async def remove_pod(self, pod_id: str) -> None: ...


class PodSandboxes:
    def __init__(self, deps: SandboxDeps, settings: SandboxSettings, namespace: str = "k8s.io") -> None:
        self.d = deps
        self.settings = settings
        self.namespace = namespace
        self._reserve = asyncio.Lock()  # name check and record creation, one pod at a time
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.files = PodFiles(settings.files_dir) if settings.files_dir is not None else None
        self.members: PodMembers | None = None  # set by whoever serves the pod's containers
        self._decoded: Decoded[PodConfig] = Decoded()  # each pod's config, per stored bytes
        self._userns_checked: tuple[str | None] | None = None  # (user_namespaces_problem,) once asked

    def _lock(self, pod_id: str) -> asyncio.Lock:
        lock = self._locks.get(pod_id)
        if lock is None:
            lock = self._locks[pod_id] = asyncio.Lock()
        return lock

    # -- run ---------------------------------------------------------------------------------

    async def run(self, config: PodConfig) -> str:
        """Create and start the pod's sandbox; its id. Nothing is left if it fails."""
        check_pod(config)
        runtime = self._runtime(config.runtime_handler)
        if config.userns is not None and (problem := await self.user_namespaces_problem(runtime)):
            raise FailedPrecondition(f"run pod sandbox: user namespaces are not available: {problem}")
        labels = network_labels(config, self.settings.default_network)
        image_ref, image = await self._sandbox_image()
        if not image.layers:
            raise InvalidArgument(f"sandbox image {image_ref}: it has no layers")
        pod_id = secrets.token_hex(32)
        host_ipc = config.namespaces.ipc == NamespaceMode.NODE
        shm = self.files.paths(pod_id, shm=not host_ipc).shm if self.files is not None else None
        spec = sandbox_spec(config, pod_id, self.namespace, image_ref, image.config.config,
                            shm_source=str(shm) if shm else "")
        meta = {"config": config.to_json(), "image": image_ref}
        async with self._reserve:
            records = await self._records()
            self._check_name(records, config.metadata)
            # The pod's shim: the first group of its runtime with room (the name check and the
            # record are one step, so two pods started at once count each other).
            group = pick_group(runtime, (c.labels.get(GROUP_LABEL, "") for c in records),
                               self.settings.pods_per_shim)
            if group:
                spec["annotations"][GROUP_ANNOTATION] = group
            spec_json = json.dumps(spec).encode()
            record = Container(id=pod_id, runtime_name=runtime, spec=AnyValue(SPEC_TYPE_URL, spec_json),
                               labels={KIND_LABEL: KIND_SANDBOX, **labels, **({GROUP_LABEL: group} if group else {})},
                               image=image_ref, snapshotter=self.settings.snapshotter, snapshot_key=pod_id,
                               extensions={METADATA_EXTENSION: AnyValue(METADATA_TYPE_URL,
                                                                        json.dumps(meta).encode())})
            await self.d.containers.create(self.namespace, record)
        async with self._lock(pod_id):
            try:
                if self.files is not None:
                    await asyncio.to_thread(self.files.make, pod_id, config.hostname, not host_ipc)
                mounts = await self.d.snapshots.prepare(self.namespace, self.settings.snapshotter, pod_id,
                                                        image.layers[-1].chain_id, labels=rootfs_labels(config))
                task = await self.d.tasks.create(self.namespace, pod_id, runtime, spec_json,
                                                 CreateOptions(rootfs=mounts), labels=labels)
                await task.start()
            except BaseException:
                try:
                    await uninterrupted(self._remove(pod_id))
                except DockyardError as exc:  # the start's error is the one to report
                    log.warning("pod sandbox %s: cleanup after a failed start: %s", pod_id, exc)
                raise
        log.info("pod sandbox %s (%s/%s) is running", pod_id, config.metadata.namespace, config.metadata.name)
        return pod_id

    async def user_namespaces_problem(self, runtime: str = DEFAULT_RUNTIME) -> str | None:
        """Why pods of `runtime` cannot have user namespaces here, None if they can. Checked once
        (in a thread: a child process tries a mount); every Status asks."""
        if runtime in self.settings.runtimes:
            return f"runtime {runtime} is another shim, not asked"
        if self._userns_checked is None:
            self._userns_checked = (await asyncio.to_thread(user_namespaces_problem, self.settings.snapshotter,
                                                            self.settings.probe_dir),)
        return self._userns_checked[0]

    def _runtime(self, handler: str) -> str:
        if handler in HANDLERS:
            return HANDLERS[handler]
        if handler in self.settings.runtimes:
            return handler
        known = sorted({"runc", *self.settings.runtimes})
        raise InvalidArgument(f"runtime handler {handler!r} is not configured (known: {', '.join(known)})")

    def _check_name(self, records: builtins.list[Container], metadata: PodMetadata) -> None:
        """A pod's metadata names one sandbox at a time (containerd reserves the name)."""
        for container in records:
            other = self._config(container)
            if other is not None and other.metadata == metadata:
                raise AlreadyExists(f"pod sandbox name {_pod_name(metadata)!r} is reserved for {container.id}")

    async def _sandbox_image(self) -> tuple[str, Inspection]:
        """The configured sandbox image, pulled if missing and unpacked for the snapshotter."""
        ref = self.settings.sandbox_image
        found = await self.d.images.find(ref)
        if found is None:
            log.info("pulling the sandbox image %s", ref)
            await self.d.images.pull(ref, PullAuth())
            found = await self.d.images.find(ref)
            if found is None:
                raise NotFound(f"sandbox image {ref} (after pulling it)")
        return await unpacked_image(self.d, self.namespace, self.settings.snapshotter, ref, found)

    # -- stop and remove ---------------------------------------------------------------------

    async def stop(self, pod_id: str) -> None:
        """Stop the pause process and tear the network down; a missing pod is no error."""
        try:
            container = await self._find(pod_id)
        except NotFound:
            return
        async with self._lock(container.id):
            await self._stop(container.id)

    async def _stop(self, pod_id: str) -> None:
        if self.members is not None:  # its containers first: they live in the pause's namespaces
            await self.members.stop_pod(pod_id)
        try:
            task = self.d.tasks.get(self.namespace, pod_id)
        except NotFound:
            task = None
        if task is not None:
            with contextlib.suppress(DockyardError):
                await task.kill(signal.SIGKILL, all=True)
            with contextlib.suppress(DockyardError, TimeoutError):
                await asyncio.wait_for(task.wait(), STOP_WAIT)
            with contextlib.suppress(NotFound):
                await self.d.tasks.delete(self.namespace, pod_id)  # releases the network too
        await self.d.networks.release(self.namespace, pod_id)  # idempotent: also when the task was gone

    async def remove(self, pod_id: str) -> None:
        """Stop the pod if it runs, then remove its container and snapshot; a missing pod is no error."""
        try:
            container = await self._find(pod_id)
        except NotFound:
            return
        async with self._lock(container.id):
            await self._remove(container.id)
        log.info("pod sandbox %s removed", container.id)

    async def _remove(self, pod_id: str) -> None:
        if self.members is not None:
            await self.members.remove_pod(pod_id)
        await self._stop(pod_id)
        if self.files is not None:
            await asyncio.to_thread(self.files.remove, pod_id)
        with contextlib.suppress(NotFound):
            await self.d.snapshots.remove(self.namespace, self.settings.snapshotter, pod_id)
        with contextlib.suppress(NotFound):
            await self.d.containers.delete(self.namespace, pod_id)
        await self.d.on_deleted(self.namespace, pod_id)

    # -- status and list ---------------------------------------------------------------------

    async def status(self, pod_id: str, reported: bool = False) -> Sandbox:
        """The pod as it is now. `reported`: for PodSandboxStatus, the pause task's state cached
        since its last event may do (`TaskManager.reported_state`); callers that act on the
        answer leave it False."""
        container = await self._find(pod_id)
        try:
            state: TaskState | None = await (self.d.tasks.reported_state(self.namespace, container.id) if reported
                                             else self.d.tasks.get(self.namespace, container.id).state())
        except NotFound:
            state = None
        return self._sandbox(container, state)

    async def info(self, sandbox: Sandbox) -> dict[str, Any]:
        """containerd's verbose status info: what the sandbox is made of."""
        container = await self.d.containers.get(self.namespace, sandbox.id)
        spec = json_value(container.spec.value, f"sandbox {sandbox.id}: its stored spec", Internal) \
            if container.spec else {}
        return {"pid": sandbox.pid, "processStatus": "running" if sandbox.state == SandboxState.READY else "stopped",
                "netNamespacePath": sandbox.netns, "image": sandbox.image, "snapshotKey": container.snapshot_key,
                "snapshotter": container.snapshotter, "runtimeHandler": sandbox.config.runtime_handler,
                "runtimeType": container.runtime_name, "config": sandbox.config.to_json(), "runtimeSpec": spec}

    async def list(self, pod_id: str = "", state: SandboxState | None = None,
                   selector: Mapping[str, str] | None = None) -> builtins.list[Sandbox]:
        """The pods matching every filter given: an id (or its prefix), a state, labels."""
        records = [c for c in await self._records() if c.id.startswith(pod_id)]
        states = {s.id: s for s in await self.d.tasks.states(self.namespace)} if records else {}
        out = []
        for container in records:
            try:
                sandbox = self._sandbox(container, states.get(container.id))
            except InvalidArgument as exc:  # a record we cannot read is logged, not a failed listing
                log.warning("pod sandbox %s: %s", container.id, exc)
                continue
            if state is not None and sandbox.state != state:
                continue
            if selector and any(sandbox.config.labels.get(k) != v for k, v in selector.items()):
                continue
            out.append(sandbox)
        return sorted(out, key=lambda s: s.created_at_ns)

    # -- internals ---------------------------------------------------------------------------

    def _config(self, container: Container) -> PodConfig | None:
        """The pod's stored config (RunPodSandbox's name check and the listings read every pod's)."""
        ext = container.extensions.get(METADATA_EXTENSION)
        return self._decoded.get(container.id, ext.value if ext is not None else None,
                                 lambda: _config_of(container))

    async def _records(self) -> builtins.list[Container]:
        records = [c for c in await self.d.containers.list(self.namespace) if c.labels.get(KIND_LABEL) == KIND_SANDBOX]
        self._decoded.keep_only(c.id for c in records)
        return records

    async def _find(self, pod_id: str) -> Container:
        """The sandbox `pod_id` names, in full or by a unique prefix (NotFound, InvalidArgument)."""
        return by_id_prefix(await self._records() if pod_id else [], lambda c: c.id, pod_id, "pod sandbox", "pods")

    def _sandbox(self, container: Container, state: TaskState | None) -> Sandbox:
        config = self._config(container)
        if config is None:
            raise InvalidArgument("its stored config is missing")
        ready = state is not None and state.status == Status.RUNNING
        ips: builtins.list[str] = []
        netns = ""
        if ready:
            with contextlib.suppress(NotFound):
                att = self.d.networks.manager.get(self.namespace, container.id)
                netns = str(att.netns_path)
                ips = [a.split("/", 1)[0] for i in att.interfaces for a in i.addresses]
                ips.sort(key=lambda ip: ":" in ip)  # IPv4 first, as the primary
        created = int(container.created_at.timestamp() * 1e9) if container.created_at else 0
        return Sandbox(container.id, config, SandboxState.READY if ready else SandboxState.NOTREADY, created,
                       ips, state.pid if ready and state else 0, netns, container.image,
                       container.labels.get(GROUP_LABEL, ""))


def rootfs_labels(config: PodConfig) -> dict[str, str] | None:
    """The snapshot labels of a pod's rootfs: its ID mapping when it has a user namespace."""
    return config.userns.labels() if config.userns is not None else None


async def unpacked_image(deps: SandboxDeps, namespace: str, snapshotter: str, ref: str, found: CriImage
                         ) -> tuple[str, Inspection]:
    """The image `ref` names (found as `found`): its name as kubelet would write it (the
    normalised reference, or one of its records for an image id) and its inspection, unpacked
    for `snapshotter` if it was not yet."""
    if is_image_id(ref):
        name = found.repo_tags[0] if found.repo_tags else found.records[0]
        record = found.records[0]
    else:
        name = str(reference_of(ref))
        record = name if name in found.records else found.records[0]
    inspection = await deps.inspector.inspect(namespace, record, Matcher.default())
    if snapshotter not in inspection.unpacked:
        async with aclosing(deps.unpacker.unpack(namespace, inspection.target, snapshotter,
                                                 Matcher.default())) as events:
            async for _ in events:
                pass
    return name, inspection


def _config_of(container: Container) -> PodConfig | None:
    ext = container.extensions.get(METADATA_EXTENSION)
    if ext is None or ext.type_url != METADATA_TYPE_URL:
        return None
    try:
        data = json_value(ext.value, "it")
        return PodConfig.from_json(data["config"]) if isinstance(data, dict) and "config" in data else None
    except (ValueError, InvalidArgument):
        return None


def _pod_name(m: PodMetadata) -> str:
    """containerd's sandbox name: k8s_POD_<name>_<namespace>_<uid>_<attempt>."""
    return f"k8s_POD_{m.name}_{m.namespace}_{m.uid}_{m.attempt}"
