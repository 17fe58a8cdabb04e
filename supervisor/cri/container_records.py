"""A CRI container's stored record: the metadata kept beside its spec (the config and what
happened to it), finding containers by id or unique prefix, and the CRI's view of one from its
record and its task's state. `ContainerStore` is the base the parts of `CriContainers` share.

    store.namespace, store.d                   # the CRI namespace, the daemon's stores
    found = await store._find("3f2a")          # Found(record, meta, config); NotFound, InvalidArgument
    view = store._view(found, task_state)      # CriContainer: CREATED, RUNNING, EXITED or UNKNOWN
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import logging
import signal
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockyard_common import oomkilled
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.jsonutil import json_value
from dockyard_common.types import AnyValue, Container, Status
from supervisor.cri.container_types import ContainerConfig, ContainerState, ContainerUser, CriContainer
from supervisor.cri.decoded import Decoded
from supervisor.cri.image_volumes import ImageVolumes
from supervisor.cri.lookup import by_id_prefix
from supervisor.cri.sandbox import KIND_LABEL, PodSandboxes, SandboxDeps
from supervisor.cri.sandbox_types import unreadable
from supervisor.runtime.types import TaskState

log = logging.getLogger("dockyard.cri")

KIND_CONTAINER = "container"
SANDBOX_LABEL = "io.cri-containerd.sandbox-id"  # for `ctr containers ls` filters
METADATA_EXTENSION = "io.cri-containerd.container.metadata"
METADATA_TYPE_URL = "dockyard.cri/container-metadata/v1"
KILL_WAIT = 10.0  # seconds for a SIGKILLed process to be reported gone


@dataclass(frozen=True)
class Meta:
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


@dataclass
class Found:
    record: Container
    meta: Meta
    _config: ContainerConfig | None = field(default=None, repr=False, compare=False)
    _config_of: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def config(self) -> ContainerConfig:
        """The stored config, decoded once per `meta.config` (a new meta brings its own)."""
        if self._config is None or self._config_of is not self.meta.config:
            self._config, self._config_of = ContainerConfig.from_json(self.meta.config), self.meta.config
        return self._config


class ContainerStore:
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
        self._decoded: Decoded[Found] = Decoded()  # each container's metadata, per stored bytes

    def _lock(self, cid: str) -> asyncio.Lock:
        lock = self._locks.get(cid)
        if lock is None:
            lock = self._locks[cid] = asyncio.Lock()
        return lock

    async def _task_state(self, cid: str, reported: bool = False) -> TaskState | None:
        """The task's state, None without a task. `reported`: for a status answer, the state
        cached since the task's last event may do (no shim round trip; `TaskManager.reported_state`)."""
        try:
            if reported:
                return await self.d.tasks.reported_state(self.namespace, cid)
            return await self.d.tasks.get(self.namespace, cid).state()
        except NotFound:
            return None

    async def _oom_killed(self, record: Container) -> bool:
        """Whether the OOM killer struck in the container's current (or last) run: the daemon's
        record of it (the `dockyard.oom-killed` label, supervisor/runtime/oom.py), or, while the
        task is still there and the exit may not be recorded yet, the same cgroup counter it reads."""
        if oomkilled.killed(record.labels):
            return True
        try:
            task = self.d.tasks.get(self.namespace, record.id)
        except NotFound:
            return False
        return await self.d.tasks.oom_killed(task.bundle, task.runtime)

    async def _all(self, pod_id: str = "") -> builtins.list[Found]:
        records = [r for r in await self.d.containers.list(self.namespace)
                   if r.labels.get(KIND_LABEL) == KIND_CONTAINER]
        self._decoded.keep_only(r.id for r in records)
        return [f for f in self._readable(records) if not pod_id or f.meta.pod_id == pod_id]

    async def _find(self, cid: str) -> Found:
        """The container `cid` names, in full or by a unique prefix (NotFound, InvalidArgument).
        Only the records the prefix matches are decoded."""
        records = [r for r in await self.d.containers.list(self.namespace)
                   if r.id.startswith(cid) and r.labels.get(KIND_LABEL) == KIND_CONTAINER] if cid else []
        return by_id_prefix(self._readable(records), lambda f: f.record.id, cid, "container", "containers")

    def _readable(self, records: builtins.list[Container]) -> builtins.list[Found]:
        """The records' metadata, decoded (or as decoded before, for the same bytes); a record we
        cannot read is logged and left out, not a failed call."""
        out = []
        for record in records:
            ext = record.extensions.get(METADATA_EXTENSION)
            try:
                kept = self._decoded.get(record.id, ext.value if ext is not None else None,
                                         functools.partial(_decoded_found, record))
            except InvalidArgument as exc:
                log.warning("container %s: %s", record.id, exc)
                continue
            assert kept is not None
            out.append(Found(record, kept.meta, kept._config, kept._config_of))  # this call's record
        return out

    async def _save(self, found: Found) -> None:
        found.record.extensions[METADATA_EXTENSION] = meta_value(found.meta)
        found.record = await self.d.containers.update(self.namespace, found.record,
                                                      [f"extensions.{METADATA_EXTENSION}"])

    @staticmethod
    def _view(found: Found, state: TaskState | None) -> CriContainer:
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
            out.exit_code, out.reason = state.exit_status, reason_of(state.exit_status)
        elif state.status == Status.UNKNOWN:
            out.state = ContainerState.UNKNOWN
        return out


def reason_of(exit_code: int, oom_killed: bool = False) -> str:
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def meta_value(meta: Meta) -> AnyValue:
    return AnyValue(METADATA_TYPE_URL, json.dumps(asdict(meta)).encode())


def _decoded_found(record: Container) -> Found:
    """`found_of` with its config decoded too: checked, and shared by the copies made of it."""
    found = found_of(record)
    found.config  # noqa: B018
    return found


def found_of(record: Container) -> Found:
    ext = record.extensions.get(METADATA_EXTENSION)
    if ext is None or ext.type_url != METADATA_TYPE_URL:
        raise InvalidArgument("its stored CRI metadata is missing")
    try:
        meta = Meta(**json_value(ext.value, "it"))
    except (ValueError, TypeError) as exc:
        raise unreadable("its stored CRI metadata", exc) from None
    return Found(record, meta)


def user_of(spec: dict[str, Any]) -> dict[str, Any]:
    """The process user of an OCI spec, as Meta keeps it."""
    user = spec.get("process", {}).get("user", {})
    return {"uid": int(user.get("uid", 0)), "gid": int(user.get("gid", 0)),
            "supplemental_groups": [int(g) for g in user.get("additionalGids") or []]}


def _container_user(found: Found) -> ContainerUser | None:
    """The identity the container's first process started with; from its spec for a record made
    before the metadata kept it."""
    user = found.meta.user
    if user is None and found.record.spec is not None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            user = user_of(json_value(found.record.spec.value, "its spec"))
    if user is None:
        return None
    return ContainerUser(user["uid"], user["gid"], tuple(user["supplemental_groups"]))
