"""The sandbox container of a pod: its OCI spec and the labels that ask for its network.

The spec starts from containerd's default (dockyard_common/ocispec.py) and runs the sandbox
image's entrypoint (the pause process, which only holds the pod's namespaces). From the pod's
config: the hostname, the namespaces (network/PID/IPC of the pod, or the host's for NODE;
a host-network pod shares the host's UTS namespace too, as under containerd), the cgroup parent
(cgroupfs: `<parent>/<pod id>`), sysctls, the security context (user, groups, read-only root,
privileged, seccomp) and containerd's `io.kubernetes.cri.*` annotations.

The network is not in the spec: the pod's labels ask the daemon's network wiring
(supervisor/network/wiring.py) for the default network, its port mappings and DNS, which makes
the namespace at task create and tears it down when the task goes.

oom_score_adj: containerd gives the sandbox -998; a process may not lower its own score below
its parent's without CAP_SYS_RESOURCE, which this host withholds, so the value is clamped to the
daemon's own (containerd's `restrict_oom_score_adj`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockyard_common import capabilities, ocispec, seccomp
from dockyard_common.cgroups import normalize_path
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.netlabels import BRIDGE, DNS, DNS_OPTIONS, DNS_SEARCH, NETWORKS, PORTS
from dockyard_common.portspec import Published, compact
from supervisor.cri.inputs import read_seccomp_profile
from supervisor.cri.sandbox_types import NamespaceMode, PodConfig

SANDBOX_OOM_SCORE_ADJ = -998  # containerd's defaultSandboxOOMAdj
# containerd's CRI annotations (pkg/cri/annotations), which runtimes and hooks read
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
SANDBOX_LOG_DIR = "io.kubernetes.cri.sandbox-log-directory"
SANDBOX_IMAGE_NAME = "io.kubernetes.cri.image-name"
SELF_OOM = Path("/proc/self/oom_score_adj")


def restrict_oom_score_adj(value: int, own: int | None = None) -> int:
    """`value`, but never below the daemon's own score (which needs CAP_SYS_RESOURCE)."""
    if own is None:
        try:
            own = int(SELF_OOM.read_text().strip())
        except (OSError, ValueError):
            own = 0
    return max(value, own)


def network_labels(config: PodConfig, default_network: str) -> dict[str, str]:
    """The container labels for the pod's network: none for a host-network pod."""
    if config.namespaces.network == NamespaceMode.NODE:
        return {}
    if default_network == "none":
        raise FailedPrecondition("run pod sandbox: this daemon has no default network (--default-network none): "
                                 "pods need one, or host networking")
    labels = {NETWORKS: json.dumps([BRIDGE])}
    if config.ports:
        labels[PORTS] = json.dumps(compact(Published(p.container_port, p.host_port, p.protocol, p.host_ip)
                                           for p in config.ports))
    for key, values in ((DNS, config.dns.servers), (DNS_SEARCH, config.dns.searches),
                        (DNS_OPTIONS, config.dns.options)):
        if values:
            labels[key] = json.dumps(list(values))
    return labels


def cgroups_path(config: PodConfig, pod_id: str, namespace: str) -> str:
    if not config.cgroup_parent:
        return f"/{namespace}/{pod_id}"
    try:
        parent = normalize_path(config.cgroup_parent)
    except InvalidArgument as exc:
        raise InvalidArgument(f"linux.cgroup_parent: {exc} (Dockyard speaks the cgroupfs driver)") from None
    return f"/{parent}/{pod_id}"


def sandbox_spec(config: PodConfig, pod_id: str, namespace: str, image_ref: str,
                 image_config: dict[str, Any], own_oom_score_adj: int | None = None,
                 shm_source: str = "") -> dict[str, Any]:
    """The sandbox container's OCI spec; InvalidArgument for what cannot be honoured.
    `shm_source`: the pod's shared /dev/shm tmpfs on the host (supervisor/cri/podfiles.py)."""
    spec = ocispec.default_spec(namespace, pod_id)
    ocispec.with_default_unix_devices(spec)
    process, linux = ocispec.process_of(spec), ocispec.linux_of(spec)
    args = [*(image_config.get("Entrypoint") or []), *(image_config.get("Cmd") or [])]
    if not args:
        raise InvalidArgument(f"sandbox image {image_ref}: it has no entrypoint or command to run")
    process.update(args=args, env=list(image_config.get("Env") or ocispec.DEFAULT_ENV),
                   cwd=image_config.get("WorkingDir") or "/",
                   oomScoreAdj=restrict_oom_score_adj(SANDBOX_OOM_SCORE_ADJ, own_oom_score_adj))
    modes = config.namespaces
    drop = {t for t, mode in (("network", modes.network), ("pid", modes.pid), ("ipc", modes.ipc))
            if mode == NamespaceMode.NODE}
    if modes.network == NamespaceMode.NODE:
        drop.add("uts")  # the host's hostname too, as containerd does for host-network pods
    else:
        spec["hostname"] = config.hostname
    linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] not in drop]
    if config.userns is not None:
        # The pod's own user namespace, made first: the pod's UTS, IPC and PID namespaces are
        # then its own; the network namespace (the daemon's, for CNI) is joined before it.
        linux["namespaces"].append({"type": "user"})
        linux.update(config.userns.spec_mappings())
    if modes.ipc == NamespaceMode.NODE:
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in ("/dev/shm", "/dev/mqueue")]
        spec["mounts"].append(shm_mount("/dev/shm"))
    elif shm_source:
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"]
        spec["mounts"].append(shm_mount(shm_source))
    linux["cgroupsPath"] = cgroups_path(config, pod_id, namespace)
    if config.sysctls:
        linux["sysctl"] = _sysctls(config)
    _security(spec, config)
    spec["annotations"] = {
        CONTAINER_TYPE: "sandbox", SANDBOX_ID: pod_id, SANDBOX_NAME: config.metadata.name,
        SANDBOX_NAMESPACE: config.metadata.namespace, SANDBOX_UID: config.metadata.uid,
        SANDBOX_LOG_DIR: config.log_directory, SANDBOX_IMAGE_NAME: image_ref,
    }
    return spec


def shm_mount(source: str) -> dict[str, Any]:
    """/dev/shm bound from `source`: the host's, or the pod's shared tmpfs."""
    return {"destination": "/dev/shm", "type": "bind", "source": source,
            "options": ["rbind", "nosuid", "nodev", "noexec"]}


def _sysctls(config: PodConfig) -> dict[str, str]:
    for key in config.sysctls:
        if config.namespaces.network == NamespaceMode.NODE and key.startswith("net."):
            raise InvalidArgument(f"sysctl {key}: a pod on the host's network cannot set network sysctls")
        if config.namespaces.ipc == NamespaceMode.NODE and (key.startswith("kernel.shm") or
                                                            key.startswith("kernel.msg") or key == "kernel.sem"
                                                            or key.startswith("fs.mqueue.")):
            raise InvalidArgument(f"sysctl {key}: a pod on the host's IPC namespace cannot set IPC sysctls")
    return dict(config.sysctls)


def _security(spec: dict[str, Any], config: PodConfig) -> None:
    sec = config.security
    process = spec["process"]
    user = process["user"]
    if sec.run_as_user is not None:
        user["uid"] = sec.run_as_user
    if sec.run_as_group is not None:
        if sec.run_as_user is None:
            raise InvalidArgument("security_context: run_as_group needs run_as_user")
        user["gid"] = sec.run_as_group
    if sec.supplemental_groups:
        user["additionalGids"] = list(sec.supplemental_groups)
    if sec.readonly_rootfs:
        spec["root"]["readonly"] = True
    if sec.privileged:
        apply_privileged(spec)
        return  # containerd: a privileged sandbox runs without a seccomp profile
    apply_seccomp(spec, sec.seccomp)


def apply_privileged(spec: dict[str, Any]) -> None:
    """A privileged pod or container: every capability this daemon has (not every one the kernel
    knows: a host may withhold some, and the runtime cannot give what it lacks), nothing masked or
    read-only in /proc, a writable /sys, all devices allowed. No seccomp: the caller's choice."""
    caps = capabilities.current()
    spec["process"]["capabilities"] = {"bounding": caps, "effective": list(caps), "permitted": list(caps)}
    linux = spec["linux"]
    linux["maskedPaths"], linux["readonlyPaths"] = [], []
    for m in spec["mounts"]:
        if m["destination"] == "/sys":
            m["options"] = [o for o in m["options"] if o != "ro"]
    linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]


def apply_seccomp(spec: dict[str, Any], profile: str) -> None:
    """The seccomp profile "RuntimeDefault", "localhost/<path>" or none ("", "Unconfined")."""
    process, linux = spec["process"], spec["linux"]
    if profile == "RuntimeDefault":
        linux["seccomp"] = seccomp.default_profile().resolve(process["capabilities"]["bounding"])
    elif profile.startswith("localhost/"):
        path = profile.removeprefix("localhost/")
        try:
            linux["seccomp"] = seccomp.parse(read_seccomp_profile(path)).resolve(process["capabilities"]["bounding"])
        except seccomp.ProfileError as exc:
            raise InvalidArgument(f"seccomp profile {path!r}: {exc}") from None
    elif profile not in ("", "Unconfined"):
        raise InvalidArgument(f"seccomp profile {profile!r}: want RuntimeDefault, Unconfined or localhost/<path>")
