"""A pod sandbox as the CRI describes it, in values: what RunPodSandbox asks for (PodConfig) and
what the status calls report (Sandbox). The services convert the protobuf at the edge; the
config is also what is persisted with the sandbox's container (`to_json`/`from_json`), so a
daemon restart reports the pod as it was asked for.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from dockyard_common import idmap
from dockyard_common.errors import InvalidArgument
from dockyard_common.idmap import IDMap
from dockyard_common.jsonutil import JsonError


def unreadable(what: str, exc: Exception) -> InvalidArgument:
    """`what`, a stored record that does not fit its type (changed through containerd's
    Containers API, which any client may call, or written by another version), in words: not
    Python's ("__init__() got an unexpected keyword argument", "'x' is not a valid ...")."""
    if isinstance(exc, JsonError):
        detail = str(exc)  # already in words: "it is not valid JSON: ..."
    elif isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        detail = f"its field {exc.args[0]!r} is missing"
    else:
        detail = "a field is missing or unknown, or has a value of the wrong type"
    return InvalidArgument(f"{what} is not readable: {detail}")


class NamespaceMode(enum.IntEnum):
    """The CRI's NamespaceMode numbers."""

    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class SandboxState(enum.IntEnum):
    """The CRI's PodSandboxState numbers."""

    READY = 0
    NOTREADY = 1


@dataclass(frozen=True)
class PodMetadata:
    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True)
class DnsConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    protocol: str  # "tcp" | "udp"
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class NamespaceModes:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.POD
    ipc: NamespaceMode = NamespaceMode.POD


@dataclass(frozen=True)
class UserNamespace:
    """A pod's own user namespace (userns_options mode POD): the sandbox makes it with these
    mappings and the pod's containers join it. One range each, container id 0 mapped."""

    uids: tuple[IDMap, ...]
    gids: tuple[IDMap, ...]

    def labels(self) -> dict[str, str]:
        """The snapshot labels that prepare a rootfs for this namespace (containerd 2's)."""
        return {idmap.UID_LABEL: idmap.format_maps(self.uids), idmap.GID_LABEL: idmap.format_maps(self.gids)}

    def spec_mappings(self) -> dict[str, list[dict[str, int]]]:
        """linux.uidMappings/gidMappings of an OCI spec."""
        return {key: [{"containerID": m.container_id, "hostID": m.host_id, "size": m.size} for m in maps]
                for key, maps in (("uidMappings", self.uids), ("gidMappings", self.gids))}


@dataclass(frozen=True)
class SecurityContext:
    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    seccomp: str = ""  # "" / "Unconfined", "RuntimeDefault", or "localhost/<path>"


@dataclass(frozen=True)
class PodConfig:
    metadata: PodMetadata
    hostname: str = ""
    log_directory: str = ""
    dns: DnsConfig = field(default_factory=DnsConfig)
    ports: tuple[PortMapping, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    namespaces: NamespaceModes = field(default_factory=NamespaceModes)
    security: SecurityContext = field(default_factory=SecurityContext)
    runtime_handler: str = ""
    userns: UserNamespace | None = None  # None: the host's user namespace (NODE)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodConfig:
        """The config as `to_json` stored it (InvalidArgument if it is not that)."""
        try:
            ns = data["namespaces"]
            sec = data["security"]
            return cls(
                metadata=PodMetadata(**data["metadata"]), hostname=data["hostname"],
                log_directory=data["log_directory"], dns=DnsConfig(*(tuple(v) for v in data["dns"].values())),
                ports=tuple(PortMapping(**p) for p in data["ports"]), labels=dict(data["labels"]),
                annotations=dict(data["annotations"]), cgroup_parent=data["cgroup_parent"],
                sysctls=dict(data["sysctls"]),
                namespaces=NamespaceModes(*(NamespaceMode(ns[k]) for k in ("network", "pid", "ipc"))),
                security=SecurityContext(**{**sec, "supplemental_groups": tuple(sec["supplemental_groups"])}),
                runtime_handler=data["runtime_handler"], userns=_userns(data.get("userns")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise unreadable("stored pod sandbox config", exc) from None


def _userns(data: Any) -> UserNamespace | None:
    if data is None:  # none asked, or a record from before user namespaces
        return None
    return UserNamespace(*(tuple(IDMap(**m) for m in data[k]) for k in ("uids", "gids")))


@dataclass
class Sandbox:
    """A pod sandbox as PodSandboxStatus and ListPodSandbox report it."""

    id: str
    config: PodConfig
    state: SandboxState
    created_at_ns: int
    ips: list[str] = field(default_factory=list)  # the pod's addresses, the primary first
    pid: int = 0  # the sandbox process (0: not running)
    netns: str = ""  # the pod's network namespace file ("" host network or none)
    image: str = ""  # the sandbox image's reference
    shim_group: str = ""  # the group of the shim serving the pod ("": a shim of its own)
