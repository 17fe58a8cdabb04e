"""Docker's `run`/`create` flags beyond what `ctr run` has: their parsing and what each changes in the
OCI spec. `dock/oci.py`'s build_spec applies a `RunFlags` after the image config and the user:

    --entrypoint CMD      the image's Entrypoint replaced, its Cmd dropped (as Docker: "" clears it)
    --env-file FILE       KEY=VALUE lines (# comments; KEY alone as -e KEY: our value, else unset)
    --ulimit nofile=1024:2048   process.rlimits, replacing the default of the same kind
    --device /dev/fuse[:/dev/fuse][:rwm]   a host device node in the container, allowed in its cgroup
    --sysctl net.ipv4.ip_forward=1          linux.sysctl, only the namespaced ones Docker allows
    --group-add audio|29  supplementary groups (names from the image's /etc/group)
    --shm-size 256m       /dev/shm's size
    --pid host, --ipc host   the host's PID or IPC namespace
    --cpu-shares N, --cpuset-cpus 0-2,4, --memory-swap BYTES   cgroup resources
    --security-opt no-new-privileges[=false]
    --init                tini as PID 1 (the host's static one, at /dev/init): forwards signals, reaps zombies

Every parse function raises InvalidArgument with the flag and the value in its words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dock import kvfile
from dock.sizes import parse_bytes
from dockyard_common.devnode import device_node
from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import Spec, without_namespace
from dockyard_common.ocispec import linux_of as _linux
from dockyard_common.ocispec import process_of as _process
from dockyard_common.ocispec import resources_of as _resources
from dockyard_common.sysctls import namespace_of as namespace_of_sysctl

RLIM_INFINITY = 2**64 - 1  # what "unlimited" or -1 means in an OCI rlimit
# The kinds `--ulimit` takes (Docker's names), as OCI's RLIMIT_* types.
ULIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                "rss", "rtprio", "rttime", "sigpending", "stack")
# Docker's namespaced sysctls (dockyard_common/sysctls.py): the IPC and network ones, net.* only
# with a network namespace of the container's own, the IPC ones only with its own IPC namespace.
DOCKER_SYSCTL_NAMESPACES = ("ipc", "network")
HOST_NAME_MAX = 64  # sethostname(2) refuses longer names
NO_NEW_PRIVILEGES = "no-new-privileges"
_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
# --init: Debian's tini-static (static: the image may have no libc), bound read-only at /dev/init,
# inside the /dev tmpfs the runtime makes: never on image content, fine with --read-only
# (docs/design-notes.md). DOCK_INIT_PATH names another binary (tests point it at a missing one).
INIT_BINARY, INIT_PATH_ENV, INIT_IN_CONTAINER = "/usr/bin/tini-static", "DOCK_INIT_PATH", "/dev/init"


@dataclass
class RunFlags:
    """The parsed flags; each default leaves the spec as containerd's defaults and the image made it."""

    entrypoint: list[str] | None = None  # None: the image's; []: none (`--entrypoint ""`)
    ulimits: list[dict[str, Any]] = field(default_factory=list)  # OCI rlimits
    devices: list[DeviceRequest] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    group_add: list[str] = field(default_factory=list)
    shm_size: int | None = None
    pid: str = ""  # "" or "host"
    ipc: str = ""  # "" or "host"
    cpu_shares: int | None = None
    cpuset_cpus: str = ""
    memory_swap: int | None = None  # -1: unlimited
    no_new_privileges: bool | None = None  # None: the default spec's (on)
    init: str = ""  # --init: the host path of the init binary (find_init), "" for none


@dataclass(frozen=True)
class DeviceRequest:
    host: str
    container: str
    access: str  # a subset of "rwm"


# -- parsing -----------------------------------------------------------------------------------------


def parse_entrypoint(text: str | None) -> list[str] | None:
    """Docker's --entrypoint is one executable, not a command line: `--entrypoint ""` clears it."""
    if text is None:
        return None
    return [text] if text else []


def parse_env_file(path: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Docker's --env-file: KEY=VALUE per line, blank lines and `#` comments skipped, a KEY alone
    passed through from `environ` (`passed_through`). The value is taken as written: no quotes are
    removed, as Docker."""
    environ = os.environ if environ is None else environ
    found: list[str] = []
    for where, line in kvfile.lines(path, "--env-file"):
        name, sep, value = line.partition("=")
        try:
            check_env_name(name)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
        found.append(f"{name}={value}" if sep else passed_through(name, environ))
    return found


def passed_through(name: str, environ: Mapping[str, str] | None = None) -> str:
    """Docker's `-e KEY` (or a KEY line of an env file): KEY=our value when we have one, else KEY
    alone, which removes one the image sets."""
    environ = os.environ if environ is None else environ
    return f"{name}={environ[name]}" if name in environ else name


def environment(env_files: Sequence[str], env: Sequence[str]) -> list[str]:
    """--env-file's entries, then -e's (so -e wins), KEY alone passed through; checked."""
    found = [e for path in env_files for e in parse_env_file(path)]
    found += [e if "=" in e else passed_through(e) for e in env]
    check_env(found)
    return found


def check_env_name(name: str) -> None:
    """An environment variable's name: not empty, no whitespace or NUL (Docker refuses `=x`)."""
    if not _valid_env_name(name):
        raise InvalidArgument(f"invalid environment variable name {name!r}")


def _valid_env_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "\0" for c in name)


def check_env(entries: Iterable[str]) -> None:
    """-e/--env-file entries: KEY=VALUE or KEY, a name that check_env_name takes, no NUL byte."""
    for entry in entries:
        name = entry.split("=", 1)[0]
        if not _valid_env_name(name):
            raise InvalidArgument(f"invalid environment variable {entry!r}: want KEY=VALUE")
        if "\0" in entry:
            raise InvalidArgument(f"environment variable {name!r}: its value holds a NUL byte")


def check_hostname(name: str) -> None:
    """What sethostname(2) takes, refused before anything is made rather than by the container's init."""
    if len(name.encode()) > HOST_NAME_MAX:
        raise InvalidArgument(f"hostname {name[:20]!r}...: longer than {HOST_NAME_MAX} bytes")
    if "\0" in name or "/" in name:
        raise InvalidArgument(f"hostname {name!r}: holds a NUL byte or '/'")


def _rlimit_value(text: str, flag: str) -> int:
    if text in ("-1", "unlimited"):
        return RLIM_INFINITY
    if not text.isdigit():
        raise InvalidArgument(f"{flag}: {text!r} is not a number (or -1 / unlimited)")
    value = int(text)
    if value >= RLIM_INFINITY:
        raise InvalidArgument(f"{flag}: {text!r} is too large")
    return value


def parse_ulimit(text: str) -> dict[str, Any]:
    """`nofile=1024`, `nofile=1024:2048`, `core=-1` (Docker's --ulimit) as an OCI rlimit."""
    flag = f"--ulimit {text!r}"
    name, sep, values = text.partition("=")
    if not sep or not values:
        raise InvalidArgument(f"{flag}: want NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    if name not in ULIMIT_NAMES:
        raise InvalidArgument(f"{flag}: unknown limit {name!r} (want one of {', '.join(ULIMIT_NAMES)})")
    soft_text, _, hard_text = values.partition(":")
    soft = _rlimit_value(soft_text, flag)
    hard = _rlimit_value(hard_text, flag) if hard_text else soft
    if soft > hard:
        raise InvalidArgument(f"{flag}: the soft limit {soft_text} is above the hard limit {hard_text}")
    return {"type": f"RLIMIT_{name.upper()}", "soft": soft, "hard": hard}


def parse_device(text: str) -> DeviceRequest:
    """`/dev/HOST[:/dev/CONTAINER][:PERMISSIONS]` (Docker's --device); permissions a subset of rwm."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise InvalidArgument(f"--device {text!r}: want /dev/HOST[:/dev/CONTAINER][:rwm]")
    host, container, access = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if parts[1] and set(parts[1]) <= set("rwm"):
            access = parts[1]
        else:
            container = parts[1]
    elif len(parts) == 3:
        container, access = parts[1], parts[2]
    if not host.startswith("/") or not container.startswith("/"):
        raise InvalidArgument(f"--device {text!r}: both paths must be absolute")
    if not access or not set(access) <= set("rwm") or len(set(access)) != len(access):
        raise InvalidArgument(f"--device {text!r}: permissions {access!r} must be made of r, w and m")
    return DeviceRequest(host, os.path.normpath(container), access)


def parse_memory_swap(text: str | None) -> int | None:
    """--memory-swap: a size (memory and swap together), -1 for unlimited swap, None when not given."""
    if text is None:
        return None
    return -1 if text.strip() == "-1" else parse_bytes(text)


def parse_sysctl(text: str) -> tuple[str, str]:
    """`KEY=VALUE` with a namespaced KEY (Docker's list: net.*, fs.mqueue.* and the IPC kernel.* ones)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidArgument(f"--sysctl {text!r}: want KEY=VALUE, e.g. net.ipv4.ip_forward=1")
    if namespace_of_sysctl(key) not in DOCKER_SYSCTL_NAMESPACES:
        raise InvalidArgument(f"--sysctl {key}: not a namespaced sysctl a container may set "
                              "(net.*, fs.mqueue.* and kernel.msg*/sem/shm* are)")
    if "/" in key or ".." in key:
        raise InvalidArgument(f"--sysctl {key}: not a sysctl name")
    return key, value


def parse_host_namespace(flag: str, text: str) -> str:
    """`--pid`/`--ipc`: "" (the container's own) or `host`."""
    if text not in ("", "host", "private"):
        raise InvalidArgument(f"{flag} {text!r}: want host (or private, the default)")
    return "host" if text == "host" else ""


def parse_cpuset(text: str) -> str:
    """`0-3,5`: CPU numbers and ranges, each range low to high."""
    if not _CPUSET.fullmatch(text):
        raise InvalidArgument(f"--cpuset-cpus {text!r}: want CPU numbers and ranges, e.g. 0-2,4")
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise InvalidArgument(f"--cpuset-cpus {text!r}: range {part} goes down")
    return text


def parse_no_new_privileges(text: str) -> bool | None:
    """`no-new-privileges`, `no-new-privileges=true|false` (or `:`): the value; None for another option."""
    key, sep, value = text.partition("=")
    if not sep:
        key, sep, value = text.partition(":")
    if key != NO_NEW_PRIVILEGES:
        return None
    if not sep:
        return True
    if value not in ("true", "false"):
        raise InvalidArgument(f"security option {text!r}: want {NO_NEW_PRIVILEGES}=true or =false")
    return value == "true"


def find_init(environ: Mapping[str, str] | None = None) -> str:
    """--init's binary on this host (the shim binds it from here), checked before anything is made."""
    environ = os.environ if environ is None else environ
    path = os.path.abspath(environ.get(INIT_PATH_ENV) or INIT_BINARY)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise InvalidArgument(f"--init: no init binary at {path} (install Debian's tini package: {INIT_BINARY})")
    return path


# -- the spec ------------------------------------------------------------------------------------------


def with_devices(spec: Spec, requests: Sequence[DeviceRequest]) -> None:
    linux = _linux(spec)
    rules = _resources(spec).setdefault("devices", [])
    for req in requests:
        node = device_node(req.host)
        entry = {"path": req.container, "type": node.kind, "major": node.major, "minor": node.minor,
                 "fileMode": node.mode, "uid": node.uid, "gid": node.gid}
        linux["devices"] = [d for d in linux.get("devices") or [] if d.get("path") != req.container] + [entry]
        rules.append({"allow": True, "type": node.kind, "major": node.major, "minor": node.minor,
                      "access": req.access})


def with_rlimits(spec: Spec, limits: Sequence[dict[str, Any]]) -> None:
    """Each limit replaces the spec's of the same type (the default RLIMIT_NOFILE among them)."""
    proc = _process(spec)
    for limit in limits:
        proc["rlimits"] = [r for r in proc.get("rlimits") or [] if r.get("type") != limit["type"]] + [dict(limit)]


def check_sysctls(sysctls: Mapping[str, str], *, host_net: bool, host_ipc: bool) -> None:
    for key in sysctls:
        if host_net and namespace_of_sysctl(key) == "network":
            raise InvalidArgument(f"--sysctl {key}: not allowed with the host's network (--net host)")
        if host_ipc and namespace_of_sysctl(key) == "ipc":
            raise InvalidArgument(f"--sysctl {key}: not allowed with the host's IPC namespace (--ipc host)")


def with_init(spec: Spec, path: str, *, subreaper: bool = False) -> None:
    """Docker's --init: the host's init at /dev/init (bind, ro), the process's args after it and `--`.
    `subreaper` (for --pid host, where tini is not PID 1): tini's -s, so orphans still come to it
    (Docker leaves tini to warn that it cannot reap them)."""
    for m in spec.get("mounts") or []:
        dest = os.path.normpath(m.get("destination") or "/")
        if dest == INIT_IN_CONTAINER or (dest == "/dev" and m.get("type") == "bind"):
            # a bind of the host's /dev would get the mount point made in the host's own /dev
            raise InvalidArgument(f"--init: a mount at {dest} leaves no place for {INIT_IN_CONTAINER}")
    if any(d.get("path") == INIT_IN_CONTAINER for d in _linux(spec).get("devices") or []):
        raise InvalidArgument(f"--init: a device at {INIT_IN_CONTAINER} leaves no place for the init")
    spec.setdefault("mounts", []).append({"destination": INIT_IN_CONTAINER, "type": "bind", "source": path,
                                         "options": ["bind", "ro"]})
    proc = _process(spec)
    proc["args"] = [INIT_IN_CONTAINER, *(["-s"] if subreaper else []), "--", *(proc.get("args") or [])]


def with_shm_size(spec: Spec, size: int) -> None:
    for m in spec.get("mounts") or []:
        if m.get("destination") == "/dev/shm" and m.get("type") == "tmpfs":
            m["options"] = [o for o in m.get("options") or [] if not o.startswith("size=")] + [f"size={size // 1024}k"]


def with_host_ipc(spec: Spec) -> None:
    """The host's IPC namespace, and with it the host's /dev/shm (as Docker's --ipc host)."""
    without_namespace(spec, "ipc")
    spec["mounts"] = [m for m in spec.get("mounts") or [] if m.get("destination") != "/dev/shm"]
    spec["mounts"].append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                           "options": ["rbind", "nosuid", "noexec", "nodev"]})


def group_ids(names: Sequence[str], lookup: Callable[[str], int | None]) -> list[int]:
    """--group-add's groups as gids: numbers as they are, names through `lookup` (the image's /etc/group)."""
    gids: list[int] = []
    for name in names:
        if name.isdigit():
            gid = int(name)
            if gid > 2**31 - 1:
                raise InvalidArgument(f"--group-add {name}: out of range")
        else:
            found = lookup(name)
            if found is None:
                raise InvalidArgument(f"--group-add {name}: no such group in the image's /etc/group")
            gid = found
        gids.append(gid)
    return gids


def _no_group(name: str) -> int | None:
    return None


def apply(spec: Spec, flags: RunFlags, *, host_net: bool = False,
          lookup_group: Callable[[str], int | None] = _no_group) -> None:
    """What `flags` asks of `spec` (the image config and the user already applied); `lookup_group`
    gives a --group-add name's gid in the image (by default none is known)."""
    if flags.ulimits:
        with_rlimits(spec, flags.ulimits)
    if flags.devices:
        with_devices(spec, flags.devices)
    if flags.pid == "host":
        without_namespace(spec, "pid")
    if flags.ipc == "host":
        with_host_ipc(spec)
    if flags.shm_size is not None and flags.ipc != "host":
        with_shm_size(spec, flags.shm_size)
    if flags.sysctls:
        check_sysctls(flags.sysctls, host_net=host_net, host_ipc=flags.ipc == "host")
        _linux(spec).setdefault("sysctl", {}).update(flags.sysctls)
    if flags.group_add:
        user = _process(spec).setdefault("user", {"uid": 0, "gid": 0})
        gids = list(user.get("additionalGids") or [])
        for gid in group_ids(flags.group_add, lookup_group):
            if gid not in gids:
                gids.append(gid)
        user["additionalGids"] = gids
    cpu: dict[str, Any] = {}
    if flags.cpu_shares is not None:
        if flags.cpu_shares < 2 or flags.cpu_shares > 262144:
            raise InvalidArgument(f"--cpu-shares {flags.cpu_shares}: want 2 to 262144")
        cpu["shares"] = flags.cpu_shares
    if flags.cpuset_cpus:
        cpu["cpus"] = flags.cpuset_cpus
    if cpu:
        _resources(spec).setdefault("cpu", {}).update(cpu)
    if flags.memory_swap is not None:
        memory = _resources(spec).setdefault("memory", {})
        limit = memory.get("limit")
        if limit is None:
            raise InvalidArgument("--memory-swap needs --memory (the limit it adds swap to)")
        if flags.memory_swap != -1 and flags.memory_swap < limit:
            raise InvalidArgument(f"--memory-swap {flags.memory_swap} is below --memory {limit}: "
                                  "it counts memory and swap together")
        memory["swap"] = flags.memory_swap
    if flags.no_new_privileges is not None:
        _process(spec)["noNewPrivileges"] = flags.no_new_privileges
    if flags.init:  # after --device: a device at /dev/init is refused
        with_init(spec, flags.init, subreaper=flags.pid == "host")
