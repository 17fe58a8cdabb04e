"""containerd's default Linux spec, as its client populates it (populateDefaultUnixSpec): what
`dock run` and the builder's RUN steps start from, then change with their own options."""

from __future__ import annotations

import copy
from typing import Any

from dockyard_common import capabilities

Spec = dict[str, Any]  # an OCI runtime spec as its JSON object

OCI_VERSION = "1.0.2-dev"  # the runtime-spec version containerd 1.6 writes
# The Any type URL of a container record's spec, as containerd's client writes it.
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
# The Any type URL of a task's new linux.resources in Tasks/Update (UpdateTaskRequest.resources).
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
# The container label where containerd's client (and `dock run`) keeps the image's StopSignal.
STOP_SIGNAL_LABEL = "io.containerd.image.config.stop-signal"
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
DEFAULT_CAPABILITIES = list(capabilities.DEFAULT)
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NAMESPACES = ["pid", "ipc", "uts", "mount", "network"]
DEFAULT_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
]
# (major, minor or None for all) of the character devices every container may use.
DEFAULT_DEVICES: list[tuple[int, int | None]] = [
    (1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1),  # null random full tty zero urandom console
    (136, None),  # /dev/pts/*
    (5, 2),  # ptmx
]


def default_spec(namespace: str, cid: str) -> Spec:
    """containerd's populateDefaultUnixSpec: what every Linux container starts from."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "mounts": copy.deepcopy(DEFAULT_MOUNTS),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": f"/{namespace}/{cid}",
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def process_of(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("process", {})  # type: ignore[no-any-return]


def linux_of(spec: Spec) -> dict[str, Any]:
    return spec.setdefault("linux", {})  # type: ignore[no-any-return]


def resources_of(spec: Spec) -> dict[str, Any]:
    return linux_of(spec).setdefault("resources", {})  # type: ignore[no-any-return]


def without_namespace(spec: Spec, kind: str) -> None:
    """Share the host's namespace of this kind (containerd's WithHostNamespace)."""
    linux = linux_of(spec)
    linux["namespaces"] = [n for n in linux.get("namespaces", []) if n.get("type") != kind]


def with_default_unix_devices(spec: Spec) -> None:
    """Allow the usual character devices in the device cgroup (containerd's WithDefaultUnixDevices)."""
    devices = resources_of(spec).setdefault("devices", [])
    for major, minor in DEFAULT_DEVICES:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor is not None:
            rule["minor"] = minor
        devices.append(rule)
