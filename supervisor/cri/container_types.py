"""A CRI container in values: what CreateContainer asks for (ContainerConfig) and what
ContainerStatus and ListContainers report (CriContainer). The services convert the protobuf at the
edge; the config is persisted with the container's record (`to_json`/`from_json`), so a daemon
restart reports the container as it was asked for.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from supervisor.cri.sandbox_types import NamespaceMode, UserNamespace, unreadable


class ContainerState(enum.IntEnum):
    """The CRI's ContainerState numbers."""

    CREATED = 0
    RUNNING = 1
    EXITED = 2
    UNKNOWN = 3


class Propagation(enum.IntEnum):
    """The CRI's MountPropagation numbers."""

    PRIVATE = 0
    HOST_TO_CONTAINER = 1
    BIDIRECTIONAL = 2


class SupplementalGroupsPolicy(enum.IntEnum):
    """The CRI's numbers. MERGE: the image's /etc/group groups of the user join the requested
    supplemental groups; STRICT: only the requested ones (and the primary group)."""

    MERGE = 0
    STRICT = 1


@dataclass(frozen=True)
class ContainerMetadata:
    name: str
    attempt: int = 0


@dataclass(frozen=True)
class MountSpec:
    """A bind of `host_path`, or (with `image` set, `host_path` empty) an image volume: the image's
    tree (or its `image_sub_path`) read-only; `image_ref` is its ID, resolved at create."""

    container_path: str
    host_path: str
    readonly: bool = False
    propagation: Propagation = Propagation.PRIVATE
    image: str = ""
    image_ref: str = ""
    image_sub_path: str = ""
    recursive_read_only: bool = False  # the sub-mounts read-only too (needs readonly, PRIVATE)


@dataclass(frozen=True)
class Resources:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""


@dataclass(frozen=True)
class ContainerNamespaces:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.POD
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""  # the container whose PID namespace a TARGET mode joins
    userns_given: bool = False  # userns_options was set: it must then be the pod's
    userns: UserNamespace | None = None


@dataclass(frozen=True)
class ContainerSecurity:
    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: tuple[int, ...] = ()
    supplemental_groups_policy: SupplementalGroupsPolicy = SupplementalGroupsPolicy.MERGE
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    seccomp: str = ""  # "" / "Unconfined", "RuntimeDefault", or "localhost/<path>"
    masked_paths: tuple[str, ...] = ()  # () keeps the defaults
    readonly_paths: tuple[str, ...] = ()
    namespaces: ContainerNamespaces = field(default_factory=ContainerNamespaces)


@dataclass(frozen=True)
class DeviceSpec:
    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class ContainerConfig:
    metadata: ContainerMetadata
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False  # the first attach's end of input closes the container's stdin
    resources: Resources = field(default_factory=Resources)
    security: ContainerSecurity = field(default_factory=ContainerSecurity)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerConfig:
        """The config as `to_json` stored it (InvalidArgument if it is not that)."""
        try:
            sec = dict(data["security"])
            ns = sec.pop("namespaces")
            return cls(
                metadata=ContainerMetadata(**data["metadata"]), image=data["image"],
                command=tuple(data["command"]), args=tuple(data["args"]), working_dir=data["working_dir"],
                envs=tuple((k, v) for k, v in data["envs"]),
                mounts=tuple(MountSpec(m["container_path"], m["host_path"], m["readonly"],
                                       Propagation(m["propagation"]), m.get("image", ""), m.get("image_ref", ""),
                                       m.get("image_sub_path", ""),
                                       recursive_read_only=bool(m.get("recursive_read_only", False)))
                       for m in data["mounts"]),
                devices=tuple(DeviceSpec(**d) for d in data["devices"]),
                labels=dict(data["labels"]), annotations=dict(data["annotations"]), log_path=data["log_path"],
                tty=data["tty"], stdin=data["stdin"],
                stdin_once=bool(data.get("stdin_once", False)), resources=Resources(**data["resources"]),
                security=ContainerSecurity(
                    **{**sec, "supplemental_groups": tuple(sec["supplemental_groups"]),
                       "supplemental_groups_policy": SupplementalGroupsPolicy(sec.get("supplemental_groups_policy", 0)),
                       "add_capabilities": tuple(sec["add_capabilities"]),
                       "drop_capabilities": tuple(sec["drop_capabilities"]),
                       "masked_paths": tuple(sec["masked_paths"]), "readonly_paths": tuple(sec["readonly_paths"])},
                    namespaces=ContainerNamespaces(NamespaceMode(ns["network"]), NamespaceMode(ns["pid"]),
                                                   NamespaceMode(ns["ipc"]), ns["target_id"])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise unreadable("stored container config", exc) from None


@dataclass(frozen=True)
class ContainerUser:
    """The identity the container's first process started with (ContainerStatus' user)."""

    uid: int
    gid: int
    supplemental_groups: tuple[int, ...] = ()


@dataclass
class CriContainer:
    """A container as ContainerStatus and ListContainers report it."""

    id: str
    pod_id: str
    config: ContainerConfig
    state: ContainerState
    created_at_ns: int
    image: str  # the image's name as it was asked for (normalised)
    image_id: str  # the config digest
    started_at_ns: int = 0
    finished_at_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0  # the init's pid while it runs
    log_path: str = ""  # the log's full path ("" none)
    user: ContainerUser | None = None


@dataclass(frozen=True)
class ContainerUsage:
    """ContainerStats: what the container's cgroup and writable layer use, at `timestamp_ns`."""

    container: CriContainer
    timestamp_ns: int
    cpu_usage_ns: int | None = None  # cumulative CPU time (None: no task to ask)
    memory_working_set: int | None = None  # usage minus inactive file cache (kubelet's eviction measure)
    memory_usage: int | None = None
    memory_rss: int | None = None
    memory_available: int | None = None  # limit minus working set, when limited
    process_count: int | None = None  # processes in its cgroup (pod stats sum them)
    writable_bytes: int | None = None
    writable_inodes: int | None = None
    fs_mountpoint: str = ""
