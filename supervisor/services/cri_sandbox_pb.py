"""CRI pod sandbox messages ⇄ supervisor.cri.sandbox_types: the request is checked here, so a
bad config is an InvalidArgument naming the field before anything is made."""

from __future__ import annotations

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common import idmap
from dockyard_common.errors import InvalidArgument
from dockyard_common.idmap import IDMap
from supervisor.cri.sandbox_types import (
    DnsConfig,
    NamespaceMode,
    NamespaceModes,
    PodConfig,
    PodMetadata,
    PortMapping,
    Sandbox,
    SandboxState,
    SecurityContext,
    UserNamespace,
)

_PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp"}
# the deprecated seccomp_profile_path spellings
_SECCOMP_PATHS = {"": "", "unconfined": "Unconfined", "runtime/default": "RuntimeDefault",
                  "docker/default": "RuntimeDefault"}


def pod_config(config: pb.PodSandboxConfig, runtime_handler: str) -> PodConfig:
    m = config.metadata
    for field, value in (("name", m.name), ("uid", m.uid), ("namespace", m.namespace)):
        if not value:
            raise InvalidArgument(f"pod sandbox config: metadata.{field} must not be empty")
    if m.attempt < 0:
        raise InvalidArgument("pod sandbox config: metadata.attempt must not be negative")
    linux = config.linux
    options = linux.security_context.namespace_options
    namespaces = _namespaces(options)
    userns = user_namespace_of(options, "pod sandbox config")
    if userns is not None and NamespaceMode.NODE in (namespaces.network, namespaces.pid, namespaces.ipc):
        raise InvalidArgument("pod sandbox config: a pod in its own user namespace cannot use the host's "
                              "network, PID or IPC namespace (as Kubernetes' hostUsers: false)")
    return PodConfig(
        metadata=PodMetadata(m.name, m.uid, m.namespace, m.attempt),
        hostname=_hostname(config.hostname), log_directory=config.log_directory,
        dns=DnsConfig(tuple(config.dns_config.servers), tuple(config.dns_config.searches),
                      tuple(config.dns_config.options)),
        ports=tuple(p for p in (_port(i, p) for i, p in enumerate(config.port_mappings)) if p is not None),
        labels=dict(config.labels), annotations=dict(config.annotations), cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls), namespaces=namespaces, security=_security(linux.security_context),
        runtime_handler=runtime_handler, userns=userns)


def _hostname(name: str) -> str:
    if len(name) > 64 or any(c in name for c in "/\0 \t\n"):
        raise InvalidArgument(f"pod sandbox config: hostname {name!r} is not a host name")
    return name


def _port(i: int, p: pb.PortMapping) -> PortMapping | None:
    where = f"pod sandbox config: port_mappings[{i}]"
    protocol = _PROTOCOLS.get(p.protocol)
    if protocol is None:
        # proto3 enums are open: a client may send any number, which Name() refuses with ValueError
        word = pb.Protocol.Name(p.protocol) if p.protocol in pb.Protocol.values() else str(p.protocol)
        raise InvalidArgument(f"{where}: protocol {word} is not supported (TCP, UDP)")
    if not 0 < p.container_port < 65536 or p.host_port > 65535:
        raise InvalidArgument(f"{where}: ports must be within 1-65535")
    if p.host_port <= 0:
        return None  # no host port: nothing to publish (containerd skips these too)
    return PortMapping(protocol, p.container_port, p.host_port, p.host_ip)


def _mode(value: int, what: str) -> NamespaceMode:
    try:
        mode = NamespaceMode(value)
    except ValueError:
        raise InvalidArgument(f"pod sandbox config: namespace_options.{what}: unknown mode {value}") from None
    if mode == NamespaceMode.TARGET:
        raise InvalidArgument(f"pod sandbox config: namespace_options.{what}: TARGET is for containers, not pods")
    return NamespaceMode.POD if mode == NamespaceMode.CONTAINER else mode


def _namespaces(o: pb.NamespaceOption) -> NamespaceModes:
    return NamespaceModes(_mode(o.network, "network"), _mode(o.pid, "pid"), _mode(o.ipc, "ipc"))


def user_namespace_of(o: pb.NamespaceOption, where: str) -> UserNamespace | None:
    """userns_options as asked: None for the host's (NODE, or none given), else the pod's own with
    exactly one uid and one gid range that maps container id 0 (what Kubernetes sends)."""
    if not o.HasField("userns_options"):
        return None
    u = o.userns_options
    try:
        mode = NamespaceMode(u.mode)
    except ValueError:
        raise InvalidArgument(f"{where}: namespace_options.userns_options.mode: unknown mode {u.mode}") from None
    if mode == NamespaceMode.NODE:
        if u.uids or u.gids:
            raise InvalidArgument(f"{where}: namespace_options.userns_options: mode NODE takes no mappings")
        return None
    if mode != NamespaceMode.POD:
        raise InvalidArgument(f"{where}: namespace_options.userns_options.mode {mode.name} is not supported "
                              "(POD or NODE)")
    maps = []
    for kind, given in (("uids", u.uids), ("gids", u.gids)):
        if len(given) != 1:
            raise InvalidArgument(f"{where}: namespace_options.userns_options.{kind}: want exactly one "
                                  f"mapping, got {len(given)}")
        m = given[0]
        if m.container_id != 0:
            raise InvalidArgument(f"{where}: namespace_options.userns_options.{kind}: the mapping must start at "
                                  f"container id 0, not {m.container_id}")
        text = f"{m.container_id}:{m.host_id}:{m.length}"
        maps.append(idmap.parse(text, f"{where}: namespace_options.userns_options.{kind} {text}"))
    return UserNamespace(maps[0], maps[1])


def seccomp_of(s: pb.LinuxSandboxSecurityContext | pb.LinuxContainerSecurityContext, where: str) -> str:
    """The seccomp profile asked for: "" / "Unconfined", "RuntimeDefault" or "localhost/<path>"."""
    if s.HasField("seccomp"):
        kind = s.seccomp.profile_type
        if kind == pb.SecurityProfile.Localhost:
            if not s.seccomp.localhost_ref.startswith("/"):
                raise InvalidArgument(f"{where}: seccomp localhost_ref must be an absolute path")
            return "localhost/" + s.seccomp.localhost_ref
        if kind not in pb.SecurityProfile.ProfileType.values():  # an open enum: any number may come
            raise InvalidArgument(f"{where}: seccomp profile_type {kind} is unknown")
        return str(pb.SecurityProfile.ProfileType.Name(kind))
    if s.seccomp_profile_path.startswith("localhost/"):
        return s.seccomp_profile_path
    if s.seccomp_profile_path in _SECCOMP_PATHS:
        return _SECCOMP_PATHS[s.seccomp_profile_path]
    raise InvalidArgument(f"{where}: seccomp_profile_path {s.seccomp_profile_path!r} is not "
                          "runtime/default, unconfined or localhost/<path>")


def _security(s: pb.LinuxSandboxSecurityContext) -> SecurityContext:
    for field in ("run_as_user", "run_as_group"):
        if s.HasField(field) and getattr(s, field).value < 0:
            raise InvalidArgument(f"pod sandbox config: security_context.{field} must not be negative")
    if any(g < 0 for g in s.supplemental_groups):
        raise InvalidArgument("pod sandbox config: security_context.supplemental_groups must not be negative")
    seccomp = seccomp_of(s, "pod sandbox config")
    return SecurityContext(
        privileged=s.privileged, run_as_user=s.run_as_user.value if s.HasField("run_as_user") else None,
        run_as_group=s.run_as_group.value if s.HasField("run_as_group") else None,
        supplemental_groups=tuple(s.supplemental_groups), readonly_rootfs=s.readonly_rootfs, seccomp=seccomp)


_STATES = {SandboxState.READY: "SANDBOX_READY", SandboxState.NOTREADY: "SANDBOX_NOTREADY"}


def _state_pb(state: SandboxState) -> pb.PodSandboxState:
    return pb.PodSandboxState.Value(_STATES[state])


def _pb_mode(mode: NamespaceMode) -> pb.NamespaceMode:
    return pb.NamespaceMode.Value(mode.name)


def userns_pb(userns: UserNamespace | None) -> pb.UserNamespace:
    if userns is None:
        return pb.UserNamespace(mode=pb.NODE)
    return pb.UserNamespace(mode=pb.POD, uids=_id_maps_pb(userns.uids), gids=_id_maps_pb(userns.gids))


def _id_maps_pb(maps: tuple[IDMap, ...]) -> list[pb.IDMapping]:
    return [pb.IDMapping(host_id=m.host_id, container_id=m.container_id, length=m.size) for m in maps]


def metadata_pb(m: PodMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def status_pb(s: Sandbox) -> pb.PodSandboxStatus:
    c = s.config
    network = pb.PodSandboxNetworkStatus(ip=s.ips[0] if s.ips else "",
                                         additional_ips=[pb.PodIP(ip=ip) for ip in s.ips[1:]])
    options = pb.NamespaceOption(network=_pb_mode(c.namespaces.network), pid=_pb_mode(c.namespaces.pid),
                                 ipc=_pb_mode(c.namespaces.ipc), userns_options=userns_pb(c.userns))
    return pb.PodSandboxStatus(id=s.id, metadata=metadata_pb(c.metadata), state=_state_pb(s.state),
                               created_at=s.created_at_ns, network=network,
                               linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=options)),
                               labels=c.labels, annotations=c.annotations, runtime_handler=c.runtime_handler)


def sandbox_pb(s: Sandbox) -> pb.PodSandbox:
    c = s.config
    return pb.PodSandbox(id=s.id, metadata=metadata_pb(c.metadata), state=_state_pb(s.state),
                         created_at=s.created_at_ns, labels=c.labels, annotations=c.annotations,
                         runtime_handler=c.runtime_handler)
