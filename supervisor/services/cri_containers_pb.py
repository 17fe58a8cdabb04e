"""CRI container messages ⇄ supervisor.cri.container_types: the request is checked here, so a bad
config is an InvalidArgument naming the field before anything is made."""

from __future__ import annotations

import os

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common.errors import InvalidArgument
from supervisor.cri.container_types import (
    ContainerConfig,
    ContainerMetadata,
    ContainerNamespaces,
    ContainerSecurity,
    ContainerState,
    ContainerUsage,
    CriContainer,
    DeviceSpec,
    MountSpec,
    Propagation,
    Resources,
    SupplementalGroupsPolicy,
)
from supervisor.cri.sandbox_types import NamespaceMode
from supervisor.services.cri_sandbox_pb import seccomp_of, user_namespace_of

WHERE = "container config"
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144  # the kernel's range (cgroup v1 cpu.shares)
MIN_CPU_PERIOD, MAX_CPU_PERIOD = 1000, 1_000_000  # CFS bandwidth: 1 ms .. 1 s; a quota is at least 1 ms
MIN_MEMORY = 6 << 20  # Docker's minimum: below it a container is OOM-killed before it runs anything


def container_config(config: pb.ContainerConfig) -> ContainerConfig:
    if not config.HasField("metadata") or not config.metadata.name:
        raise InvalidArgument(f"{WHERE}: metadata.name must not be empty")
    if not config.image.image:
        raise InvalidArgument(f"{WHERE}: image must not be empty")
    if config.log_path and os.path.isabs(config.log_path):
        raise InvalidArgument(f"{WHERE}: log_path {config.log_path!r} must be relative to the pod's log_directory")
    envs = []
    for i, kv in enumerate(config.envs):
        if not kv.key or "=" in kv.key:
            raise InvalidArgument(f"{WHERE}: envs[{i}]: key {kv.key!r} is not a variable name")
        value = kv.value.decode("utf-8", "surrogateescape") if isinstance(kv.value, bytes) else str(kv.value)
        envs.append((kv.key, value))
    linux = config.linux
    return ContainerConfig(
        metadata=ContainerMetadata(config.metadata.name, config.metadata.attempt), image=config.image.image,
        command=tuple(config.command), args=tuple(config.args), working_dir=_working_dir(config.working_dir),
        envs=tuple(envs), mounts=tuple(_mount(i, m) for i, m in enumerate(config.mounts)),
        devices=tuple(_device(i, d) for i, d in enumerate(config.devices)),
        labels=dict(config.labels), annotations=dict(config.annotations), log_path=config.log_path,
        tty=config.tty, stdin=config.stdin, stdin_once=config.stdin_once, resources=resources_of(linux.resources),
        security=_security(linux.security_context))


def _working_dir(path: str) -> str:
    if path and not path.startswith("/"):
        raise InvalidArgument(f"{WHERE}: working_dir {path!r} must be an absolute path")
    return path


def _mount(i: int, m: pb.Mount) -> MountSpec:
    where = f"{WHERE}: mounts[{i}]"
    image = m.image.image if m.HasField("image") else ""
    if not m.container_path.startswith("/"):
        raise InvalidArgument(f"{where}: container_path must be an absolute path")
    try:
        propagation = Propagation(m.propagation)
    except ValueError:
        raise InvalidArgument(f"{where}: unknown propagation {m.propagation}") from None
    if m.recursive_read_only:
        # As containerd: rro makes a read-only mount read-only all the way down, and a sub-mount
        # propagated in later would not be.
        if not m.readonly:
            raise InvalidArgument(f"{where}: recursive_read_only needs readonly to be true")
        if propagation != Propagation.PRIVATE:
            raise InvalidArgument(f"{where}: recursive_read_only needs propagation PROPAGATION_PRIVATE")
    rro = m.recursive_read_only
    if not image:
        if m.image_sub_path:
            raise InvalidArgument(f"{where}: image_sub_path is only for an image volume (image is not set)")
        if not m.host_path.startswith("/"):
            raise InvalidArgument(f"{where}: host_path must be an absolute path")
        return MountSpec(os.path.normpath(m.container_path), m.host_path, m.readonly, propagation,
                         recursive_read_only=rro)
    # An image volume (KEP 4639): the image's tree, read-only by definition.
    if m.host_path:
        raise InvalidArgument(f"{where}: host_path and image are mutually exclusive")
    if not m.readonly:
        raise InvalidArgument(f"{where}: an image volume is read-only: readonly must be true")
    sub = m.image_sub_path
    if sub and (sub.startswith("/") or ".." in sub.split("/")):
        raise InvalidArgument(f"{where}: image_sub_path {sub!r} must be a relative path inside the image")
    return MountSpec(os.path.normpath(m.container_path), "", True, propagation, image=image,
                     image_sub_path=os.path.normpath(sub) if sub else "", recursive_read_only=rro)


def _device(i: int, d: pb.Device) -> DeviceSpec:
    where = f"{WHERE}: devices[{i}]"
    if not d.host_path.startswith("/") or not d.container_path.startswith("/"):
        raise InvalidArgument(f"{where}: host_path and container_path must be absolute paths")
    permissions = d.permissions or "rwm"
    if not set(permissions) <= set("rwm"):
        raise InvalidArgument(f"{where}: permissions {d.permissions!r} must be letters of rwm")
    return DeviceSpec(d.container_path, d.host_path, permissions)


def resources_of(r: pb.LinuxContainerResources) -> Resources:
    for name in ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes"):
        if getattr(r, name) < 0 and not (name == "cpu_quota" and r.cpu_quota == -1):
            raise InvalidArgument(f"{WHERE}: resources.{name} must not be negative")
    # What the kernel would refuse (or, for shares, silently clamp) at the start: said at create.
    if r.cpu_shares and not MIN_CPU_SHARES <= r.cpu_shares <= MAX_CPU_SHARES:
        raise InvalidArgument(f"{WHERE}: resources.cpu_shares {r.cpu_shares} must be within "
                              f"{MIN_CPU_SHARES}..{MAX_CPU_SHARES}")
    if r.cpu_period and not MIN_CPU_PERIOD <= r.cpu_period <= MAX_CPU_PERIOD:
        raise InvalidArgument(f"{WHERE}: resources.cpu_period {r.cpu_period} must be within "
                              f"{MIN_CPU_PERIOD}..{MAX_CPU_PERIOD} (microseconds)")
    if r.cpu_quota > 0 and r.cpu_quota < MIN_CPU_PERIOD:
        raise InvalidArgument(f"{WHERE}: resources.cpu_quota {r.cpu_quota} must be at least {MIN_CPU_PERIOD} "
                              "(microseconds), or -1 for none")
    if r.memory_limit_in_bytes and r.memory_limit_in_bytes < MIN_MEMORY:
        raise InvalidArgument(f"{WHERE}: resources.memory_limit_in_bytes {r.memory_limit_in_bytes} is below "
                              f"the minimum of {MIN_MEMORY >> 20} MiB")
    if r.oom_score_adj and not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument(f"{WHERE}: resources.oom_score_adj must be within -1000..1000")
    return Resources(r.cpu_period, r.cpu_quota, r.cpu_shares, r.memory_limit_in_bytes, r.oom_score_adj,
                     r.cpuset_cpus, r.cpuset_mems)


def _mode(value: int, what: str) -> NamespaceMode:
    try:
        return NamespaceMode(value)
    except ValueError:
        raise InvalidArgument(f"{WHERE}: namespace_options.{what}: unknown mode {value}") from None


def _security(s: pb.LinuxContainerSecurityContext) -> ContainerSecurity:
    for field in ("run_as_user", "run_as_group"):
        if s.HasField(field) and getattr(s, field).value < 0:
            raise InvalidArgument(f"{WHERE}: security_context.{field} must not be negative")
    if s.HasField("run_as_group") and not (s.HasField("run_as_user") or s.run_as_username):
        raise InvalidArgument(f"{WHERE}: security_context.run_as_group needs run_as_user or run_as_username")
    if any(g < 0 for g in s.supplemental_groups):
        raise InvalidArgument(f"{WHERE}: security_context.supplemental_groups must not be negative")
    try:
        groups_policy = SupplementalGroupsPolicy(s.supplemental_groups_policy)
    except ValueError:
        raise InvalidArgument(f"{WHERE}: security_context.supplemental_groups_policy: unknown policy "
                              f"{s.supplemental_groups_policy} (Merge 0 or Strict 1)") from None
    o = s.namespace_options
    pid = _mode(o.pid, "pid")
    if pid == NamespaceMode.TARGET and not o.target_id:
        raise InvalidArgument(f"{WHERE}: namespace_options.pid TARGET needs target_id")
    namespaces = ContainerNamespaces(_mode(o.network, "network"), pid, _mode(o.ipc, "ipc"), o.target_id,
                                     o.HasField("userns_options"), user_namespace_of(o, WHERE))
    return ContainerSecurity(
        privileged=s.privileged, run_as_user=s.run_as_user.value if s.HasField("run_as_user") else None,
        run_as_group=s.run_as_group.value if s.HasField("run_as_group") else None,
        run_as_username=s.run_as_username, supplemental_groups=tuple(s.supplemental_groups),
        supplemental_groups_policy=groups_policy, readonly_rootfs=s.readonly_rootfs, no_new_privs=s.no_new_privs,
        add_capabilities=tuple(s.capabilities.add_capabilities),
        drop_capabilities=tuple(s.capabilities.drop_capabilities), seccomp=seccomp_of(s, WHERE),
        masked_paths=tuple(s.masked_paths), readonly_paths=tuple(s.readonly_paths), namespaces=namespaces)


_STATES = {ContainerState.CREATED: "CONTAINER_CREATED", ContainerState.RUNNING: "CONTAINER_RUNNING",
           ContainerState.EXITED: "CONTAINER_EXITED", ContainerState.UNKNOWN: "CONTAINER_UNKNOWN"}
_PB_PROPAGATION = {Propagation.PRIVATE: "PROPAGATION_PRIVATE",
                   Propagation.HOST_TO_CONTAINER: "PROPAGATION_HOST_TO_CONTAINER",
                   Propagation.BIDIRECTIONAL: "PROPAGATION_BIDIRECTIONAL"}


def state_pb(state: ContainerState) -> pb.ContainerState:
    return pb.ContainerState.Value(_STATES[state])


def state_of(value: int) -> ContainerState:
    try:
        return ContainerState(value)
    except ValueError:
        raise InvalidArgument(f"list containers: unknown state {value}") from None


def _metadata_pb(c: CriContainer) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=c.config.metadata.name, attempt=c.config.metadata.attempt)


def container_pb(c: CriContainer) -> pb.Container:
    return pb.Container(id=c.id, pod_sandbox_id=c.pod_id, metadata=_metadata_pb(c),
                        image=pb.ImageSpec(image=c.image), image_ref=c.image_id, state=state_pb(c.state),
                        created_at=c.created_at_ns, labels=c.config.labels, annotations=c.config.annotations,
                        image_id=c.image_id)


def status_pb(c: CriContainer) -> pb.ContainerStatus:
    mounts = [pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                       propagation=pb.MountPropagation.Value(_PB_PROPAGATION[m.propagation]),
                       image=pb.ImageSpec(image=m.image, image_ref=m.image_ref) if m.image else None,
                       image_sub_path=m.image_sub_path, recursive_read_only=m.recursive_read_only)
              for m in c.config.mounts]
    user = pb.ContainerUser(linux=pb.LinuxContainerUser(
        uid=c.user.uid, gid=c.user.gid, supplemental_groups=c.user.supplemental_groups)) if c.user else None
    return pb.ContainerStatus(
        id=c.id, metadata=_metadata_pb(c), state=state_pb(c.state), created_at=c.created_at_ns,
        started_at=c.started_at_ns, finished_at=c.finished_at_ns, exit_code=c.exit_code,
        image=pb.ImageSpec(image=c.image), image_ref=c.image_id, image_id=c.image_id, reason=c.reason,
        message=c.message, labels=c.config.labels, annotations=c.config.annotations, mounts=mounts,
        log_path=c.log_path, user=user)


def _u64(value: int | None) -> pb.UInt64Value | None:
    return pb.UInt64Value(value=value) if value is not None else None


def stats_pb(u: ContainerUsage) -> pb.ContainerStats:
    c, ts = u.container, u.timestamp_ns
    attributes = pb.ContainerAttributes(id=c.id, metadata=_metadata_pb(c), labels=c.config.labels,
                                        annotations=c.config.annotations)
    out = pb.ContainerStats(attributes=attributes)
    if u.cpu_usage_ns is not None:
        out.cpu.CopyFrom(pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(u.cpu_usage_ns)))
    if u.memory_working_set is not None:
        out.memory.CopyFrom(pb.MemoryUsage(timestamp=ts, working_set_bytes=_u64(u.memory_working_set),
                                           usage_bytes=_u64(u.memory_usage), rss_bytes=_u64(u.memory_rss),
                                           available_bytes=_u64(u.memory_available)))
    if u.writable_bytes is not None:
        out.writable_layer.CopyFrom(pb.FilesystemUsage(
            timestamp=ts, fs_id=pb.FilesystemIdentifier(mountpoint=u.fs_mountpoint),
            used_bytes=_u64(u.writable_bytes), inodes_used=_u64(u.writable_inodes)))
    return out
