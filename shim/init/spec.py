"""The OCI runtime spec (config.json) as dataclasses, validated on the way in.

`parse_spec` takes the JSON text (or bytes, or an already decoded dict) and returns a `Spec`;
anything malformed raises InvalidArgument naming the field (``spec: process.user.uid: expected
an integer, got "x"``). Only the fields the container init acts on are modelled; the rest
(``linux.resources``, ``linux.seccomp``, ``annotations``) are kept as raw JSON for whoever owns
them (cgroups, seccomp). `parse_process` does the same for the process object of an exec.

`default_spec(rootless=...)` returns what ``runc spec`` (``--rootless``) writes, as a dict.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Any

from dockyard_common.devices import check_device_number
from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import json_value
from dockyard_common.linux import CAPABILITIES
from dockyard_common.sysctls import namespace_of as namespace_of_sysctl

# OCI namespace type -> the name used in /proc/<pid>/ns/.
NAMESPACE_TYPES: dict[str, str] = {
    "user": "user",
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "cgroup": "cgroup",
    "time": "time",
}

RLIMITS = frozenset({
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
})

# Sysctls the kernel scopes to the IPC namespace (runc's list; `sysctl_namespace` has the rest):
# any sysctl not scoped to a namespace, written through the container's /proc/sys, is the host's.

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
MAX_ID_MAPPINGS = 340  # lines the kernel takes in uid_map/gid_map

PROPAGATIONS = frozenset({"", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                          "runbindable"})


@dataclass(frozen=True)
class User:
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """Capability names per set; `None` for a set the spec leaves out (it then stays empty)."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rlimit:
    type: str
    hard: int
    soft: int


@dataclass(frozen=True)
class Process:
    args: tuple[str, ...]
    cwd: str = "/"
    env: tuple[str, ...] = ()
    user: User = field(default_factory=User)
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    capabilities: Capabilities | None = None
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""

    def getenv(self, name: str) -> str | None:
        for entry in self.env:
            key, sep, value = entry.partition("=")
            if sep and key == name:
                return value
        return None


@dataclass(frozen=True)
class Root:
    path: str = "rootfs"
    readonly: bool = False


@dataclass(frozen=True)
class SpecMount:
    destination: str
    type: str = ""
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    type: str
    path: str = ""


@dataclass(frozen=True)
class IDMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class Device:
    path: str
    type: str  # c, b, u (unbuffered char) or p (fifo)
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Linux:
    namespaces: tuple[Namespace, ...] = ()
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    devices: tuple[Device, ...] = ()
    sysctl: dict[str, str] = field(default_factory=dict)
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    rootfs_propagation: str = ""
    cgroups_path: str = ""
    resources: dict[str, Any] | None = None
    seccomp: dict[str, Any] | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


@dataclass(frozen=True)
class Spec:
    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str = ""
    domainname: str = ""
    mounts: tuple[SpecMount, ...] = ()
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
    hooks: tuple[str, ...] = ()  # the kinds of OCI hooks the spec lists (their shape checked)

    def new_namespace(self, ns_type: str) -> bool:
        """True when the container gets a fresh namespace of this type (listed without a path)."""
        ns = self.linux.namespace(ns_type)
        return ns is not None and not ns.path


# ----- field readers: each names the path of a bad field -----------------------------------------


def _bad(path: str, what: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f"spec: {path}: expected {what}, got {json.dumps(value)[:80]}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "an object", value)
    return value


def _opt_obj(d: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = d.get(key)
    return None if value is None else _obj(value, f"{path}.{key}" if path else key)


def _str(d: dict[str, Any], key: str, path: str, default: str = "") -> str:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(f"{path}.{key}" if path else key, "a string", value)
    _no_nul(value, f"{path}.{key}" if path else key)
    return value


def _raw_str(d: dict[str, Any], key: str) -> str:
    """A top-level string whose caller checks NUL bytes itself."""
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(key, "a string", value)
    return value


def _no_nul(value: str, where: str) -> None:
    # Every string here reaches a system call as a C string, which would end at the NUL.
    if "\0" in value:
        raise InvalidArgument(f"spec: {where}: contains a NUL byte")


def _int(d: dict[str, Any], key: str, path: str, default: int | None = None, *, lo: int | None = None,
         hi: int | None = None) -> int:
    value = d.get(key, default)
    where = f"{path}.{key}" if path else key
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidArgument(f"spec: {where}: {value} out of range")
    return value


def _opt_int(d: dict[str, Any], key: str, path: str, **kw: Any) -> int | None:
    return None if d.get(key) is None else _int(d, key, path, **kw)


def _bool(d: dict[str, Any], key: str, path: str) -> bool:
    value = d.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{path}.{key}", "a boolean", value)
    return value


def _list(d: dict[str, Any], key: str, path: str) -> list[Any]:
    value = d.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{path}.{key}" if path else key, "an array", value)
    return value


def _strs(d: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    out = _list(d, key, path)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise _bad(f"{path}.{key}[{i}]", "a string", item)
        _no_nul(item, f"{path}.{key}[{i}]")
    return tuple(out)


def _abs(value: str, where: str) -> str:
    if not value.startswith("/"):
        raise InvalidArgument(f"spec: {where}: {value!r} is not an absolute path")
    return value


_U32 = 2**32 - 1
# The largest uid or gid: (uid_t)-1 means "leave unchanged" to setresuid(2) and kin, so a spec
# asking for it would keep the process root.
MAX_ID = _U32 - 1
NGROUPS_MAX = 65536  # setgroups(2) refuses more
HOST_NAME_MAX = 64  # sethostname(2) and setdomainname(2) refuse longer names


# ----- the objects ---------------------------------------------------------------------------------


def _parse_caps(d: dict[str, Any], path: str) -> Capabilities:
    sets: dict[str, tuple[str, ...]] = {}
    for key in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        names = _strs(d, key, path)
        for name in names:
            if name not in CAPABILITIES:
                raise InvalidArgument(f"spec: {path}.{key}: unknown capability {name!r}")
        sets[key] = names
    return Capabilities(**sets)


def parse_process(data: str | bytes | dict[str, Any], path: str = "process") -> Process:
    """Parse one OCI process object (the spec's `process`, or an exec's process JSON)."""
    d = _obj(_decode(data), path) if not isinstance(data, dict) else _obj(data, path)
    args = _strs(d, "args", path)
    if not args:
        raise InvalidArgument(f"spec: {path}.args: must not be empty")
    cwd = _abs(_str(d, "cwd", path, "/") or "/", f"{path}.cwd")
    env = _strs(d, "env", path)
    user_d = _opt_obj(d, "user", path) or {}
    upath = f"{path}.user"
    umask = _opt_int(user_d, "umask", upath, lo=0, hi=0o777)
    gids = _list(user_d, "additionalGids", upath)
    if len(gids) > NGROUPS_MAX:
        raise InvalidArgument(f"spec: {upath}.additionalGids: {len(gids)} groups, at most {NGROUPS_MAX}")
    for i, g in enumerate(gids):
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_ID:
            raise _bad(f"{upath}.additionalGids[{i}]", f"a gid (0-{MAX_ID})", g)
    user = User(
        uid=_int(user_d, "uid", upath, 0, lo=0, hi=MAX_ID),
        gid=_int(user_d, "gid", upath, 0, lo=0, hi=MAX_ID),
        umask=umask,
        additional_gids=tuple(gids),
    )
    console = _opt_obj(d, "consoleSize", path)
    console_size = None
    if console is not None:
        console_size = (_int(console, "height", f"{path}.consoleSize", 0, lo=0, hi=65535),
                        _int(console, "width", f"{path}.consoleSize", 0, lo=0, hi=65535))
    caps_d = _opt_obj(d, "capabilities", path)
    rlimits = []
    seen: set[str] = set()
    for i, r in enumerate(_list(d, "rlimits", path)):
        rpath = f"{path}.rlimits[{i}]"
        r = _obj(r, rpath)
        rtype = _str(r, "type", rpath)
        if rtype not in RLIMITS:
            raise InvalidArgument(f"spec: {rpath}.type: unknown rlimit {rtype!r}")
        if rtype in seen:
            raise InvalidArgument(f"spec: {rpath}.type: duplicate rlimit {rtype!r}")
        seen.add(rtype)
        hard, soft = _int(r, "hard", rpath, lo=0, hi=2**64 - 1), _int(r, "soft", rpath, lo=0, hi=2**64 - 1)
        if soft > hard:
            raise InvalidArgument(f"spec: {rpath}: soft limit {soft} exceeds hard limit {hard}")
        rlimits.append(Rlimit(rtype, hard, soft))
    return Process(
        args=args,
        cwd=cwd,
        env=env,
        user=user,
        terminal=_bool(d, "terminal", path),
        console_size=console_size,
        capabilities=None if caps_d is None else _parse_caps(caps_d, f"{path}.capabilities"),
        rlimits=tuple(rlimits),
        no_new_privileges=_bool(d, "noNewPrivileges", path),
        oom_score_adj=_opt_int(d, "oomScoreAdj", path, lo=-1000, hi=1000),
        apparmor_profile=_str(d, "apparmorProfile", path),
        selinux_label=_str(d, "selinuxLabel", path),
    )


def _parse_mappings(d: dict[str, Any], key: str) -> tuple[IDMapping, ...]:
    out = []
    for i, m in enumerate(_list(d, key, "linux")):
        mpath = f"linux.{key}[{i}]"
        m = _obj(m, mpath)
        out.append(IDMapping(
            container_id=_int(m, "containerID", mpath, lo=0, hi=_U32),
            host_id=_int(m, "hostID", mpath, lo=0, hi=_U32),
            size=_int(m, "size", mpath, lo=1, hi=_U32),
        ))
    _check_mappings(out, f"linux.{key}")
    return tuple(out)


def _check_mappings(maps: list[IDMapping], where: str) -> None:
    """What the kernel refuses in uid_map/gid_map, named before any process exists: too many
    lines, a range past the largest id, ranges overlapping inside or outside."""
    if len(maps) > MAX_ID_MAPPINGS:
        raise InvalidArgument(f"spec: {where}: {len(maps)} mappings, at most {MAX_ID_MAPPINGS}")
    for side in ("container_id", "host_id"):
        ranges = sorted((getattr(m, side), getattr(m, side) + m.size) for m in maps)
        for start, end in ranges:
            if end - 1 > MAX_ID:
                raise InvalidArgument(f"spec: {where}: ids {start}-{end - 1} go past the largest id {MAX_ID}")
        for (a_start, a_end), (b_start, _) in itertools.pairwise(ranges):
            if b_start < a_end:
                raise InvalidArgument(f"spec: {where}: the ranges from {a_start} and {b_start} overlap")


def sysctl_namespace(key: str) -> str:
    """The namespace type sysctl `key` belongs to; InvalidArgument when it is not namespaced."""
    if key == "kernel.hostname":
        raise InvalidArgument("spec: linux.sysctl.kernel.hostname: set the hostname field instead")
    kind = namespace_of_sysctl(key)
    if kind is None:
        raise InvalidArgument(f"spec: linux.sysctl.{key}: not a namespaced sysctl (it would change the host's)")
    return kind


def _device_path(path: str, where: str) -> str:
    # Devices are made in the container's /dev only: elsewhere they would replace its files.
    if ".." in path.split("/") or not os.path.normpath(_abs(path, where)).startswith("/dev/"):
        raise InvalidArgument(f"spec: {where}: {path!r} is not a path in /dev")
    return path


def _parse_hooks(d: dict[str, Any]) -> tuple[str, ...]:
    kinds = []
    for kind in d:
        if kind not in HOOK_KINDS:
            raise InvalidArgument(f"spec: hooks.{kind}: unknown kind of hook")
        for i, h in enumerate(_list(d, kind, "hooks")):
            hpath = f"hooks.{kind}[{i}]"
            h = _obj(h, hpath)
            _abs(_str(h, "path", hpath), f"{hpath}.path")
            _strs(h, "args", hpath)
            _strs(h, "env", hpath)
            _opt_int(h, "timeout", hpath, lo=1, hi=2**31 - 1)
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def _parse_linux(d: dict[str, Any]) -> Linux:
    namespaces = []
    seen: set[str] = set()
    for i, ns in enumerate(_list(d, "namespaces", "linux")):
        npath = f"linux.namespaces[{i}]"
        ns = _obj(ns, npath)
        ns_type = _str(ns, "type", npath)
        if ns_type not in NAMESPACE_TYPES:
            raise InvalidArgument(f"spec: {npath}.type: unknown namespace type {ns_type!r}")
        if ns_type in seen:
            raise InvalidArgument(f"spec: {npath}.type: duplicate namespace {ns_type!r}")
        seen.add(ns_type)
        ns_path = _str(ns, "path", npath)
        if ns_path:
            _abs(ns_path, f"{npath}.path")
        namespaces.append(Namespace(ns_type, ns_path))
    devices = []
    for i, dev in enumerate(_list(d, "devices", "linux")):
        dpath = f"linux.devices[{i}]"
        dev = _obj(dev, dpath)
        dtype = _str(dev, "type", dpath)
        if dtype not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"spec: {dpath}.type: unknown device type {dtype!r}")
        major, minor = (_int(dev, "major", dpath, 0), _int(dev, "minor", dpath, 0)) if dtype != "p" else (0, 0)
        check_device_number(major, minor, f"spec: {dpath}", InvalidArgument)
        devices.append(Device(
            path=_device_path(_str(dev, "path", dpath), f"{dpath}.path"),
            type=dtype,
            major=major,
            minor=minor,
            file_mode=_opt_int(dev, "fileMode", dpath, lo=0, hi=0o7777),
            uid=_opt_int(dev, "uid", dpath, lo=0, hi=_U32),
            gid=_opt_int(dev, "gid", dpath, lo=0, hi=_U32),
        ))
    sysctl_d = _opt_obj(d, "sysctl", "linux") or {}
    for key, value in sysctl_d.items():
        if not isinstance(value, str) or not key or "/" in key or "" in key.split(".") or "\0" in key + value:
            raise _bad(f"linux.sysctl.{key}", "a string value for a sysctl name", value)
    propagation = _str(d, "rootfsPropagation", "linux")
    if propagation not in PROPAGATIONS:
        raise InvalidArgument(f"spec: linux.rootfsPropagation: unknown propagation {propagation!r}")
    masked = _strs(d, "maskedPaths", "linux")
    readonly = _strs(d, "readonlyPaths", "linux")
    for i, p in enumerate(masked):
        _abs(p, f"linux.maskedPaths[{i}]")
    for i, p in enumerate(readonly):
        _abs(p, f"linux.readonlyPaths[{i}]")
    return Linux(
        namespaces=tuple(namespaces),
        uid_mappings=_parse_mappings(d, "uidMappings"),
        gid_mappings=_parse_mappings(d, "gidMappings"),
        devices=tuple(devices),
        sysctl=dict(sysctl_d),
        masked_paths=masked,
        readonly_paths=readonly,
        rootfs_propagation=propagation,
        cgroups_path=_str(d, "cgroupsPath", "linux"),
        resources=_opt_obj(d, "resources", "linux"),
        seccomp=_opt_obj(d, "seccomp", "linux"),
    )


def _decode(data: str | bytes) -> Any:
    return json_value(data, "spec", InvalidArgument)


def _root_path(path: str) -> str:
    norm = os.path.normpath(path)
    if norm == "/":
        raise InvalidArgument("spec: root.path: the host's root cannot be a container's root")
    if not os.path.isabs(path) and (norm == ".." or norm.startswith("../")):
        raise InvalidArgument(f"spec: root.path: {path!r} climbs out of the bundle")
    return path


def parse_spec(data: str | bytes | dict[str, Any]) -> Spec:
    """Parse and validate a whole config.json. Raises InvalidArgument on any bad field."""
    d = _obj(data if isinstance(data, dict) else _decode(data), "spec")
    oci_version = _str(d, "ociVersion", "")
    if not oci_version:
        raise InvalidArgument("spec: ociVersion: missing")
    root_d = _opt_obj(d, "root", "")
    if root_d is None or not _str(root_d, "path", "root"):
        raise InvalidArgument("spec: root.path: missing")
    root = Root(path=_root_path(_str(root_d, "path", "root")), readonly=_bool(root_d, "readonly", "root"))
    process_d = d.get("process")
    process = None if process_d is None else parse_process(_obj(process_d, "process"))
    mounts = []
    for i, m in enumerate(_list(d, "mounts", "")):
        mpath = f"mounts[{i}]"
        m = _obj(m, mpath)
        mounts.append(SpecMount(
            destination=_abs(_str(m, "destination", mpath), f"{mpath}.destination"),
            type=_str(m, "type", mpath),
            source=_str(m, "source", mpath),
            options=_strs(m, "options", mpath),
        ))
    linux = _parse_linux(_opt_obj(d, "linux", "") or {})
    if (linux.uid_mappings or linux.gid_mappings) and linux.namespace("user") is None:
        raise InvalidArgument("spec: linux.uidMappings: id mappings need a user namespace")
    ann = _opt_obj(d, "annotations", "") or {}
    for key, value in ann.items():
        if not isinstance(value, str):
            raise _bad(f"annotations.{key}", "a string", value)
    hostname, domainname = _raw_str(d, "hostname"), _raw_str(d, "domainname")
    for key, name in (("hostname", hostname), ("domainname", domainname)):
        if len(name.encode()) > HOST_NAME_MAX or "\0" in name:  # what sethostname/setdomainname would refuse
            raise _bad(key, f"at most {HOST_NAME_MAX} bytes, no NUL", name[:80])
    uts = linux.namespace("uts")
    if hostname and (uts is None or uts.path):
        raise InvalidArgument("spec: hostname: setting a hostname needs a new uts namespace")
    user_ns = linux.namespace("user")
    if user_ns is not None and not user_ns.path and (not linux.uid_mappings or not linux.gid_mappings):
        raise InvalidArgument("spec: linux.uidMappings: a new user namespace needs uid and gid mappings")
    return Spec(
        oci_version=oci_version,
        root=root,
        process=process,
        hostname=hostname,
        domainname=domainname,
        mounts=tuple(mounts),
        linux=linux,
        annotations=dict(ann),
        hooks=_parse_hooks(_opt_obj(d, "hooks", "") or {}),
    )


# ----- what `runc spec` writes ---------------------------------------------------------------------

_RUNC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_RUNC_SPEC: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {k: list(_RUNC_CAPS) for k in ("bounding", "effective", "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def default_spec(*, rootless: bool = False) -> dict[str, Any]:
    """The config.json `runc spec` (or `runc spec --rootless`) writes, as a fresh dict."""
    spec = copy.deepcopy(_RUNC_SPEC)
    if rootless:
        # As runc: no gid=5 on devpts (the group may be unmapped), /sys bound from the host (a
        # sysfs mount needs a network namespace the user namespace owns), no device cgroup
        # rule, an identity mapping of the caller, and a user namespace.
        linux = spec["linux"]
        spec["mounts"][2]["options"].remove("gid=5")
        spec["mounts"][5] = {"destination": "/sys", "type": "none", "source": "/sys",
                             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        del linux["resources"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
    return spec
