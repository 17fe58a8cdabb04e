"""A CRI container's OCI spec: containerd's default spec, the image's run defaults merged with the
CRI config, and the pod's namespaces joined.

- Process: the CRI `command` replaces the image's Entrypoint, and with it its Cmd; `args` replace
  the Cmd (containerd's rule). Env: the image's, then the CRI's, a later key winning. Working dir:
  the CRI's, else the image's, else `/`. The user was resolved by the caller (`User`).
- Namespaces (the pod's sandbox process is `pause_pid`): network, IPC and UTS are the pause's
  (`/proc/<pid>/ns/*`) unless the pod uses the host's (NODE: the namespace is left out, the
  container runs in the daemon's); PID per the container's NamespaceOption: POD joins the pause's,
  CONTAINER gets its own, NODE the host's, TARGET another container's (`target_pid`). The network
  namespace itself is joined by the daemon's network wiring at task create (the label
  `dockyard.network/container` naming the sandbox), which also binds the pod's resolv.conf and
  hosts; a host-network pod's containers get the host's.
- /dev/shm is the pod's shared tmpfs (or the host's for a host-IPC pod); /etc/hostname the pod's.
- The cgroup is `<pod cgroup parent>/<container id>` (containerd's layout, cgroupfs driver).
- Security: capabilities added/dropped, read-only root, no_new_privs, masked and read-only paths
  (the defaults unless the CRI lists its own), seccomp (RuntimeDefault, localhost, unconfined);
  privileged: every capability we have, every device, nothing masked, no seccomp. Devices are
  looked up on the host by the caller (`host_device`) and made and allowed in the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockyard_common import attachsock, capabilities, ocispec
from dockyard_common.devnode import device_node
from dockyard_common.errors import InvalidArgument
from supervisor.cri.container_types import ContainerConfig, Propagation
from supervisor.cri.podfiles import PodPaths
from supervisor.cri.sandbox_spec import (
    CONTAINER_TYPE,
    SANDBOX_ID,
    SANDBOX_IMAGE_NAME,
    SANDBOX_NAME,
    SANDBOX_NAMESPACE,
    SANDBOX_UID,
    apply_privileged,
    apply_seccomp,
    cgroups_path,
    restrict_oom_score_adj,
    shm_mount,
)
from supervisor.cri.sandbox_types import NamespaceMode, PodConfig
from supervisor.cri.shimgroups import GROUP_ANNOTATION

CONTAINER_NAME = "io.kubernetes.cri.container-name"  # containerd's annotation
PROPAGATION = {Propagation.PRIVATE: "rprivate", Propagation.HOST_TO_CONTAINER: "rslave",
               Propagation.BIDIRECTIONAL: "rshared"}
HOST_FILES = ("/etc/hosts", "/etc/resolv.conf")  # bound from the host for a host-network pod


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class HostDevice:
    """A device the CRI asked for, as found on the host (`host_device` reads it)."""

    container_path: str
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int  # the permission bits
    permissions: str  # cgroup access: letters of "rwm"


def host_device(container_path: str, host_path: str, permissions: str) -> HostDevice:
    """Blocking: stat the host's device (InvalidArgument when it is none)."""
    node = device_node(host_path)
    return HostDevice(container_path, node.kind, node.major, node.minor, node.mode, permissions)


@dataclass(frozen=True)
class PodContext:
    """What the container takes from its pod."""

    id: str
    config: PodConfig
    pause_pid: int
    files: PodPaths | None
    shim_group: str = ""  # the pod's shim group (shimgroups.py): its containers join that shim


def process_args(config: ContainerConfig, image_config: dict[str, Any]) -> list[str]:
    command, args = list(config.command), list(config.args)
    if not command:
        command = list(image_config.get("Entrypoint") or [])
        if not args:
            args = list(image_config.get("Cmd") or [])
    if not command and not args:
        raise InvalidArgument(f"container {config.metadata.name!r}: no command specified, and the image "
                              f"{config.image} has no entrypoint or command")
    return command + args


def merged_env(image_env: list[str], envs: tuple[tuple[str, str], ...]) -> list[str]:
    out: dict[str, str] = {}
    for item in image_env or ocispec.DEFAULT_ENV:
        key, _, value = item.partition("=")
        out[key] = value
    for key, value in envs:
        out.pop(key, None)  # a later key wins, and takes the later place
        out[key] = value
    return [f"{k}={v}" for k, v in out.items()]


def container_spec(config: ContainerConfig, pod: PodContext, cid: str, namespace: str, image_ref: str,
                   image_config: dict[str, Any], user: User, target_pid: int = 0,
                   own_oom_score_adj: int | None = None, devices: tuple[HostDevice, ...] = ()) -> dict[str, Any]:
    """The container's OCI spec; InvalidArgument for what cannot be honoured."""
    spec = ocispec.default_spec(namespace, cid)
    ocispec.with_default_unix_devices(spec)
    process, linux = ocispec.process_of(spec), ocispec.linux_of(spec)
    process.update(args=process_args(config, image_config),
                   env=merged_env(list(image_config.get("Env") or []), config.envs),
                   cwd=config.working_dir or image_config.get("WorkingDir") or "/",
                   terminal=config.tty, noNewPrivileges=config.security.no_new_privs)
    process["user"] = {"uid": user.uid, "gid": user.gid,
                       "additionalGids": sorted({user.gid, *user.additional_gids})}
    _namespaces(spec, config, pod, target_pid)
    _mounts(spec, config, pod)
    linux["cgroupsPath"] = cgroups_path(pod.config, cid, namespace)
    _resources(spec, config, own_oom_score_adj)
    _security(spec, config)
    if not config.security.privileged:  # a privileged container has every device already
        _devices(spec, devices)
    spec["annotations"] = {
        CONTAINER_TYPE: "container", SANDBOX_ID: pod.id, SANDBOX_NAME: pod.config.metadata.name,
        SANDBOX_NAMESPACE: pod.config.metadata.namespace, SANDBOX_UID: pod.config.metadata.uid,
        CONTAINER_NAME: config.metadata.name, SANDBOX_IMAGE_NAME: image_ref,
    }
    if pod.shim_group:
        spec["annotations"][GROUP_ANNOTATION] = pod.shim_group
    if config.stdin:  # the shim keeps the init's stdin for attached clients (CRI Attach)
        spec["annotations"][attachsock.OPEN_STDIN] = "true"
    return spec


def _namespaces(spec: dict[str, Any], config: ContainerConfig, pod: PodContext, target_pid: int) -> None:
    linux = spec["linux"]
    pod_ns = pod.config.namespaces
    joined: dict[str, str | None] = {}  # type → path (None: the host's, i.e. left out)
    host_net = pod_ns.network == NamespaceMode.NODE
    joined["network"] = None if host_net else ""  # "": the wiring joins the pod's at task create
    joined["uts"] = None if host_net else f"/proc/{pod.pause_pid}/ns/uts"
    joined["ipc"] = None if pod_ns.ipc == NamespaceMode.NODE else f"/proc/{pod.pause_pid}/ns/ipc"
    pid_mode = config.security.namespaces.pid
    if pid_mode == NamespaceMode.NODE:
        joined["pid"] = None
    elif pid_mode == NamespaceMode.POD:
        joined["pid"] = None if pod_ns.pid == NamespaceMode.NODE else f"/proc/{pod.pause_pid}/ns/pid"
    elif pid_mode == NamespaceMode.TARGET:
        if target_pid <= 0:
            raise InvalidArgument("namespace_options.pid TARGET: the target container is not running")
        joined["pid"] = f"/proc/{target_pid}/ns/pid"
    out = []
    for ns in linux["namespaces"]:
        kind = ns["type"]
        if kind not in joined:
            out.append(ns)
        elif (path := joined[kind]) is not None:
            out.append({"type": kind, "path": path} if path else ns)
    if pod.config.userns is not None:
        # The pod's user namespace, joined last by the shim; the mappings say what it maps (the
        # bundle's reachability check and file owners read them).
        out.append({"type": "user", "path": f"/proc/{pod.pause_pid}/ns/user"})
        linux.update(pod.config.userns.spec_mappings())
    linux["namespaces"] = out  # no hostname: the pause process set it in the UTS namespace joined


def _mounts(spec: dict[str, Any], config: ContainerConfig, pod: PodContext) -> None:
    mounts: list[dict[str, Any]] = spec["mounts"]
    wanted = {m.container_path for m in config.mounts}
    if pod.config.namespaces.ipc == NamespaceMode.NODE:
        mounts[:] = [m for m in mounts if m["destination"] not in ("/dev/shm", "/dev/mqueue")]
        mounts.append(shm_mount("/dev/shm"))
    elif pod.files is not None and pod.files.shm is not None:
        mounts[:] = [m for m in mounts if m["destination"] != "/dev/shm"]
        mounts.append(shm_mount(str(pod.files.shm)))
    extra: list[tuple[str, str]] = []
    if pod.files is not None:
        extra.append(("/etc/hostname", str(pod.files.hostname)))
    if pod.config.namespaces.network == NamespaceMode.NODE:
        extra += [(f, f) for f in HOST_FILES]
    for dest, source in extra:
        if dest not in wanted:
            mounts.append({"destination": dest, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate", "rw" if dest == "/etc/hostname" else "ro"]})
    # The CRI's mounts last: over the defaults they name (containerd drops those defaults).
    mounts[:] = [m for m in mounts if m["destination"] not in wanted]
    for m in config.mounts:
        options = ["rbind", PROPAGATION[m.propagation], "ro" if m.readonly else "rw"]
        if m.recursive_read_only:
            options.append("rro")  # runc's name: the sub-mounts read-only too (mount_setattr)
        mounts.append({"destination": m.container_path, "type": "bind", "source": m.host_path,
                       "options": options})
    if any(m.propagation != Propagation.PRIVATE for m in config.mounts):
        # a slave or shared mount needs a root that propagates (runc's rootfsPropagation)
        spec["linux"]["rootfsPropagation"] = "rshared" if any(
            m.propagation == Propagation.BIDIRECTIONAL for m in config.mounts) else "rslave"


def container_spec_resources(spec: dict[str, Any], config: ContainerConfig) -> dict[str, Any]:
    """UpdateContainerResources: `spec`'s cpu and memory set to the config's (others kept); the
    new linux.resources, as a task's Update takes them."""
    resources = spec.setdefault("linux", {}).setdefault("resources", {})
    resources.pop("cpu", None)
    resources.pop("memory", None)
    _resources(spec, config, None, oom=False)
    return resources  # type: ignore[no-any-return]


def _resources(spec: dict[str, Any], config: ContainerConfig, own_oom_score_adj: int | None,
               oom: bool = True) -> None:
    r = config.resources
    resources = spec["linux"]["resources"]
    cpu: dict[str, Any] = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        resources["cpu"] = cpu
    if r.memory_limit:
        resources["memory"] = {"limit": r.memory_limit}
    if r.oom_score_adj and oom:
        spec["process"]["oomScoreAdj"] = restrict_oom_score_adj(r.oom_score_adj, own_oom_score_adj)


def _security(spec: dict[str, Any], config: ContainerConfig) -> None:
    sec = config.security
    process, linux = spec["process"], spec["linux"]
    if sec.readonly_rootfs:
        spec["root"]["readonly"] = True
    if sec.privileged:
        apply_privileged(spec)
        return
    if sec.add_capabilities or sec.drop_capabilities:
        try:
            caps = capabilities.tweak(process["capabilities"]["bounding"], sec.add_capabilities,
                                      sec.drop_capabilities)
        except capabilities.UnknownCapability as exc:
            raise InvalidArgument(f"security_context.capabilities: {exc}") from None
        process["capabilities"] = {"bounding": caps, "effective": list(caps), "permitted": list(caps)}
    if sec.masked_paths:
        linux["maskedPaths"] = list(sec.masked_paths)
    if sec.readonly_paths:
        linux["readonlyPaths"] = list(sec.readonly_paths)
    apply_seccomp(spec, sec.seccomp)  # after the capabilities: the default profile depends on them


def _devices(spec: dict[str, Any], devices: tuple[HostDevice, ...]) -> None:
    """The CRI's devices, as the caller found them on the host: made in the container and
    allowed in its device cgroup (containerd's WithDevices)."""
    linux = spec["linux"]
    for d in devices:
        linux.setdefault("devices", []).append(
            {"path": d.container_path, "type": d.kind, "major": d.major, "minor": d.minor,
             "fileMode": d.mode, "uid": 0, "gid": 0})
        linux["resources"]["devices"].append(
            {"allow": True, "type": d.kind, "major": d.major, "minor": d.minor, "access": d.permissions})
