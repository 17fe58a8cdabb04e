"""dockyardd configuration: defaults, then the TOML file, then command-line flags.

Example /etc/dockyard/config.toml:

    root = "/var/lib/dockyard"
    state = "/run/dockyard"
    [grpc]
    address = "/run/dockyard/dockyard.sock"
    [log]
    level = "info"      # debug, info, warning, error
    format = "text"     # or "json"
    [snapshotter]
    default = "overlayfs"
    [container_log]     # defaults of the logs `dock run` asks for (--log-opt overrides)
    max_size = "10m"    # rotate a container's log when it would pass this
    max_file = 3        # files kept, the current one included
    [runtimes]          # runtime name -> shim binary; unlisted names use Dockyard's own shim
    "io.containerd.runc.v2" = "/usr/bin/containerd-shim-runc-v2"
    [diff]
    compressor = "auto"   # "containerd": its encoders (dockyard-compress), its layer digests; "python": zlib/libzstd
    [build]
    cache_max_size = "10g"   # the build cache's own layers, per namespace; least recently used go first
    kept_contexts = 8        # synced build contexts kept for the next build (0: none; `dock builder prune`)
    [cri]               # Kubernetes CRI (runtime.v1) on the same socket
    enabled = true
    sandbox_image = "registry.k8s.io/pause:3.10"   # each pod's sandbox (pulled when missing; containerd 2.x default)
    stream_server_address = "127.0.0.1"   # the IP the Exec/Attach/PortForward streaming server listens on
                                          # and names in the URLs it gives kubelet (as containerd's key)
    stream_server_port = 0                # its TCP port; 0: one the kernel picks
    pods_per_shim = 8   # pods sharing one shim (1-64; 1: a shim per pod, as containerd)
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard_common.containerlog import parse_max_file, parse_size
from dockyard_common.errors import InvalidArgument
from supervisor.archive.gocompress import HELPER, find_helper
from supervisor.build.cacheprune import parse_limit
from supervisor.cri.shimgroups import DEFAULT_PODS_PER_SHIM, MAX_PODS_PER_SHIM
from supervisor.network.networks import NAME as network_name

DEFAULT_CONFIG = Path("/etc/dockyard/config.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DIFF_COMPRESSORS = ("auto", "containerd", "python")


class ConfigError(Exception):
    """A configuration the daemon cannot start with; the message says what to fix."""


GRPC_SERVERS = ("dockyard", "grpcio")


@dataclass
class Config:
    root: Path = Path("/var/lib/dockyard")
    state: Path = Path("/run/dockyard")
    address: Path = Path("/run/dockyard/dockyard.sock")
    log_level: str = "info"
    log_format: str = "text"
    default_snapshotter: str = "overlayfs"
    max_message_size: int = 16 * 1024 * 1024  # what ctr caps at, both ways
    # Which server answers the socket: ours (supervisor/grpcserver; ~2x grpcio's throughput) or
    # grpcio's aio server. DOCKYARD_GRPC_SERVER overrides the file (CI runs both).
    grpc_server: str = "dockyard"
    runtimes: dict[str, str] = field(default_factory=dict)
    # The network `dock run` joins without --net (its "bridge"); "none": no default network, as
    # dockerd's `--bridge none` (a container then gets only lo unless it names a network).
    default_network: str = "dockyard"
    container_log_max_size: str = "10m"
    container_log_max_file: int = 3
    build_cache_max_size: str = ""  # "" no limit (supervisor/build/cacheprune.py)
    build_kept_contexts: int = 8  # supervisor/build/contextstore.py
    # auto: containerd's encoders when dockyard-compress is installed (supervisor/archive/gocompress.py)
    diff_compressor: str = "auto"
    cri_enabled: bool = True
    # containerd 1.6's default sandbox image (critest's images are matched against it)
    cri_sandbox_image: str = "registry.k8s.io/pause:3.10"
    # The CRI streaming server's listening address and port (supervisor/cri/streaming/server.py);
    # the URLs it hands out name them. Loopback and a kernel-picked port, as containerd's defaults.
    cri_stream_address: str = "127.0.0.1"
    cri_pods_per_shim: int = DEFAULT_PODS_PER_SHIM  # supervisor/cri/shimgroups.py says why
    cri_stream_port: int = 0
    source: str = field(default="defaults", compare=False)


# section → {key: (Config attribute, expected type)}
_SCHEMA: dict[str, dict[str, tuple[str, type]]] = {
    "": {"root": ("root", str), "state": ("state", str), "version": ("", int)},
    "grpc": {"address": ("address", str), "max_message_size": ("max_message_size", int),
             "server": ("grpc_server", str)},
    "log": {"level": ("log_level", str), "format": ("log_format", str)},
    "snapshotter": {"default": ("default_snapshotter", str)},
    "network": {"default": ("default_network", str)},
    "container_log": {"max_size": ("container_log_max_size", str), "max_file": ("container_log_max_file", int)},
    "build": {"cache_max_size": ("build_cache_max_size", str), "kept_contexts": ("build_kept_contexts", int)},
    "diff": {"compressor": ("diff_compressor", str)},
    "cri": {"enabled": ("cri_enabled", bool), "sandbox_image": ("cri_sandbox_image", str),
            "stream_server_address": ("cri_stream_address", str), "stream_server_port": ("cri_stream_port", int),
            "pods_per_shim": ("cri_pods_per_shim", int)},
}


def _apply(cfg: Config, data: dict[str, Any], path: Path) -> None:
    runtimes = data.pop("runtimes", {})
    if not isinstance(runtimes, dict) or not all(isinstance(v, str) and v for v in runtimes.values()):
        raise ConfigError(f"{path}: [runtimes] maps runtime names to shim binary paths (strings)")
    cfg.runtimes = dict(runtimes)
    for section, keys in _SCHEMA.items():
        table = data if not section else data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            if not section and key in _SCHEMA and key:
                continue  # a sub-table, handled in its own pass
            where = f"{section}.{key}" if section else key
            if key not in keys:
                raise ConfigError(f"{path}: unknown setting {where!r}")
            attr, kind = keys[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ConfigError(f"{path}: {where} must be a {kind.__name__}, not {value!r}")
            if attr:
                setattr(cfg, attr, Path(str(value)) if attr in ("root", "state", "address") else value)


def validate(cfg: Config) -> Config:
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {cfg.log_level!r}")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {cfg.log_format!r}")
    for name in ("root", "state", "address"):
        if not getattr(cfg, name).is_absolute():
            raise ConfigError(f"{name} must be an absolute path, not {str(getattr(cfg, name))!r}")
    if cfg.max_message_size < 1024 * 1024:
        raise ConfigError("grpc.max_message_size must be at least 1 MiB")
    if cfg.default_network != "none" and not network_name.fullmatch(cfg.default_network):
        raise ConfigError(f"network.default must be a network name or none, not {cfg.default_network!r}")
    try:
        parse_size(cfg.container_log_max_size)
        parse_max_file(str(cfg.container_log_max_file))
    except InvalidArgument as exc:
        raise ConfigError(f"container_log: {exc}") from None
    try:
        parse_limit(cfg.build_cache_max_size)
    except InvalidArgument as exc:
        raise ConfigError(f"build.cache_max_size: {exc}") from None
    if cfg.build_kept_contexts < 0:
        raise ConfigError(f"build.kept_contexts must not be negative, not {cfg.build_kept_contexts}")
    if cfg.diff_compressor not in DIFF_COMPRESSORS:
        raise ConfigError(f"diff.compressor must be one of {', '.join(DIFF_COMPRESSORS)}, not {cfg.diff_compressor!r}")
    if cfg.diff_compressor == "containerd" and find_helper() is None:
        raise ConfigError(f"diff.compressor = \"containerd\" needs {HELPER} on PATH (scripts/install builds it)")
    if not cfg.cri_sandbox_image.strip():
        raise ConfigError("cri.sandbox_image must name an image")
    try:
        ipaddress.ip_address(cfg.cri_stream_address)
    except ValueError:
        raise ConfigError(f"cri.stream_server_address must be an IP address, not {cfg.cri_stream_address!r}") from None
    if not 0 <= cfg.cri_stream_port <= 65535:
        raise ConfigError("cri.stream_server_port must be a TCP port (0-65535; 0: any free one), "
                          f"not {cfg.cri_stream_port}")
    if not 1 <= cfg.cri_pods_per_shim <= MAX_PODS_PER_SHIM:
        raise ConfigError(f"cri.pods_per_shim must be 1-{MAX_PODS_PER_SHIM} (1: a shim per pod), "
                          f"not {cfg.cri_pods_per_shim}")
    if cfg.grpc_server not in GRPC_SERVERS:
        raise ConfigError(f"grpc.server must be one of {', '.join(GRPC_SERVERS)}, not {cfg.grpc_server!r}")
    return cfg


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """Read `path` (the default path may be missing; an explicit one may not), then overrides."""
    cfg = Config()
    file = path or DEFAULT_CONFIG
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"config file {file} does not exist") from None
        raw = None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    if raw is not None:
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        _apply(cfg, data, file)
        cfg.source = str(file)
    state_given = overrides.get("state") is not None
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    # The socket follows --state unless it was placed explicitly.
    if state_given and overrides.get("address") is None and cfg.address == Config.address:
        cfg.address = cfg.state / "dockyard.sock"
    cfg.grpc_server = os.environ.get("DOCKYARD_GRPC_SERVER") or cfg.grpc_server
    return validate(cfg)


def compress_helper(cfg: Config) -> str | None:
    """The layer compressor the differ runs: containerd's encoders unless told otherwise."""
    return None if cfg.diff_compressor == "python" else find_helper()
