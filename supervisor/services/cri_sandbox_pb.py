"""CRI pod sandbox messages ⇄ supervisor.cri.sandbox_types: the request is checked here, so a
bad config is an InvalidArgument naming the field before anything is made."""

from __future__ import annotations

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common.errors import InvalidArgument
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
    return PodConfig(
        metadata=PodMetadata(m.name, m.uid, m.namespace, m.attempt),
        hostname=_hostname(config.hostname), log_directory=config.log_directory,
        dns=DnsConfig(tuple(config.dns_config.servers), tuple(config.dns_config.searches),
                      tuple(config.dns_config.options)),
        ports=tuple(p for p in (_port(i, p) for i, p in enumerate(config.port_mappings)) if p is not None),
        labels=dict(config.labels), annotations=dict(config.annotations), cgroup_parent=linux.cgroup_parent,
        sysctls=dict(linux.sysctls), namespaces=_namespaces(linux.security_context.namespace_options),
        security=_security(linux.security_context), runtime_handler=runtime_handler)


def _hostname(name: str) -> str:
    if len(name) > 64 or any(c in name for c in "/\0 \t\n"):
        raise InvalidArgument(f"pod sandbox config: hostname {name!r} is not a host name")
    return name


def _port(i: int, p: pb.PortMapping) -> PortMapping | None:
    where = f"pod sandbox config: port_mappings[{i}]"
    protocol = _PROTOCOLS.get(p.protocol)
    if protocol is None:
        raise InvalidArgument(f"{where}: protocol {pb.Protocol.Name(p.protocol)} is not supported (TCP, UDP)")
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


def seccomp_of(s: pb.LinuxSandboxSecurityContext | pb.LinuxContainerSecurityContext, where: str) -> str:
    """The seccomp profile asked for: "" / "Unconfined", "RuntimeDefault" or "localhost/<path>"."""
    if s.HasField("seccomp"):
        kind = s.seccomp.profile_type
        if kind == pb.SecurityProfile.Localhost:
            if not s.seccomp.localhost_ref.startswith("/"):
                raise InvalidArgument(f"{where}: seccomp localhost_ref must be an absolute path")
            return "localhost/" + s.seccomp.localhost_ref
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


def metadata_pb(m: PodMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def status_pb(s: Sandbox) -> pb.PodSandboxStatus:
    c = s.config
    network = pb.PodSandboxNetworkStatus(ip=s.ips[0] if s.ips else "",
                                         additional_ips=[pb.PodIP(ip=ip) for ip in s.ips[1:]])
    options = pb.NamespaceOption(network=_pb_mode(c.namespaces.network), pid=_pb_mode(c.namespaces.pid),
                                 ipc=_pb_mode(c.namespaces.ipc))
    return pb.PodSandboxStatus(id=s.id, metadata=metadata_pb(c.metadata), state=_state_pb(s.state),
                               created_at=s.created_at_ns, network=network,
                               linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=options)),
                               labels=c.labels, annotations=c.annotations, runtime_handler=c.runtime_handler)


def sandbox_pb(s: Sandbox) -> pb.PodSandbox:
    c = s.config
    return pb.PodSandbox(id=s.id, metadata=metadata_pb(c.metadata), state=_state_pb(s.state),
                         created_at=s.created_at_ns, labels=c.labels, annotations=c.annotations,
                         runtime_handler=c.runtime_handler)
