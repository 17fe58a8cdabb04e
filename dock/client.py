"""The async client SDK: typed calls to dockyardd, errors mapped back to the hierarchy.

    async with Client("/run/dockyard/dockyard.sock", namespace="default") as c:
        print(await c.version())
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import empty_pb2, field_mask_pb2

from dock.launch import DEFAULT_ADDRESS
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from dockyard_common.codes import error_from_status
from dockyard_common.errors import DockyardError, Unavailable

if TYPE_CHECKING:
    from dock.containers import ContainersAPI
    from dock.content import ContentAPI
    from dock.diff import DiffAPI
    from dock.events import EventsAPI
    from dock.images import ImagesAPI
    from dock.leases import LeasesAPI
    from dock.logs import LogsAPI
    from dock.network import NetworksAPI
    from dock.registry import RegistryAPI
    from dock.snapshots import SnapshotsAPI
    from dock.stats import StatsAPI
    from dock.tasks import TasksAPI
    from dock.transfer import TransferAPI
    from dock.volumes import VolumesAPI
    from dockyard_api.containerd.services.introspection.v1.introspection_pb2_grpc import IntrospectionStub
    from dockyard_api.containerd.services.version.v1.version_pb2_grpc import VersionStub
    from dockyard_api.dockyard.system.v1.system_pb2_grpc import SystemStub

T = TypeVar("T")


class DaemonUnreachable(Unavailable):
    """The daemon's socket is missing, refuses connections, or is not ours to open."""


@dataclass
class VersionInfo:
    version: str
    revision: str
    uuid: str = ""


@dataclass
class NamespaceInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class DaemonInfo:
    version: str
    revision: str
    root: str
    state: str
    address: str
    pid: int
    started_at: str
    snapshotters: list[str]
    default_snapshotter: str
    cgroup_driver: str
    python_version: str
    ksm: str


@dataclass
class PluginInfo:
    type: str
    id: str
    requires: list[str]
    platforms: list[str]
    exports: dict[str, str]
    capabilities: list[str]
    status: str  # ok, skip or error, as ctr shows it
    error: str


def _check_socket(address: str) -> None:
    path = Path(address)
    if not path.exists():
        raise DaemonUnreachable(f"cannot connect to dockyardd at {address}: no such socket (is it running?)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise DaemonUnreachable(f"cannot connect to dockyardd at {address}: permission denied")


class Client:
    def __init__(self, address: str = DEFAULT_ADDRESS, namespace: str = "default",
                 timeout: float | None = None, lease: str = "") -> None:
        self.address = address
        self.namespace = namespace
        self.timeout = timeout
        # every call carries this lease unless it names its own: what the calls create, it holds
        self.lease = lease
        self.channel = grpc.aio.insecure_channel(f"unix:{address}", options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ])
        self._namespaces = namespace_pb2_grpc.NamespacesStub(self.channel)

    # Version, introspection and system stubs too: `dock run` and most commands never call them
    # (their modules are ~3 ms of every start).

    @functools.cached_property
    def _version(self) -> VersionStub:
        from dockyard_api.containerd.services.version.v1 import version_pb2_grpc
        return version_pb2_grpc.VersionStub(self.channel)

    @functools.cached_property
    def _introspection(self) -> IntrospectionStub:
        from dockyard_api.containerd.services.introspection.v1 import introspection_pb2_grpc
        return introspection_pb2_grpc.IntrospectionStub(self.channel)

    @functools.cached_property
    def _system(self) -> SystemStub:
        from dockyard_api.dockyard.system.v1 import system_pb2_grpc
        return system_pb2_grpc.SystemStub(self.channel)

    # The service APIs, each made (and its modules imported) on first use: a CLI command that
    # needs one service does not pay for importing all of them. Assignable (tests swap in
    # leased variants).

    @functools.cached_property
    def leases(self) -> LeasesAPI:
        from dock.leases import LeasesAPI
        return LeasesAPI(self)

    @functools.cached_property
    def containers(self) -> ContainersAPI:
        from dock.containers import ContainersAPI
        return ContainersAPI(self)

    @functools.cached_property
    def diff(self) -> DiffAPI:
        from dock.diff import DiffAPI
        return DiffAPI(self)

    @functools.cached_property
    def content(self) -> ContentAPI:
        from dock.content import ContentAPI
        return ContentAPI(self)

    @functools.cached_property
    def images(self) -> ImagesAPI:
        from dock.images import ImagesAPI
        return ImagesAPI(self)

    @functools.cached_property
    def snapshots(self) -> SnapshotsAPI:
        from dock.snapshots import SnapshotsAPI
        return SnapshotsAPI(self)

    @functools.cached_property
    def transfer(self) -> TransferAPI:
        from dock.transfer import TransferAPI
        return TransferAPI(self)

    @functools.cached_property
    def registry(self) -> RegistryAPI:
        from dock.registry import RegistryAPI
        return RegistryAPI(self)

    @functools.cached_property
    def tasks(self) -> TasksAPI:
        from dock.tasks import TasksAPI
        return TasksAPI(self)

    @functools.cached_property
    def events(self) -> EventsAPI:
        from dock.events import EventsAPI
        return EventsAPI(self)

    @functools.cached_property
    def stats(self) -> StatsAPI:
        from dock.stats import StatsAPI
        return StatsAPI(self)

    @functools.cached_property
    def logs(self) -> LogsAPI:
        from dock.logs import LogsAPI
        return LogsAPI(self)

    @functools.cached_property
    def networks(self) -> NetworksAPI:
        from dock.network import NetworksAPI
        return NetworksAPI(self)

    @functools.cached_property
    def volumes(self) -> VolumesAPI:
        from dock.volumes import VolumesAPI
        return VolumesAPI(self)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    def metadata(self, lease: str = "") -> list[tuple[str, str]]:
        md = [("containerd-namespace", self.namespace)]
        lease = lease or self.lease
        return [*md, ("containerd-lease", lease)] if lease else md

    @contextlib.asynccontextmanager
    async def leased(self, expires: timedelta = timedelta(hours=1)) -> AsyncIterator[str]:
        """A temporary lease every call in the block runs under (as containerd's WithLease):
        what they create survives garbage collection until the block ends and the lease is deleted."""
        lease = await self.leases.create(expires=expires)
        before, self.lease = self.lease, lease.id
        try:
            yield lease.id
        finally:
            self.lease = before
            await self.leases.delete(lease.id)

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, lease: str = "") -> T:
        """One unary call with the namespace (and lease) attached; gRPC errors become DockyardErrors."""
        try:
            return await method(request, metadata=self.metadata(lease), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def stream(self, method: Callable[..., Any], request: Any, lease: str = "") -> AsyncIterator[Any]:
        call = method(request, metadata=self.metadata(lease), timeout=self.timeout)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()

    def _error(self, exc: grpc.aio.AioRpcError) -> DockyardError:
        # grpc's own words for a socket it could not reach (not a daemon error that says "connect")
        if exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect to all addresses" in (exc.details() or ""):
            _check_socket(self.address)  # a precise reason when there is one
            return DaemonUnreachable(f"cannot connect to dockyardd at {self.address}: {exc.details()}")
        return error_from_status(exc.code().value[0], exc.details() or "")

    # version and introspection

    async def version(self) -> VersionInfo:
        resp = await self.call(self._version.Version, empty_pb2.Empty())
        server = await self.call(self._introspection.Server, empty_pb2.Empty())
        return VersionInfo(resp.version, resp.revision, server.uuid)

    async def plugins(self, filters: list[str] | None = None) -> list[PluginInfo]:
        from dockyard_api.containerd.services.introspection.v1 import introspection_pb2
        resp = await self.call(self._introspection.Plugins,
                               introspection_pb2.PluginsRequest(filters=filters or []))
        out = []
        for p in resp.plugins:
            err = p.init_err.message if p.HasField("init_err") else ""
            status = "ok" if not err else ("skip" if "skip plugin" in err else "error")
            platforms = ["/".join(x for x in (q.os, q.architecture, q.variant) if x) for q in p.platforms]
            out.append(PluginInfo(p.type, p.id, list(p.requires), platforms, dict(p.exports),
                                  list(p.capabilities), status, err))
        return out

    async def info(self) -> DaemonInfo:
        from dockyard_api.dockyard.system.v1 import system_pb2
        r = await self.call(self._system.Info, system_pb2.InfoRequest())
        return DaemonInfo(r.version, r.revision, r.root, r.state, r.address, r.pid,
                          r.started_at.ToDatetime().isoformat() + "Z", list(r.snapshotters),
                          r.default_snapshotter, r.cgroup_driver, r.python_version, r.ksm)

    # namespaces

    async def list_namespaces(self, filter: str = "") -> list[NamespaceInfo]:
        resp = await self.call(self._namespaces.List, namespace_pb2.ListNamespacesRequest(filter=filter))
        return [NamespaceInfo(n.name, dict(n.labels)) for n in resp.namespaces]

    async def get_namespace(self, name: str) -> NamespaceInfo:
        resp = await self.call(self._namespaces.Get, namespace_pb2.GetNamespaceRequest(name=name))
        return NamespaceInfo(resp.namespace.name, dict(resp.namespace.labels))

    async def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> NamespaceInfo:
        req = namespace_pb2.CreateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels=labels or {}))
        resp = await self.call(self._namespaces.Create, req)
        return NamespaceInfo(resp.namespace.name, dict(resp.namespace.labels))

    async def update_namespace(self, name: str, labels: dict[str, str],
                               paths: list[str] | None = None) -> NamespaceInfo:
        """Set labels: with no paths all labels are replaced; `labels.<key>` paths touch one key."""
        req = namespace_pb2.UpdateNamespaceRequest(
            namespace=namespace_pb2.Namespace(name=name, labels=labels),
            update_mask=field_mask_pb2.FieldMask(paths=paths or []),
        )
        resp = await self.call(self._namespaces.Update, req)
        return NamespaceInfo(resp.namespace.name, dict(resp.namespace.labels))

    async def delete_namespace(self, name: str) -> None:
        await self.call(self._namespaces.Delete, namespace_pb2.DeleteNamespaceRequest(name=name))
