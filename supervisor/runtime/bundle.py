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

from supervisor import identifiers
from supervisor.errors import AlreadyExists, InvalidArgument


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
    path = str(linux.get("cgroupsPath") or f"/{namespace}/{cid}")
    if ":" in path:
        raise InvalidArgument(f"cgroupsPath {path!r}: the systemd cgroup driver is not supported")
    if not path.lstrip("/").startswith(CGROUP_PARENT + "/"):
        linux["cgroupsPath"] = f"/{CGROUP_PARENT}/{path.lstrip('/')}"
    return json.dumps(spec).encode()


def parse_spec(spec_json: bytes) -> dict[str, Any]:
    try:
        spec = json.loads(spec_json)
    except ValueError as exc:
        raise InvalidArgument(f"container spec is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise InvalidArgument("container spec must be a JSON object")
    return spec


def create_bundle(state: Path, namespace: str, cid: str, spec_json: bytes) -> Bundle:
    """Stage the bundle in a hidden dir and rename it into place (habit 4)."""
    parse_spec(spec_json)
    path = bundle_path(state, namespace, cid)
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
