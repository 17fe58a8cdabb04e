"""The CRI runtime's identity, readiness and features (RuntimeService Version and Status)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import idmap, linux
from dockyard_common.version import VERSION
from supervisor.network.cni import DEFAULT_PLUGIN_DIRS

RUNTIME_NAME = "dockyard"
RUNTIME_API_VERSION = "v1"
# The kubelet's CRI client version this answers to (containerd reports the same).
KUBELET_API_VERSION = "0.1.0"
RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"
# The plugins a pod network needs (bridge for the pod's link, host-local for its address).
POD_NETWORK_PLUGINS = ("bridge", "host-local", "loopback")


@dataclass(frozen=True)
class RuntimeVersion:
    version: str = KUBELET_API_VERSION
    runtime_name: str = RUNTIME_NAME
    runtime_version: str = VERSION
    runtime_api_version: str = RUNTIME_API_VERSION


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


def conditions(plugin_dirs: Sequence[Path] = DEFAULT_PLUGIN_DIRS) -> list[Condition]:
    """RuntimeReady: the daemon answers, so its runtime is up. NetworkReady: the CNI plugins a
    pod network needs are installed (kubelet starts no pod that needs a network without it)."""
    missing = [p for p in POD_NETWORK_PLUGINS if not any((d / p).is_file() for d in plugin_dirs)]
    network = Condition(NETWORK_READY, True) if not missing else Condition(
        NETWORK_READY, False, "NetworkPluginNotReady",
        f"CNI plugins {', '.join(missing)} not found in {', '.join(str(d) for d in plugin_dirs)}")
    return [Condition(RUNTIME_READY, True), network]


@dataclass(frozen=True)
class Handler:
    """A runtime handler as Status reports it, with its features."""

    name: str
    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


def recursive_read_only(runtime_name: str, external: Collection[str]) -> bool:
    """Whether containers of `runtime_name` get recursive read-only mounts ("rro"): our shim makes
    them with mount_setattr(2) (Linux 5.12) when the kernel has it; a runtime the daemon's
    [runtimes] maps to another shim binary (`external`) is not asked, so not promised."""
    return runtime_name not in external and linux.has_mount_setattr()


def runtime_handlers(builtin: Mapping[str, str], external: Collection[str], user_namespaces: bool = False
                     ) -> list[Handler]:
    """Every handler RunPodSandbox takes: the built-in names ("" the default; handler -> runtime
    name) and each configured runtime by its own name, as containerd lists its runtimes.
    `user_namespaces`: whether pods may have their own (`user_namespaces_problem`); promised for
    our shim only, as "rro"."""
    names = {**builtin, **{name: name for name in external}}
    return [Handler(name, recursive_read_only(runtime, external), user_namespaces and runtime not in external)
            for name, runtime in names.items()]


def user_namespaces_problem(snapshotter: str, probe_dir: Path | None) -> str | None:
    """Why pods cannot have user namespaces here, or None. Blocking: a child process mounts an
    ID-mapped overlay under `probe_dir` (the caller remembers the answer)."""
    if snapshotter != "overlayfs":
        return f"the {snapshotter} snapshotter cannot ID-map a pod's layers (overlayfs can)"
    if probe_dir is None:
        return "no directory to check ID-mapped mounts in"
    found = idmap.problem_in_subprocess(str(probe_dir))
    return None if found is None else f"ID-mapped overlay layers do not work under {probe_dir}: {found}"
