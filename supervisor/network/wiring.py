"""A task's network: the NetworkManager put to work by the runtime's task lifecycle.

Words: a container is *networked* when its labels ask for a network (supervisor/network/labels.py).
Its task then runs in a network namespace the daemon made and attached (CNI) or, with
``dockyard.network/container``, in another container's. A container without those labels is
none of our business: its spec's own namespace settings rule, as under containerd.

Lifecycle (called by the TaskManager):
  - ``begin(ns, id, labels, spec, pid_of)`` before the bundle is written: starts attaching the
    container (or finds the namespace it joins), then edits `spec` - the bundle's copy, never
    the stored container - to name the namespace file (``linux.namespaces[type=network].path``)
    and to bind the generated resolv.conf and hosts read-only (unless the spec already mounts
    something there). It returns once the namespace file and those files exist, with a
    PendingNetwork: the CNI plugins go on while the runtime starts the shim and creates the task
    in that namespace (the plugins' interfaces are needed only once the task's process runs, and
    the hosts file gets the addresses in place); the runtime settles it before Create returns.
    If it raises, nothing of it is left: the manager's attach undoes itself, and a failed edit
    detaches. A spec with sysctls of an interface or OCI hooks (both run at create) waits for
    the plugins first.
  - ``release(ns, id)`` when the task's init exits (as Docker and Podman free a stopped
    container's address and ports; a containerd task cannot start again), the task is deleted,
    its shim died, its creation failed after ``begin``, or the container is deleted: detach
    (idempotent, and concurrent calls share one detach; nothing for a container that joined
    another's namespace or has no network).
  - ``reconcile(running)`` at daemon start, once the runtime recovered its tasks: attachments of
    containers whose task is gone or has exited are released, running ones CHECKed (in the
    background: a slow plugin must not hold up the start; problems are logged).

Events: every attach and detach is told to `observers` as a NetworkChange (the services turn it
into /network/attach and /network/detach events). Stats: ``counters(ns, id, pid)`` reads a
networked container's interface counters.

Errors: what labels.parse and NetworkManager.attach raise; FailedPrecondition for a container to
join that has no network namespace (no task) or is the container itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.netlabels import DEFAULT_NETWORK
from supervisor.network import labels as network_labels
from supervisor.network.attachments import Attachment, NetworkManager
from supervisor.network.counters import Counters, read_counters_of_pid

log = logging.getLogger("dockyard.network")

RESOLV_CONF = "/etc/resolv.conf"
HOSTS = "/etc/hosts"
# nosuid/nodev/noexec as well as ro: in a user namespace the source's locked flags must be kept
FILE_MOUNT_OPTIONS = ["rbind", "ro", "nosuid", "nodev", "noexec"]


@dataclass(frozen=True)
class NetworkChange:
    attached: bool  # True: /network/attach; False: /network/detach
    namespace: str
    container_id: str
    attachment: Attachment


class ContainerNetworks:
    def __init__(self, manager: NetworkManager, default_network: str = DEFAULT_NETWORK) -> None:
        self.manager = manager
        self.default_network = default_network  # what "bridge" means; "none": nothing
        self.observers: list[Callable[[NetworkChange], None]] = []
        # the namespace file of every networked container with a task (attached or joined): stats
        self._netns: dict[tuple[str, str], Path] = {}
        self._checks: asyncio.Task[None] | None = None
        self._releasing: dict[tuple[str, str], asyncio.Future[None]] = {}

    # -- the task lifecycle ------------------------------------------------------------------

    async def begin(self, namespace: str, cid: str, labels: Mapping[str, str], spec: dict[str, Any],
                    pid_of: Callable[[str, str], int | None]) -> PendingNetwork | None:
        """Give the task about to be created its network, as its labels ask (None: not networked).
        `spec` is edited in place. `pid_of(ns, id)` is another container's task pid (None: no
        task), for joining. Returns once the namespace file and the resolv.conf/hosts files exist:
        the task may be created in it while the CNI plugins still run; its caller settles the
        returned PendingNetwork before the task may start."""
        request = network_labels.parse(labels, self.default_network)
        if request is None:
            return None
        _check_spec_shape(spec)
        if request.join:
            path, resolv, hosts = self._joined(namespace, cid, request.join, pid_of)
            _use_netns(spec, path, resolv, hosts)
            self._netns[(namespace, cid)] = path
            return PendingNetwork(None)
        with contextlib.suppress(NotFound):
            # a record whose task is gone (the runtime calls us only without a task): stale
            self.manager.get(namespace, cid)
            log.warning("network of %s/%s: releasing the attachment of a task that is gone", namespace, cid)
            await self.release(namespace, cid)
        loop = asyncio.get_running_loop()
        made: asyncio.Future[None] = loop.create_future()
        early = not _needs_network_at_create(spec)
        t0 = time.perf_counter()

        async def attach() -> None:
            att = await self.manager.attach(
                namespace, cid, list(request.networks), list(request.ports), hostname=str(spec.get("hostname") or ""),
                dns=request.dns, dns_search=request.dns_search, dns_options=request.dns_options,
                extra_hosts=request.extra_hosts, on_netns=(lambda: made.set_result(None)) if early else None)
            log.debug("network of %s/%s attached in %.1f ms", namespace, cid, (time.perf_counter() - t0) * 1e3)
            self._netns[(namespace, cid)] = att.netns_path
            self._tell(NetworkChange(True, namespace, cid, att))

        job = loop.create_task(attach())
        pending = PendingNetwork(job)
        try:
            await asyncio.wait([job, made], return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                job.result()  # it failed before the netns was made, or ended (not early)
            resolv, hosts = self.manager.file_paths(namespace, cid)
            _use_netns(spec, self.manager.netns_path(namespace, cid), resolv, hosts)
        except BaseException:
            await pending.abandon()
            await self.release(namespace, cid)
            raise
        return pending

    def networked(self, namespace: str, cid: str) -> bool:
        """Whether the container's task runs in a network namespace of ours (attached or joined)."""
        return (namespace, cid) in self._netns

    async def release(self, namespace: str, cid: str) -> None:
        """Detach the container's network, if it has one (idempotent). Callers at the same time
        share one detach (and one event); a caller cancelled does not cancel it."""
        key = (namespace, cid)
        job = self._releasing.get(key)
        if job is None:
            job = self._releasing[key] = asyncio.ensure_future(self._release(namespace, cid))
            job.add_done_callback(lambda done: self._releasing.pop(key, None) if self._releasing.get(key) is done
                                  else None)
        await asyncio.shield(job)

    async def _release(self, namespace: str, cid: str) -> None:
        self._netns.pop((namespace, cid), None)
        try:
            att: Attachment | None = self.manager.get(namespace, cid)
        except NotFound:
            att = None
        t0 = time.perf_counter()
        await self.manager.detach(namespace, cid)
        if att is not None:
            log.debug("network of %s/%s detached in %.1f ms", namespace, cid, (time.perf_counter() - t0) * 1e3)
            self._tell(NetworkChange(False, namespace, cid, att))

    async def reconcile(self, live: Mapping[tuple[str, str], Path]) -> None:
        """After a restart: `live` maps each task whose init still runs to its bundle's
        config.json. What belongs to no such task is released now; the others are CHECKed in
        the background."""
        for key, config in live.items():
            path = await asyncio.to_thread(_spec_netns, config)
            if path is not None and path.parent == self.manager.netns_dir:
                self._netns[key] = path
        report = await self.manager.reconcile(live.keys(), check=False)
        for who in report.released:
            log.info("network of %s released: its task is gone", who)
        for what in report.released_addresses:
            log.info("released the address %s of no container", what)
        for problem in report.problems:
            log.warning("network reconcile: %s", problem)
        attached = [k for k in live if self._has_record(*k)]
        if attached:
            self._checks = asyncio.get_running_loop().create_task(self._check_all(attached))

    async def close(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checks

    # -- stats -----------------------------------------------------------------------------

    def counters(self, namespace: str, cid: str, pid: int) -> dict[str, Counters] | None:
        """The interface counters of a networked container (read through its task's pid, which
        must still be in the container's namespace); None when not networked or not readable."""
        path = self._netns.get((namespace, cid))
        if path is None or pid <= 0:
            return None
        return read_counters_of_pid(path, pid)

    # -- internals -------------------------------------------------------------------------

    def _has_record(self, namespace: str, cid: str) -> bool:
        try:
            self.manager.get(namespace, cid)
        except NotFound:
            return False
        return True

    async def _check_all(self, keys: Iterable[tuple[str, str]]) -> None:
        checked = problems = 0
        for ns, cid in keys:
            checked += 1
            try:
                await self.manager.check(ns, cid)
            except DockyardError as exc:
                problems += 1
                log.warning("network of %s/%s: CNI CHECK: %s", ns, cid, exc)
        log.info("networks of %d running containers checked: %d with problems", checked, problems)

    def _joined(self, namespace: str, cid: str, other: str, pid_of: Callable[[str, str], int | None]
                ) -> tuple[Path, Path | None, Path | None]:
        """The namespace file (and resolv.conf, hosts) of the container `other` to join."""
        if other == cid:
            raise InvalidArgument(f"label {network_labels.CONTAINER}: a container cannot join its own network")
        try:
            att = self.manager.get(namespace, other)
            return att.netns_path, att.resolv_conf, att.hosts
        except NotFound:
            pass
        pid = pid_of(namespace, other)
        if not pid:
            raise FailedPrecondition(f"cannot join the network of container {other!r}: it has no running task")
        # a container without a network of ours (lo only, or the host's): its init's namespace
        return Path(f"/proc/{pid}/ns/net"), None, None

    def _tell(self, change: NetworkChange) -> None:
        for observer in self.observers:
            try:
                observer(change)
            except Exception:
                log.exception("network observer failed for %s/%s", change.namespace, change.container_id)


class PendingNetwork:
    """A container's network being attached: its namespace file (and resolv.conf and hosts)
    exist, the plugins may still run. Settled before the task starts; abandoned on failure."""

    def __init__(self, job: asyncio.Task[None] | None) -> None:
        self._job = job

    async def settle(self) -> None:
        """Wait for the plugins; raises what the attach raised (it has undone itself then). A
        cancelled caller does not cancel the attach: abandon() waits for it after."""
        if self._job is not None:
            await asyncio.shield(self._job)

    async def abandon(self) -> DockyardError | None:
        """On a failed create: wait for the attach to end; its error, if it was ours to report
        (the task's failure may only be the netns the failed attach took away)."""
        if self._job is None:
            return None
        while not self._job.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._job)
        if self._job.cancelled():
            return None
        exc = self._job.exception()
        if isinstance(exc, DockyardError):
            return exc
        if exc is not None:
            log.warning("network attach ended with %r", exc)
        return None


def _needs_network_at_create(spec: dict[str, Any]) -> bool:
    """Whether the task's creation may need the plugins' interfaces in place: sysctls of one
    interface (`net.ipv4.conf.eth0.*`) are written by its init at create, and OCI hooks run
    then. Such a task waits for the plugins, as before."""
    if spec.get("hooks"):
        return True
    sysctl = spec.get("linux", {}).get("sysctl") or {}
    if not isinstance(sysctl, dict):
        return False
    for key in sysctl:
        parts = str(key).replace("/", ".").split(".")
        if len(parts) > 3 and parts[0] == "net" and parts[2] in ("conf", "neigh") \
                and parts[3] not in ("all", "default", "lo"):
            return True
    return False


def _check_spec_shape(spec: dict[str, Any]) -> None:
    linux = spec.get("linux", {})
    if not isinstance(linux, dict) or not isinstance(linux.get("namespaces", []), list) \
            or not isinstance(spec.get("mounts", []), list):
        raise InvalidArgument("container spec: linux.namespaces and mounts must be lists")


def _use_netns(spec: dict[str, Any], path: Path, resolv: Path | None, hosts: Path | None) -> None:
    """Point the spec's network namespace at `path`; bind resolv.conf and hosts unless mounted."""
    linux = spec.setdefault("linux", {})
    linux["namespaces"] = [n for n in linux.setdefault("namespaces", [])
                           if not (isinstance(n, dict) and n.get("type") == "network")]
    linux["namespaces"].append({"type": "network", "path": str(path)})
    mounts = spec.setdefault("mounts", [])
    taken = {os.path.normpath(str(m.get("destination", ""))) for m in mounts if isinstance(m, dict)}
    for dest, source in ((RESOLV_CONF, resolv), (HOSTS, hosts)):
        if source is not None and dest not in taken:
            mounts.append({"destination": dest, "type": "bind", "source": str(source),
                           "options": list(FILE_MOUNT_OPTIONS)})


def _spec_netns(config: Path) -> Path | None:
    """The network namespace path a bundle's spec names (None: none, or unreadable)."""
    try:
        spec = json.loads(config.read_bytes())
        for n in spec.get("linux", {}).get("namespaces", []):
            if n.get("type") == "network" and n.get("path"):
                return Path(n["path"])
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return None
