"""CreateContainer: the record and the snapshot of a container in a ready pod (CREATED). The
config's user and working directory are resolved in the image's rootfs, host paths of bind
mounts made, image volumes mounted, and the OCI spec built (supervisor/cri/container_spec.py).
Nothing is left behind when it fails; a name (pod, name, attempt) is reserved once.

    cid = await ctrs.create(pod_id, config)
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from dockyard_common import idmap
from dockyard_common.aio import uninterrupted
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.mounts import mounted
from dockyard_common.types import AnyValue, Container, Status
from supervisor.build.copy import Owner, additional_gids, has_workdir, make_workdir, resolve_user
from supervisor.cri.container_records import (
    KIND_CONTAINER,
    METADATA_EXTENSION,
    SANDBOX_LABEL,
    ContainerStore,
    Meta,
    meta_value,
    user_of,
)
from supervisor.cri.container_spec import PodContext, User, container_spec, host_device
from supervisor.cri.container_types import ContainerConfig, SupplementalGroupsPolicy
from supervisor.cri.inputs import check_container, check_log_file
from supervisor.cri.runtime import recursive_read_only
from supervisor.cri.sandbox import KIND_LABEL, SPEC_TYPE_URL, rootfs_labels, unpacked_image
from supervisor.cri.sandbox_types import NamespaceMode, Sandbox, SandboxState, UserNamespace
from supervisor.images.inspect import Inspection
from supervisor.images.leasing import temporary_lease

log = logging.getLogger("dockyard.cri")


class ContainerCreation(ContainerStore):
    async def create(self, pod_id: str, config: ContainerConfig) -> str:
        """Make the container (CREATED) in the running pod `pod_id`; its id. Nothing is left if it fails."""
        check_container(config)
        pod = await self.pods.status(pod_id)
        if pod.state != SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready: cannot create containers in it")
        found = await self.d.images.find(config.image)
        if found is None:
            raise NotFound(f"image {config.image!r} (pull it first)")
        image_ref, image = await unpacked_image(self.d, self.namespace, self.snapshotter, config.image, found)
        if not image.layers:
            raise InvalidArgument(f"image {image_ref}: it has no layers")
        key = (pod.id, config.metadata.name, config.metadata.attempt)
        async with self._reserve:
            for other in await self._all():
                if (other.meta.pod_id, other.config.metadata.name, other.config.metadata.attempt) == key:
                    raise AlreadyExists(f"container name {config.metadata.name!r} (attempt "
                                        f"{config.metadata.attempt}) is reserved for {other.record.id}")
            if key in self._pending:
                raise AlreadyExists(f"container name {config.metadata.name!r} is being created")
            self._pending.add(key)
        cid = secrets.token_hex(32)
        try:
            async with temporary_lease(self.d.leases, self.namespace, self.d.on_lease_release) as lease:
                # Leased until the record refers to it: the collector may run in between.
                with self.volumes.creating(cid):
                    await self._create(pod, config, cid, image_ref, image, lease)
        finally:
            self._pending.discard(key)
        log.info("container %s (%s in pod %s) created", cid, config.metadata.name, pod.id)
        return cid

    async def _create(self, pod: Sandbox, config: ContainerConfig, cid: str, image_ref: str, image: Inspection,
                      lease: str) -> None:
        ns = config.security.namespaces
        if ns.userns_given and ns.userns != pod.config.userns:
            raise InvalidArgument("container config: namespace_options.userns_options must be the pod's "
                                  "(its containers share the pod's user namespace)")
        mounts = await self.d.snapshots.prepare(self.namespace, self.snapshotter, cid, image.layers[-1].chain_id,
                                                labels=rootfs_labels(pod.config), lease=lease)
        try:
            runtime_name = await self._runtime_of(pod)
            _check_recursive_read_only(config, runtime_name, self.pods.settings.runtimes)
            made = await self.volumes.make(cid, config, lease)
            workdir = config.working_dir or str(image.config.config.get("WorkingDir") or "")
            merge = config.security.supplemental_groups_policy == SupplementalGroupsPolicy.MERGE
            user = await asyncio.to_thread(_prepare_rootfs, mounts, self.exec_dir,
                                           _user_text(config, image.config.config), workdir, merge, pod.config.userns)
            user = replace(user, additional_gids=user.additional_gids + config.security.supplemental_groups)
            target_pid = await self._target_pid(config)
            files = self.pods.files.paths(pod.id, pod.config.namespaces.ipc != NamespaceMode.NODE) \
                if self.pods.files is not None else None
            devices = tuple([await asyncio.to_thread(host_device, d.container_path, d.host_path, d.permissions)
                              for d in config.devices])
            spec = container_spec(made.spec_config, PodContext(pod.id, pod.config, pod.pid, files, pod.shim_group), cid,
                                  self.namespace, image_ref, image.config.config, user, target_pid, devices=devices)
            log_path = os.path.join(pod.config.log_directory, config.log_path) \
                if config.log_path and pod.config.log_directory else ""
            if log_path:
                await asyncio.to_thread(check_log_file, log_path)
            await asyncio.to_thread(_make_host_paths, config)
            meta = Meta(made.config.to_json(), pod.id, image_ref, image.config_descriptor.digest, log_path,
                        stop_signal=_signal_of(str(image.config.config.get("StopSignal") or "")),
                        user=user_of(spec))
            record = Container(id=cid, runtime_name=runtime_name,
                               spec=AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode()),
                               labels={KIND_LABEL: KIND_CONTAINER, SANDBOX_LABEL: pod.id, **made.labels},
                               image=image_ref,
                               snapshotter=self.snapshotter, snapshot_key=cid,
                               extensions={METADATA_EXTENSION: meta_value(meta)})
            await self.d.containers.create(self.namespace, record)
        except BaseException:
            await uninterrupted(self.volumes.remove(cid, config))
            with contextlib.suppress(NotFound):
                await uninterrupted(self.d.snapshots.remove(self.namespace, self.snapshotter, cid))
            raise

    async def _runtime_of(self, pod: Sandbox) -> str:
        return (await self.d.containers.get(self.namespace, pod.id)).runtime_name

    async def _target_pid(self, config: ContainerConfig) -> int:
        ns = config.security.namespaces
        if ns.pid != NamespaceMode.TARGET:
            return 0
        target = await self._find(ns.target_id)
        try:
            state = await self.d.tasks.get(self.namespace, target.record.id).state()
        except NotFound:
            return 0
        return state.pid if state.status == Status.RUNNING else 0


def _signal_of(text: str) -> int:
    """An image's StopSignal ("SIGQUIT", "QUIT" or "3"); SIGTERM when none or unknown."""
    if text.isdigit():
        return int(text)
    name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        if text:
            log.warning("image stop signal %r is unknown: using SIGTERM", text)
        return int(signal.SIGTERM)


def _check_recursive_read_only(config: ContainerConfig, runtime_name: str, external: Collection[str]) -> None:
    """A recursive read-only mount only where the pod's runtime handler reports the feature."""
    if any(m.recursive_read_only for m in config.mounts) and not recursive_read_only(runtime_name, external):
        raise InvalidArgument(f"container config: recursive_read_only mounts are not supported by runtime "
                              f"{runtime_name!r} here (Status lists the runtime handlers' features)")


def _make_host_paths(config: ContainerConfig) -> None:
    """A bind mount's missing host path is made as a directory (containerd does likewise)."""
    for m in config.mounts:
        if not m.image and not os.path.exists(m.host_path):
            try:
                os.makedirs(m.host_path, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise InvalidArgument(f"mount {m.host_path}: cannot make it: {exc.strerror}") from None


def _user_text(config: ContainerConfig, image_config: dict[str, Any]) -> str:
    """`user[:group]` to run as: the security context's, else the image's USER, else root."""
    sec = config.security
    if sec.run_as_user is not None:
        text = str(sec.run_as_user)
    elif sec.run_as_username:
        text = sec.run_as_username
    else:
        text = str(image_config.get("User") or "0")
    if sec.run_as_group is not None:
        text = f"{text.split(':', 1)[0]}:{sec.run_as_group}"
    return text


def _prepare_rootfs(mounts: builtins.list[Any], tmp_root: Path, user_text: str, workdir: str,
                    merge_groups: bool = True, userns: UserNamespace | None = None) -> User:
    """Blocking. The user as containerd's WithUser/WithAdditionalGIDs resolve it in the image (a
    name, or a uid's primary group, from /etc/passwd; with `merge_groups` (the Merge policy) the
    groups of /etc/group listing the user), and the working directory made if missing (as runc
    makes it; our shim does not). The rootfs is mounted only when either needs it: not for
    `uid:gid` without a working directory."""
    uid_text, sep, gid_text = user_text.partition(":")
    if sep and uid_text.isdigit() and gid_text.isdigit() and not workdir.strip("/"):
        return User(int(uid_text), int(gid_text))
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Read-only, as containerd's lookup mounts: the unmount of a writable overlay syncs the
    # filesystem under it (most of this call's time); a missing working dir is made after.
    with mounted(mounts, tmp_root, readonly=True) as root:
        owner = resolve_user(user_text, root)
        merge = merge_groups and not sep
        groups = tuple(additional_gids(owner, root, "" if uid_text.isdigit() else uid_text)) if merge else ()
        make = bool(workdir.strip("/")) and not has_workdir(root, workdir)
    if make:
        with mounted(mounts, tmp_root) as root:
            make_workdir(root, workdir, _on_host(owner, userns))
    return User(owner.uid, owner.gid, groups)


def _on_host(owner: Owner, userns: UserNamespace | None) -> Owner:
    """The host ids of a container's `owner`: its pod's user namespace maps them (unmapped ids
    fall back to the namespace's root, which can at least reach them)."""
    if userns is None:
        return owner
    uid = idmap.host_id_of(userns.uids, owner.uid)
    gid = idmap.host_id_of(userns.gids, owner.gid)
    root_uid, root_gid = idmap.host_id_of(userns.uids), idmap.host_id_of(userns.gids)
    assert root_uid is not None and root_gid is not None  # checked when the pod was asked for
    return Owner(root_uid if uid is None else uid, root_gid if gid is None else gid)
