"""Wire the daemon: config → small builders in dependency order (root, metadata, storage,
runtime, services) → gRPC server (ours or grpc.aio) → graceful stop.

Each builder registers the release of what it took on the daemon's exit stack as it takes it,
so one stop path unwinds exactly what was started, in reverse order, also after a failed start.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import platform
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from dockyard_api.dockyard.shim.v1 import stats_pb2 as shim_stats_pb2
from dockyard_common import shimlaunch
from dockyard_common.containerlog import parse_size
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.types import Kind
from supervisor import ksm
from supervisor.build.builder import Builder, BuildStores
from supervisor.build.cacheprune import parse_limit
from supervisor.build.commit import Committer
from supervisor.build.contextstore import ContextStore
from supervisor.build.imagewrite import ImageWriter
from supervisor.config import DEFAULT_CONFIG, Config, compress_helper
from supervisor.content.local import LocalContentStore
from supervisor.cri.containers import CriContainers
from supervisor.cri.images import CRI_NAMESPACE, CriImages
from supervisor.cri.sandbox import PodSandboxes, SandboxDeps, SandboxSettings
from supervisor.cri.stream_backend import CriStreamBackend
from supervisor.cri.streaming.server import StreamServer
from supervisor.cri.streams import CriStreams
from supervisor.differ import Differ, SnapshotKinds
from supervisor.diskreserve import DiskReserve
from supervisor.events import Exchange
from supervisor.grpcserver import Server as OwnServer
from supervisor.grpcserver.decode import DecodeGuard
from supervisor.images.inspect import Inspector
from supervisor.images.leasing import release_stale
from supervisor.images.transfer import ImageTransfer
from supervisor.images.unpack import Unpacker
from supervisor.logs import LogDefaults, LogStore
from supervisor.metadata.buildcache import BuildCacheStore
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector, GcRequests
from supervisor.metadata.images import ImageStore
from supervisor.metadata.leases import LeaseStore
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.network.attachments import NetworkManager
from supervisor.network.networks import NetworkStore
from supervisor.network.wiring import ContainerNetworks
from supervisor.plugins import Plugin, PluginRegistry
from supervisor.remote.hosts import Hosts, config_dir_for
from supervisor.remote.registry import Registry
from supervisor.rootlock import RootLock
from supervisor.runtime.autoremove import AutoRemover
from supervisor.runtime.copy import ContainerFiles
from supervisor.runtime.events import serve_shim_events
from supervisor.runtime.health import HealthMonitor
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.oom import OomRecorder
from supervisor.runtime.restart import RestartMonitor
from supervisor.runtime.shim import ShimBinary
from supervisor.runtime.stats import ShimSamplerControl, StatsSink, describe_from, network_counters_from
from supervisor.services.attach import AttachService
from supervisor.services.build import BuildService
from supervisor.services.builder import BuilderService
from supervisor.services.containers import ContainersService
from supervisor.services.content import ContentService
from supervisor.services.copy import CopyService
from supervisor.services.cri_images import ImageService as CriImageService
from supervisor.services.cri_runtime import RuntimeService as CriRuntimeService
from supervisor.services.diff import DiffService
from supervisor.services.events import EventsService
from supervisor.services.gc import GCService
from supervisor.services.images import ImagesService
from supervisor.services.introspection import IntrospectionService
from supervisor.services.leases import LeasesService
from supervisor.services.logs import LogsService
from supervisor.services.method_table import MethodTable
from supervisor.services.namespaces import NamespacesService
from supervisor.services.network import NetworksService
from supervisor.services.network_events import publisher as network_events
from supervisor.services.registry import RegistryService
from supervisor.services.snapshots import SnapshotsService
from supervisor.services.stats import StatsService
from supervisor.services.system import SystemService
from supervisor.services.tasks import TasksService
from supervisor.services.transfer import TransferService
from supervisor.services.version import VersionService
from supervisor.services.volumes import VolumesService
from supervisor.snapshotter import NativeSnapshotter, OverlaySnapshotter, Snapshotter
from supervisor.snapshotter.directory import DirectorySnapshotter
from supervisor.snapshotter.overlay import overlay_problem
from supervisor.stats import StatsHub
from supervisor.timeutil import now
from supervisor.volumes.store import VolumeStore

log = logging.getLogger("dockyard")
GRPC_PLUGIN = "io.containerd.grpc.v1"
STOP_GRACE_SECONDS = 10.0


def server_uuid(root: Path) -> str:
    """The daemon's stable identity, kept in <root>/uuid (written once, atomically)."""
    path = root / "uuid"
    with suppress(FileNotFoundError, ValueError):
        return str(uuid.UUID(path.read_text().strip()))
    value = str(uuid.uuid4())
    tmp = path.with_name(".uuid.tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)
    return value


def _claim_socket(address: Path) -> None:
    """Remove a stale socket, but never one a live server still answers on."""
    if not address.exists() and not address.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(address))
    except OSError:
        address.unlink()
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"address {address} is in use by another server")


@dataclass(frozen=True)
class Metadata:
    """The database and the stores that are only records."""

    db: Database
    namespaces: NamespaceStore
    leases: LeaseStore


@dataclass(frozen=True)
class Storage:
    """Blobs and snapshots, their namespaced records, and the collector that sweeps both."""

    content: LocalContentStore
    records: NamespacedContentStore
    snapshotters: dict[str, Snapshotter]
    snapshots: SnapshotStore
    collector: Collector
    images: ImageStore
    differ: Differ


@dataclass(frozen=True)
class Runtime:
    """Containers, their tasks (one shim each) and the stats the shims push."""

    containers: ContainerStore
    stats: StatsHub
    stats_control: ShimSamplerControl
    tasks: TaskManager
    network: NetworkManager
    container_networks: ContainerNetworks  # the manager put to work by the tasks' lifecycle
    restarts: RestartMonitor  # restart policies (containerd's restart labels), and --rm
    volumes: VolumeStore  # named and anonymous volumes (the --rm of a container removes its anonymous ones)
    health: HealthMonitor | None = None  # Docker's health checks (dockyard.healthcheck labels)
    oom: OomRecorder | None = None  # Docker's State.OOMKilled (the dockyard.oom-killed label)

    async def container_deleted(self, namespace: str, cid: str) -> None:
        """A container's record is gone: no restart of it, then the runtime lets go of the rest."""
        await self.restarts.container_deleted(namespace, cid)
        if self.oom is not None:
            self.oom.container_deleted(namespace, cid)
        if self.health is not None:
            await self.health.container_deleted(namespace, cid)
        await self.tasks.container_deleted(namespace, cid)

    async def end_streams(self) -> None:
        """Stats streams end (UNAVAILABLE: clients reconnect) and samplers stop; idempotent."""
        await self.stats.close()
        self.stats_control.close()


@dataclass(frozen=True)
class Service:
    plugin_id: str
    servicer: Any  # its generated base class tells which service it implements
    requires: list[str]


async def claim_root(cfg: Config, reserve: DiskReserve, stack: AsyncExitStack) -> str:
    """The root lock, then the disk reserve; returns the daemon's uuid."""
    cfg.root.mkdir(parents=True, exist_ok=True, mode=0o711)
    cfg.state.mkdir(parents=True, exist_ok=True, mode=0o711)
    # The lock first: a second daemon refused by it must not touch the live one's reserve.
    lock = RootLock(cfg.root)
    lock.acquire()
    stack.callback(lock.release)  # last of all: the reserve's task stops before another daemon may start
    # Then, before anything writes: on a full disk the reserve makes room for start-up
    # (the lock's pid, the databases' -shm files, the overlay check); see diskreserve.py.
    snapshots_root = cfg.root / "snapshots"
    await asyncio.to_thread(reserve.prepare, [cfg.root, cfg.root / "content",
                                              snapshots_root / "overlayfs", snapshots_root / "native"])
    lock.record_pid()
    reserve_task = asyncio.get_running_loop().create_task(reserve.run())
    stack.push_async_callback(_cancel, reserve_task)
    return server_uuid(cfg.root)


async def open_metadata(cfg: Config, reserve: DiskReserve, registry: PluginRegistry,
                        stack: AsyncExitStack) -> Metadata:
    db = await Database.open(cfg.root / "metadata.db", on_full=reserve.release)
    stack.push_async_callback(db.close)
    registry.add(Plugin("io.containerd.metadata.v1", "sqlite", exports={"path": str(db.path)}))
    registry.add(Plugin("io.containerd.event.v1", "exchange"))
    return Metadata(db, NamespaceStore(db), LeaseStore(db))


async def open_storage(cfg: Config, meta: Metadata, reserve: DiskReserve, registry: PluginRegistry,
                       stack: AsyncExitStack) -> Storage:
    """Content, snapshots and the garbage collector, its start-up collection scheduled."""
    content = LocalContentStore(cfg.root / "content")
    registry.add(Plugin("io.containerd.content.v1", "content", exports={"root": str(cfg.root / "content")}))
    # The stores tell the collector what they deleted, the collector needs their guards and
    # cleanup: the requests object comes first and the collector joins it when made.
    gc = GcRequests()
    # Namespaced records over the shared blobs; a deleted record may free a blob.
    records = NamespacedContentStore(meta.db, content, on_delete=gc.free)
    snapshotters = await open_snapshotters(cfg.root / "snapshots", registry, on_full=reserve.release,
                                           stack=stack)
    # Namespaced snapshots over the backends; the collector must not sweep what they are creating.
    snapshots = SnapshotStore(meta.db, snapshotters, on_delete=gc.schedule)
    stack.push_async_callback(snapshots.drain)  # finish backend removals instead of orphaning them
    collector = Collector(meta.db, content, snapshotters, guards=[records.gc_guard, snapshots.gc_guard],
                          snapshot_cleanup=snapshots.cleanup,  # recovers commits, then sweeps
                          requests=gc)
    # Jobs of a daemon that died (a crash, maybe on a full disk) hold what they wrote: let it go.
    await release_stale(meta.leases)
    collector.start()
    stack.push_async_callback(collector.stop)
    registry.add(Plugin("io.containerd.gc.v1", "scheduler", requires=["io.containerd.metadata.v1"]))
    return Storage(content, records, snapshotters, snapshots, collector,
                   ImageStore(meta.db, collect=collector.collect, on_delete=collector.schedule),
                   Differ(records, cfg.root / "tmp", compress_helper(cfg), snapshot_kind=_kinds_of(snapshotters)))


async def start_runtime(cfg: Config, meta: Metadata, storage: Storage, events: Exchange,
                        shim_binary: Callable[[str], ShimBinary], registry: PluginRegistry,
                        stack: AsyncExitStack) -> Runtime:
    """Tasks: one shim per container; shims forward their events and stats to our ttrpc socket.
    The tasks that were running are recovered."""
    containers = ContainerStore(meta.db, storage.collector.schedule)
    stats = StatsHub(describe_from(containers))  # the hub fans the shims' samples out
    shim_events = await serve_shim_events(cfg.state / "ttrpc.sock", events, [
        (shim_stats_pb2.DESCRIPTOR.services_by_name["StatsSink"], StatsSink(stats))])
    stack.push_async_callback(shim_events.shutdown, grace=2)
    network = network_manager(cfg)
    container_networks = ContainerNetworks(network, cfg.default_network)
    container_networks.observers.append(network_events(events))
    logs = LogStore(cfg.root / "logs", LogDefaults(parse_size(cfg.container_log_max_size), cfg.container_log_max_file))
    tasks = TaskManager(cfg.state, shim_binary, events, container_networks, logs)
    stack.push_async_callback(tasks.close)  # the shims and their containers keep running
    stats_control = ShimSamplerControl(tasks, stats)
    restarts = RestartMonitor(containers, tasks, storage.snapshots, meta.namespaces, events)
    volumes = VolumeStore(cfg.root / "volumes", containers, storage.snapshots, cfg.root / "tmp")
    health = HealthMonitor(containers, tasks, meta.namespaces, events, cfg.state / "health")
    oom = OomRecorder(containers, tasks, events)
    tasks.runs = oom  # before `recover`: the cleanup of a shim found dead is a run's end too
    runtime = Runtime(containers, stats, stats_control, tasks, network, container_networks, restarts, volumes,
                      health, oom)
    restarts.remover = AutoRemover(containers, tasks, storage.snapshots, volumes, events, runtime.container_deleted)
    stack.push_async_callback(runtime.end_streams)
    stats.bind(stats_control)
    stats.network = network_counters_from(tasks, container_networks)
    tasks.observers.append(stats.task_changed)
    await tasks.recover()
    # Networks of containers whose task is gone or exited while no daemon watched are released
    # before we serve, so their addresses and host ports are free for new tasks.
    await container_networks.reconcile(await tasks.running())
    stack.push_async_callback(container_networks.close)
    # Only now, with the shims found again: bring back what the policies want, follow exits.
    await oom.start()  # the tasks found again are judged too: an OOM kill while no daemon ran counts
    stack.push_async_callback(oom.close)
    await restarts.start()  # returns subscribed: no exit from here on is missed
    stack.push_async_callback(restarts.close)  # before the tasks let go of their shims
    await health.start()  # health checks of the running containers resume; subscribed on return
    stack.push_async_callback(health.close)  # its probes killed and deleted before the shims go
    registry.add(Plugin("io.containerd.runtime.v2", "task", requires=["io.containerd.event.v1"],
                        platforms=[("linux", _arch(), "")]))
    return runtime


def network_manager(cfg: Config) -> NetworkManager:
    """Networks are conflists in the config directory's net.d/ (so a user can drop one in);
    IPAM allocations and attachment records under <root>/networks, netns files under <state>/netns."""
    store = NetworkStore(config_dir_for(cfg.source, DEFAULT_CONFIG) / "net.d", cfg.root / "networks" / "ipam")
    return NetworkManager(state=cfg.state, root=cfg.root, store=store)


def build_services(daemon: Daemon, uid: str, meta: Metadata, storage: Storage, runtime: Runtime) -> list[Service]:
    cfg, events = daemon.config, daemon.events
    records, collector = storage.records, storage.collector
    unpacker = Unpacker(records, storage.snapshots, storage.differ, meta.leases, collector.schedule)
    registry = Registry(records, storage.images, meta.leases, unpacker,
                        Hosts(config_dir_for(cfg.source, DEFAULT_CONFIG)), cfg.default_snapshotter, collector.schedule)
    builder = Builder(BuildStores(records, storage.images, storage.snapshots, meta.leases, storage.differ,
                                  runtime.tasks, unpacker, registry, BuildCacheStore(meta.db), cfg.default_snapshotter,
                                  cfg.root / "tmp", parse_limit(cfg.build_cache_max_size)),
                      on_release=collector.schedule)
    return [
        Service("version", VersionService(), []),
        Service("namespaces", NamespacesService(meta.namespaces, events), ["io.containerd.metadata.v1"]),
        Service("events", EventsService(events), ["io.containerd.event.v1"]),
        Service("introspection", IntrospectionService(daemon.registry, uid), []),
        Service("dockyard.system", SystemService(daemon), []),
        Service("containers", ContainersService(runtime.containers, events, runtime.container_deleted),
                ["io.containerd.metadata.v1"]),
        Service("tasks", TasksService(runtime.tasks, runtime.containers, runtime.restarts),
                ["io.containerd.runtime.v2"]),
        Service("dockyard.stats", StatsService(runtime.stats), ["io.containerd.runtime.v2"]),
        Service("dockyard.logs", LogsService(runtime.containers, runtime.tasks.logs), ["io.containerd.runtime.v2"]),
        Service("dockyard.attach", AttachService(runtime.containers, runtime.tasks), ["io.containerd.runtime.v2"]),
        Service("dockyard.copy", CopyService(ContainerFiles(runtime.containers, runtime.tasks, storage.snapshots,
                                                            cfg.root / "tmp"), runtime.tasks),
                ["io.containerd.runtime.v2", "io.containerd.snapshotter.v1"]),
        Service("dockyard.network", NetworksService(runtime.network), ["io.containerd.runtime.v2"]),
        Service("dockyard.volumes", VolumesService(runtime.volumes),
                ["io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
        Service("leases", LeasesService(meta.leases, collector.collect, collector.schedule),
                ["io.containerd.metadata.v1"]),
        Service("dockyard.gc", GCService(collector), ["io.containerd.gc.v1"]),
        Service("images", ImagesService(storage.images, events),
                ["io.containerd.metadata.v1", "io.containerd.gc.v1"]),
        Service("content", ContentService(records, events),
                ["io.containerd.content.v1", "io.containerd.metadata.v1"]),
        Service("snapshots", SnapshotsService(storage.snapshots, events),
                ["io.containerd.snapshotter.v1", "io.containerd.metadata.v1"]),
        Service("diff", DiffService(storage.differ), ["io.containerd.content.v1", "io.containerd.metadata.v1"]),
        Service("dockyard.transfer", TransferService(ImageTransfer(
            records, storage.snapshots, storage.images, meta.leases, storage.differ, cfg.default_snapshotter,
            collector.schedule), events),
            ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
        Service("dockyard.registry", RegistryService(registry, events),
            ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
        Service("dockyard.builder", BuilderService(Committer(
            runtime.containers, runtime.tasks, storage.snapshots, storage.images, meta.leases,
            ImageWriter(records, storage.images, storage.differ), collector.schedule), events),
            ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1",
             "io.containerd.runtime.v2"]),
        Service("dockyard.build", BuildService(builder, cfg.root / "tmp", contexts=ContextStore(
            cfg.root / "build-contexts", keep=cfg.build_kept_contexts)),
                ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1",
                 "io.containerd.runtime.v2"]),
    ] + (cri_services(cfg, storage, runtime, registry, unpacker, meta.leases, daemon._started)
         if cfg.cri_enabled else [])


def cri_services(cfg: Config, storage: Storage, runtime: Runtime, registry: Registry, unpacker: Unpacker,
                 leases: LeaseStore, stack: AsyncExitStack) -> list[Service]:
    """Kubernetes CRI (runtime.v1) on the same socket, as containerd serves it."""
    inspector = Inspector(storage.records, storage.images, storage.snapshots)
    images = CriImages(storage.images, inspector, registry, CRI_NAMESPACE, cfg.default_snapshotter,
                       cfg.root / "snapshots" / cfg.default_snapshotter)
    deps = SandboxDeps(runtime.containers, runtime.tasks, storage.snapshots, runtime.container_networks, images,
                       inspector, unpacker, runtime.container_deleted, leases, storage.collector.schedule)
    sandboxes = PodSandboxes(
        deps, SandboxSettings(cfg.cri_sandbox_image, cfg.default_network, cfg.default_snapshotter,
                              tuple(cfg.runtimes), files_dir=cfg.state / "cri" / "sandboxes",
                              probe_dir=cfg.root, pods_per_shim=cfg.cri_pods_per_shim),
        CRI_NAMESPACE)
    containers = CriContainers(deps, sandboxes, cfg.state / "cri" / "exec", cfg.state / "cri" / "image-volumes")
    runtime.restarts.exit_observers.append(containers.on_exit)  # an exited container's shim goes
    # Image volumes of containers removed while the daemon was away go (safe beside requests).
    stack.push_async_callback(_cancel, asyncio.ensure_future(containers.sweep_image_volumes()))
    # The streaming server listens from the first Exec/Attach/PortForward; it stops with the daemon.
    streams = CriStreams(StreamServer(CriStreamBackend(containers, sandboxes), cfg.cri_stream_address,
                                      cfg.cri_stream_port), containers, sandboxes)
    stack.push_async_callback(streams.close)
    return [
        Service("cri.runtime", CriRuntimeService(sandboxes, containers, streams), ["io.containerd.runtime.v2"]),
        Service("cri.images", CriImageService(images),
                ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
    ]


async def serve_grpc(cfg: Config, services: list[Service], registry: PluginRegistry, stack: AsyncExitStack,
                     end_streams: Callable[[], Awaitable[None]]) -> None:
    """Claim the socket and serve `services` (plus health and reflection) on it.
    On stop, `end_streams` runs first so long streams do not hold the grace period."""
    server: grpc.aio.Server | OwnServer
    if cfg.grpc_server == "dockyard":  # see supervisor/grpcserver/server.py for why
        server = OwnServer(max_message_size=cfg.max_message_size)
    else:
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", cfg.max_message_size),
            ("grpc.max_send_message_length", cfg.max_message_size),
        ])
    names = []
    table = MethodTable()
    for service in services:
        names.append(_register(table, service.servicer))
        registry.add(Plugin(GRPC_PLUGIN, service.plugin_id, requires=service.requires))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, table)
    # The asyncio servicer, explicitly: enable_server_reflection picks it only for a grpc.aio.Server.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer([*names, health.SERVICE_NAME, reflection.SERVICE_NAME]), table)
    # grpcio's server answers a malformed request UNKNOWN with a traceback; ours as grpc-go does
    server.add_generic_rpc_handlers((table if isinstance(server, OwnServer) else DecodeGuard(table),))

    cfg.address.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    _claim_socket(cfg.address)
    server.add_insecure_port(f"unix:{cfg.address}")
    await server.start()

    async def stop_serving() -> None:
        await end_streams()
        await server.stop(STOP_GRACE_SECONDS)
        with suppress(FileNotFoundError):  # ours to remove only once we served on it
            cfg.address.unlink()

    stack.push_async_callback(stop_serving)
    os.chmod(cfg.address, 0o660)
    for name in [*names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Daemon:
    config: Config
    registry: PluginRegistry = field(default_factory=PluginRegistry)
    events: Exchange = field(default_factory=Exchange)
    started_at: Any = None
    reserve: DiskReserve = field(default_factory=DiskReserve)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # What start() took, each with its release; stop() unwinds it in reverse order.
    _started: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def start(self) -> None:
        """Start in dependency order; if a step fails, what the steps before it took is released."""
        cfg = self.config
        self.started_at = now()
        stack = self._started
        try:
            uid = await claim_root(cfg, self.reserve, stack)
            meta = await open_metadata(cfg, self.reserve, self.registry, stack)
            storage = await open_storage(cfg, meta, self.reserve, self.registry, stack)
            runtime = await start_runtime(cfg, meta, storage, self.events, self._shim_binary, self.registry, stack)
            services = build_services(self, uid, meta, storage, runtime)
            await serve_grpc(cfg, services, self.registry, stack, runtime.end_streams)
        except BaseException:
            await self._unwind()
            raise
        if ksm.state() == "off":
            log.info("ksmd is off: shims keep ~5 MiB each of pages they could share "
                     "(echo 1 > %s lets the kernel merge them; see shim/zygote.py)", ksm.RUN)
        log.info("dockyardd %s serving on %s (root %s, state %s)", _version(), cfg.address, cfg.root, cfg.state)

    def _shim_binary(self, runtime: str) -> ShimBinary:
        """The shim serving `runtime`: a configured binary, or Dockyard's own shim."""
        if not runtime:
            raise InvalidArgument("container has no runtime name")
        binary = self.config.runtimes.get(runtime)
        command = (binary,) if binary else (sys.executable, *shimlaunch.RUN_MODULE)
        return ShimBinary(command, str(self.config.address), str(self.config.state / "ttrpc.sock"),
                          publish_binary=sys.argv[0] or "dockyardd", foreign=bool(binary))

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Finish in-flight calls (up to a grace period), then release everything."""
        log.info("stopping: finishing in-flight calls")
        await self._unwind()
        log.info("stopped")

    async def _unwind(self) -> None:
        self.events.close()  # event streams end now instead of holding the grace period
        await self._started.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _kinds_of(snapshotters: Mapping[str, Snapshotter]) -> SnapshotKinds:
    async def kind(name: str, sid: int) -> Kind | None:
        backend = snapshotters.get(name)  # all of ours keep their trees in directories
        return await backend.kind_of_id(sid) if isinstance(backend, DirectorySnapshotter) else None
    return kind


async def open_snapshotters(root: Path, registry: PluginRegistry, on_full: Callable[[str], bool],
                            stack: AsyncExitStack) -> dict[str, Snapshotter]:
    """Every snapshotter this host can run, under <root>/<name>; the others are reported.
    `on_full` makes room for a removal on a full disk (`DiskReserve.release`); `stack` closes
    each snapshotter opened."""
    found: dict[str, Snapshotter] = {}
    problem = await asyncio.to_thread(_overlay_problem, root / "overlayfs")
    plugin_type = "io.containerd.snapshotter.v1"
    if problem is None:
        found["overlayfs"] = await OverlaySnapshotter.open(root / "overlayfs", on_full=on_full)
        stack.push_async_callback(found["overlayfs"].close)
        registry.add(Plugin(plugin_type, "overlayfs", exports={"root": str(root / "overlayfs")}))
    else:
        log.warning("overlayfs snapshotter unavailable: %s", problem)
        registry.add(Plugin(plugin_type, "overlayfs", init_error=f"skip plugin: {problem}"))
    found["native"] = await NativeSnapshotter.open(root / "native", on_full=on_full)
    stack.push_async_callback(found["native"].close)
    registry.add(Plugin(plugin_type, "native", exports={"root": str(root / "native")}))
    return found


def _overlay_problem(root: Path) -> str | None:
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return overlay_problem(str(root))


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _register(server: MethodTable, servicer: Any) -> str:
    """Add a servicer through its generated module; returns the service's full name."""
    base = next(c for c in type(servicer).__mro__ if c.__name__.endswith("Servicer")
                and c.__module__.endswith("_pb2_grpc"))
    grpc_module = importlib.import_module(base.__module__)
    getattr(grpc_module, f"add_{base.__name__}_to_server")(servicer, server)
    pb2 = importlib.import_module(base.__module__.removesuffix("_grpc"))
    return str(pb2.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")].full_name)


def _version() -> str:
    from dockyard_common.version import VERSION

    return VERSION


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    import signal

    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        await daemon.wait()
    finally:
        await daemon.stop()
