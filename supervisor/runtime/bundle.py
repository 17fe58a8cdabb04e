"""A task's bundle: <state>/tasks/<namespace>/<id>/, what a shim needs and a restart reads back.

    config.json         the container's OCI spec, as stored with the container
    rootfs/             where the shim mounts the snapshot
    log                 a FIFO the shim writes its log into (containerd's contract)
    address             the shim's ttrpc address (written by the shim, and by us after start)
    shim-binary-path    which shim binary serves this task (for `delete` after a crash)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_common.cgroups import normalize_path
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from dockyard_common.jsonutil import json_object
from supervisor import identifiers


@dataclass(frozen=True)
class Bundle:
    path: Path
    namespace: str
    id: str

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def log_fifo(self) -> Path:
        return self.path / "log"

    def read(self, name: str) -> str:
        try:
            return (self.path / name).read_text().strip()
        except FileNotFoundError:
            return ""

    def write(self, name: str, value: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(value)
        os.replace(tmp, self.path / name)


def bundle_path(state: Path, namespace: str, cid: str) -> Path:
    identifiers.validate_namespace(namespace)
    identifiers.validate(cid, what="task id")
    return state / "tasks" / namespace / cid


CGROUP_PARENT = "dockyard"


def confine_cgroup(spec: dict[str, Any], namespace: str, cid: str) -> bytes:
    """The spec with its cgroup placed under our own parent (`/dockyard/...`).

    Dockyard's shim does this itself; a foreign shim (runc's) takes the path as given, and
    the host's cgroups outside our parent are not ours to create.
    """
    linux = spec.setdefault("linux", {})
    if not isinstance(linux, dict):
        raise InvalidArgument("spec: linux: expected an object")
    path = check_cgroups_path(spec) or f"/{namespace}/{cid}"
    # Normalised first: a foreign shim resolves `..` itself, so "/dockyard/../x" would leave our parent.
    rel = normalize_path(path)
    linux["cgroupsPath"] = "/" + (rel if rel.startswith(CGROUP_PARENT + "/") else f"{CGROUP_PARENT}/{rel}")
    return json.dumps(spec).encode()


def check_cgroups_path(spec: dict[str, Any]) -> str:
    """The spec's `linux.cgroupsPath` ("" when unset), refused (InvalidArgument) when it is not a
    plain path below our parent: `..`, a systemd "slice:prefix:name", NUL, too long. Checked
    here, before a shim starts, for every runtime; our shim checks it again where it uses it."""
    linux = spec.get("linux")
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if path is None or path == "":
        return ""
    if not isinstance(path, str):
        raise InvalidArgument(f"spec: linux.cgroupsPath: expected a string, got {json.dumps(path)[:80]}")
    if ":" in path:
        raise InvalidArgument(f"cgroupsPath {path[:80]!r}: the systemd cgroup driver is not supported")
    normalize_path(path)
    return path


def parse_spec(spec_json: bytes) -> dict[str, Any]:
    return json_object(spec_json, "container spec", InvalidArgument)


def _host_id_of_root(mappings: Any) -> int | None:
    """The host id a user namespace's id 0 maps to, from an OCI id mapping list (None: unmapped,
    or malformed, which the runtime reports itself)."""
    for m in mappings if isinstance(mappings, list) else []:
        try:
            inside, host, size = int(m["containerID"]), int(m["hostID"]), int(m["size"])
        except (KeyError, TypeError, ValueError):
            return None
        if inside <= 0 < inside + size:
            return host - inside
    return None


def check_reachable_by_remapped_root(spec: dict[str, Any], bundle: Path) -> None:
    """Refuse a spec whose new user namespace maps root to a host uid that cannot reach the
    bundle: the runtime would fail later with a bare EACCES when it mounts the rootfs.

    In a user namespace the container's root has no privilege over the host's directories
    (they belong to an unmapped uid), so every directory above the bundle must be searchable by
    it; containerd makes its state dirs 0711 for this reason, and so does dockyardd.
    """
    linux = spec.get("linux")
    if not isinstance(linux, dict):
        return
    namespaces = linux.get("namespaces")
    if not isinstance(namespaces, list) or not any(isinstance(n, dict) and n.get("type") == "user" for n in namespaces):
        return
    uid, gid = _host_id_of_root(linux.get("uidMappings")), _host_id_of_root(linux.get("gidMappings"))
    if not uid or gid is None:  # unmapped root, or root mapped to host root: nothing to check
        return
    for d in reversed(bundle.parents):
        try:
            st = d.stat()
        except FileNotFoundError:
            break  # made by create_bundle, searchable
        searchable = (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)
                      or (st.st_gid == gid and st.st_mode & 0o010))
        if not searchable:
            raise FailedPrecondition(
                f"the container's root (host uid {uid}, user namespace) cannot reach its bundle: {d} is mode "
                f"{st.st_mode & 0o7777:04o}; the directories above the state dir must be searchable (0711)")


def create_bundle(state: Path, namespace: str, cid: str, spec_json: bytes) -> Bundle:
    """Stage the bundle in a hidden dir and rename it into place (habit 4)."""
    spec = parse_spec(spec_json)
    path = bundle_path(state, namespace, cid)
    check_cgroups_path(spec)
    check_reachable_by_remapped_root(spec, path)
    if path.exists():
        raise AlreadyExists(f"task {cid}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    staging = path.parent / f".new-{cid}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o711)
    (staging / "config.json").write_bytes(spec_json)
    (staging / "rootfs").mkdir(mode=0o755)
    os.mkfifo(staging / "log", 0o600)
    os.rename(staging, path)
    return Bundle(path, namespace, cid)


def list_bundles(state: Path) -> list[Bundle]:
    out = []
    tasks = state / "tasks"
    for ns_dir in sorted(tasks.iterdir()) if tasks.is_dir() else []:
        if ns_dir.name.startswith("."):  # no namespace (e.g. the shims' zygote socket dir)
            continue
        for task_dir in sorted(ns_dir.iterdir()) if ns_dir.is_dir() else []:
            if not task_dir.name.startswith("."):
                out.append(Bundle(task_dir, ns_dir.name, task_dir.name))
    return out


def remove_bundle(bundle: Bundle) -> None:
    """Unmount what a dead shim may have left on rootfs, then delete by renaming first."""
    if os.path.ismount(bundle.rootfs):
        subprocess.run(["umount", "--recursive", "--lazy", str(bundle.rootfs)], capture_output=True, check=False)
    if not bundle.path.exists():
        return
    doomed = bundle.path.parent / f".rm-{bundle.id}"
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(bundle.path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
