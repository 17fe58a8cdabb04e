"""Wire the daemon: config → components in dependency order → gRPC server (ours or grpc.aio) → graceful stop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import platform
import socket
import sys
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from dockyard_api.dockyard.shim.v1 import stats_pb2 as shim_stats_pb2
from supervisor import ksm
from supervisor.config import DEFAULT_CONFIG, Config
from supervisor.content.local import LocalContentStore
from supervisor.differ import Differ
from supervisor.diskreserve import DiskReserve
from supervisor.errors import FailedPrecondition, InvalidArgument
from supervisor.events import Exchange
from supervisor.grpcserver import Server as OwnServer
from supervisor.grpcserver.decode import DecodeGuard
from supervisor.images.leasing import release_stale
from supervisor.images.transfer import ImageTransfer
from supervisor.images.unpack import Unpacker
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.content import NamespacedContentStore
from supervisor.metadata.db import Database
from supervisor.metadata.gc import Collector
from supervisor.metadata.images import ImageStore
from supervisor.metadata.leases import LeaseStore
from supervisor.metadata.namespaces import NamespaceStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.plugins import Plugin, PluginRegistry
from supervisor.remote.hosts import Hosts, config_dir_for
from supervisor.remote.registry import Registry
from supervisor.rootlock import RootLock
from supervisor.runtime.events import serve_shim_events
from supervisor.runtime.manager import TaskManager
from supervisor.runtime.shim import ShimBinary
from supervisor.runtime.stats import ShimSamplerControl, StatsSink, describe_from
from supervisor.services.containers import ContainersService
from supervisor.services.content import ContentService
from supervisor.services.diff import DiffService
from supervisor.services.events import EventsService
from supervisor.services.gc import GCService
from supervisor.services.images import ImagesService
from supervisor.services.introspection import IntrospectionService
from supervisor.services.leases import LeasesService
from supervisor.services.method_table import MethodTable
from supervisor.services.namespaces import NamespacesService
from supervisor.services.registry import RegistryService
from supervisor.services.snapshots import SnapshotsService
from supervisor.services.stats import StatsService
from supervisor.services.system import SystemService
from supervisor.services.tasks import TasksService
from supervisor.services.transfer import TransferService
from supervisor.services.version import VersionService
from supervisor.snapshotter import NativeSnapshotter, OverlaySnapshotter, Snapshotter
from supervisor.snapshotter.overlay import overlay_problem
from supervisor.stats import StatsHub
from supervisor.timeutil import now

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


@dataclass
class Daemon:
    config: Config
    registry: PluginRegistry = field(default_factory=PluginRegistry)
    events: Exchange = field(default_factory=Exchange)
    started_at: Any = None
    _lock: RootLock | None = None
    _db: Database | None = None
    _server: grpc.aio.Server | OwnServer | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    reserve: DiskReserve = field(default_factory=DiskReserve)
    _reserve_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self.started_at = now()
        cfg.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        cfg.state.mkdir(parents=True, exist_ok=True, mode=0o711)
        # First, before anything writes: on a full disk the reserve makes room for start-up
        # (the lock's pid, the databases' -shm files, the overlay check); see diskreserve.py.
        snapshots_root = cfg.root / "snapshots"
        await asyncio.to_thread(self.reserve.prepare, [cfg.root, cfg.root / "content",
                                                       snapshots_root / "overlayfs", snapshots_root / "native"])
        self._reserve_task = asyncio.get_running_loop().create_task(self.reserve.run())
        self._lock = RootLock(cfg.root)
        self._lock.acquire()
        uid = server_uuid(cfg.root)
        self._db = await Database.open(cfg.root / "metadata.db", on_full=self.reserve.release)
        self.registry.add(Plugin("io.containerd.metadata.v1", "sqlite", exports={"path": str(self._db.path)}))
        self.registry.add(Plugin("io.containerd.event.v1", "exchange"))
        self.namespaces = NamespaceStore(self._db)
        self.leases = LeaseStore(self._db)
        self.content = LocalContentStore(cfg.root / "content")
        self.registry.add(Plugin("io.containerd.content.v1", "content", exports={"root": str(cfg.root / "content")}))
        # Namespaced records over the shared blobs; on_delete is where the garbage collector hooks in.
        self.content_records = NamespacedContentStore(self._db, self.content)
        self.snapshotters = await open_snapshotters(snapshots_root, self.registry, on_full=self.reserve.release)
        # Garbage collection; stores call self.collector.schedule after deleting things.
        self.collector = Collector(self._db, self.content, self.snapshotters,
                                   guards=[self.content_records.gc_guard])
        self.content_records.on_delete = self.collector.free  # a deleted record may free a blob
        # Jobs of a daemon that died (a crash, maybe on a full disk) hold what they wrote: let it go.
        await release_stale(self.leases)
        self.collector.start()
        self.registry.add(Plugin("io.containerd.gc.v1", "scheduler", requires=["io.containerd.metadata.v1"]))

        # Namespaced snapshots over the backends; the collector must not sweep what they are creating.
        self.snapshot_store = SnapshotStore(self._db, self.snapshotters, on_delete=self.collector.schedule)
        self.collector.guards.append(self.snapshot_store.gc_guard)
        self.collector.snapshot_cleanup = self.snapshot_store.cleanup  # recovers commits, then sweeps

        # Tasks: one shim per container; shims forward their events to our ttrpc socket.
        self.containers = ContainerStore(self._db, self.collector.schedule)
        # Stats streams: shims push samples to the same ttrpc socket; the hub fans them out.
        self.stats = StatsHub(describe_from(self.containers))
        self.shim_events = await serve_shim_events(cfg.state / "ttrpc.sock", self.events, [
            (shim_stats_pb2.DESCRIPTOR.services_by_name["StatsSink"], StatsSink(self.stats))])
        self.tasks = TaskManager(cfg.state, self._shim_binary, self.events)
        self.stats_control = ShimSamplerControl(self.tasks, self.stats)
        self.stats.bind(self.stats_control)
        self.tasks.observers.append(self.stats.task_changed)
        await self.tasks.recover()
        self.registry.add(Plugin("io.containerd.runtime.v2", "task", requires=["io.containerd.event.v1"],
                                 platforms=[("linux", _arch(), "")]))

        # (plugin id, servicer, plugins it requires); the servicer's generated base class
        # tells which service it implements.
        services: list[tuple[str, Any, list[str]]] = [
            ("version", VersionService(), []),
            ("namespaces", NamespacesService(self.namespaces, self.events), ["io.containerd.metadata.v1"]),
            ("events", EventsService(self.events), ["io.containerd.event.v1"]),
            ("introspection", IntrospectionService(self.registry, uid), []),
            ("dockyard.system", SystemService(self), []),
            ("containers", ContainersService(self.containers, self.events), ["io.containerd.metadata.v1"]),
            ("tasks", TasksService(self.tasks, self.containers), ["io.containerd.runtime.v2"]),
            ("dockyard.stats", StatsService(self.stats), ["io.containerd.runtime.v2"]),
            ("leases", LeasesService(self.leases, self.collector.collect, self.collector.schedule),
             ["io.containerd.metadata.v1"]),
            ("dockyard.gc", GCService(self.collector), ["io.containerd.gc.v1"]),
            ("images", ImagesService(ImageStore(self._db, collect=self.collector.collect,
                                                on_delete=self.collector.schedule), self.events),
             ["io.containerd.metadata.v1", "io.containerd.gc.v1"]),
            ("content", ContentService(self.content_records, self.events),
             ["io.containerd.content.v1", "io.containerd.metadata.v1"]),
            ("snapshots", SnapshotsService(self.snapshot_store, self.events),
             ["io.containerd.snapshotter.v1", "io.containerd.metadata.v1"]),
            ("diff", DiffService(Differ(self.content_records, cfg.root / "tmp")),
             ["io.containerd.content.v1", "io.containerd.metadata.v1"]),
            ("dockyard.transfer", TransferService(ImageTransfer(
                self.content_records, self.snapshot_store,
                ImageStore(self._db, collect=self.collector.collect, on_delete=self.collector.schedule),
                self.leases, Differ(self.content_records, cfg.root / "tmp"), cfg.default_snapshotter,
                self.collector.schedule), self.events),
             ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
            ("dockyard.registry", RegistryService(Registry(
                self.content_records,
                ImageStore(self._db, collect=self.collector.collect, on_delete=self.collector.schedule),
                self.leases, Unpacker(self.content_records, self.snapshot_store,
                                      Differ(self.content_records, cfg.root / "tmp"), self.leases,
                                      self.collector.schedule),
                Hosts(config_dir_for(cfg.source, DEFAULT_CONFIG)), cfg.default_snapshotter,
                self.collector.schedule), self.events),
             ["io.containerd.content.v1", "io.containerd.metadata.v1", "io.containerd.snapshotter.v1"]),
        ]
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
        for plugin_id, servicer, requires in services:
            names.append(_register(table, servicer))
            self.registry.add(Plugin(GRPC_PLUGIN, plugin_id, requires=requires))
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
        self._server = server
        os.chmod(cfg.address, 0o660)
        for name in [*names, ""]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if ksm.state() == "off":
            log.info("ksmd is off: shims keep ~5 MiB each of pages they could share "
                     "(echo 1 > %s lets the kernel merge them; see shim/zygote.py)", ksm.RUN)
        log.info("dockyardd %s serving on %s (root %s, state %s)", _version(), cfg.address, cfg.root, cfg.state)

    def _shim_binary(self, runtime: str) -> ShimBinary:
        """The shim serving `runtime`: a configured binary, or Dockyard's own shim."""
        if not runtime:
            raise InvalidArgument("container has no runtime name")
        binary = self.config.runtimes.get(runtime)
        command = (binary,) if binary else (sys.executable, "-m", "shim")
        return ShimBinary(command, str(self.config.address), str(self.config.state / "ttrpc.sock"),
                          publish_binary=sys.argv[0] or "dockyardd", foreign=bool(binary))

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Finish in-flight calls (up to a grace period), then release everything."""
        log.info("stopping: finishing in-flight calls")
        self.events.close()  # event streams end now instead of holding the grace period
        if getattr(self, "stats", None) is not None:
            await self.stats.close()  # stats streams end (UNAVAILABLE: clients reconnect), samplers stop
            if getattr(self, "stats_control", None) is not None:
                self.stats_control.close()
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
            self._server = None
            with suppress(FileNotFoundError):  # ours to remove only once we served on it
                self.config.address.unlink()
        if getattr(self, "tasks", None) is not None:
            await self.tasks.close()  # the shims and their containers keep running
        if getattr(self, "shim_events", None) is not None:
            await self.shim_events.shutdown(grace=2)
        if getattr(self, "collector", None) is not None:
            await self.collector.stop()
        if getattr(self, "snapshot_store", None) is not None:
            await self.snapshot_store.drain()  # finish backend removals instead of orphaning them
        for snapshotter in getattr(self, "snapshotters", {}).values():
            await snapshotter.close()
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._reserve_task is not None:
            self._reserve_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._reserve_task
            self._reserve_task = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        log.info("stopped")


async def open_snapshotters(root: Path, registry: PluginRegistry,
                            on_full: Callable[[str], bool] | None = None) -> dict[str, Snapshotter]:
    """Every snapshotter this host can run, under <root>/<name>; the others are reported.
    `on_full` makes room for a removal on a full disk (`DiskReserve.release`)."""
    found: dict[str, Snapshotter] = {}
    problem = await asyncio.to_thread(_overlay_problem, root / "overlayfs")
    plugin_type = "io.containerd.snapshotter.v1"
    if problem is None:
        found["overlayfs"] = await OverlaySnapshotter.open(root / "overlayfs", on_full=on_full)
        registry.add(Plugin(plugin_type, "overlayfs", exports={"root": str(root / "overlayfs")}))
    else:
        log.warning("overlayfs snapshotter unavailable: %s", problem)
        registry.add(Plugin(plugin_type, "overlayfs", init_error=f"skip plugin: {problem}"))
    found["native"] = await NativeSnapshotter.open(root / "native", on_full=on_full)
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
    from supervisor.version import VERSION

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
