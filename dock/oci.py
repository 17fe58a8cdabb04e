"""OCI runtime specs for containers made from images, built the way containerd's client does.

A spec starts as containerd's default Linux spec (`default_spec`: the default mounts,
capabilities, masked and read-only paths, RLIMIT_NOFILE, the five namespaces, devices denied
but for the usual character devices), and the `with_*` functions then change it in place,
each one the counterpart of a containerd `oci.With...` option:

    spec = default_spec("default", "web")
    with_env(spec, ["DEBUG=1"])                        # user env first: the image's is merged under it
    with_image_config(spec, image_config, root, ["sh", "-c", "echo hi"])
    with_memory_limit(spec, 256 << 20)
    data = json.dumps(spec)

`build_spec(namespace, id, image_config, SpecOptions(...), root)` applies them in the order
`ctr run` does, then what dock adds to containerd's defaults, as Docker does: the hostname is
the id's first 12 characters (or --hostname), and the container gets the default seccomp
profile (dockyard_common/seccomp_default.toml) resolved for its capabilities, unless it is
--privileged (every capability, the host's devices, no seccomp, nothing masked) or asks for
`--security-opt seccomp=unconfined|PATH`; --cap-add/--cap-drop change the capability set
first, so the profile follows them.

Users: `root` is the image's root filesystem mounted somewhere on the host (a `RootFS`),
read to resolve user and group names from its /etc/passwd and /etc/group and to find the
user's supplementary groups (process.user.additionalGids), as containerd does; `None` means
there is no tree to read, which behaves like a tree without those files. Paths are resolved
inside the root: a symlink in the image cannot point the lookup at the host's files.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dock import runflags
from dock.sizes import MAX_BYTES, parse_bytes  # noqa: F401  (dock's spec API re-exports parse_bytes)
from dockyard_common import capabilities, rootfiles, rundefaults, seccomp
from dockyard_common import healthcheck as hc
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.ocispec import (  # noqa: F401  (dock's spec API re-exports them)
    DEFAULT_CAPABILITIES,
    DEFAULT_DEVICES,
    DEFAULT_ENV,
    DEFAULT_MOUNTS,
    MASKED_PATHS,
    NAMESPACES,
    OCI_VERSION,
    READONLY_PATHS,
    STOP_SIGNAL_LABEL,
    Spec,
    default_spec,
    with_default_unix_devices,
    without_namespace,
)
from dockyard_common.ocispec import linux_of as _linux
from dockyard_common.ocispec import process_of as _process
from dockyard_common.ocispec import resources_of as _resources
from dockyard_common.volumelabels import check_name

# /dev entries containerd's HostDevices does not copy into a privileged container: mounted anew
# in every container, or the host's bookkeeping.
HOST_DEVICES_SKIPPED = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"})
SHORT_ID = 12  # the hostname a container gets by default: its id's first characters, as Docker
SECCOMP_DEFAULT, SECCOMP_UNCONFINED = "default", "unconfined"
MAX_ID = 2**31 - 1  # runc wants uid/gid <= MaxInt32, and containerd follows it
MIN_MEMORY = 6 << 20  # Docker's minimum memory limit
MAX_CPUS = 2**20  # a quota of more CPUs than any host has is still a number the kernel takes


def host_devices(dev: Path = Path("/dev")) -> list[dict[str, Any]]:
    """The host's character and block devices under `dev` as OCI linux.devices entries
    (containerd's HostDevices): what a privileged container sees in its /dev."""
    found: list[dict[str, Any]] = []
    try:
        entries = sorted(os.scandir(dev), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name in HOST_DEVICES_SKIPPED:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(st.st_mode):
            found += host_devices(Path(entry.path))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append({"path": entry.path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                          "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                          "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return found


# -- privileges -----------------------------------------------------------------------------------


def with_capabilities(spec: Spec, caps: Sequence[str]) -> None:
    """The process's bounding, effective and permitted sets (what containerd's WithCapabilities sets)."""
    _process(spec)["capabilities"] = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}


def with_privileged(spec: Spec, devices: list[dict[str, Any]]) -> None:
    """Docker's --privileged (containerd's WithPrivileged, WithHostDevices, WithAllDevicesAllowed):
    every capability we have (`capabilities.current()`), nothing masked or read-only in /proc, a writable /sys,
    `devices` (the host's) in /dev and all devices allowed; no seccomp (build_spec's choice)."""
    with_capabilities(spec, capabilities.current())
    linux = _linux(spec)
    linux["maskedPaths"] = []
    linux["readonlyPaths"] = []
    for m in spec.get("mounts") or []:
        if m.get("type") == "sysfs":
            m["options"] = [o for o in m.get("options") or [] if o != "ro"]
    linux["devices"] = copy.deepcopy(devices)
    _resources(spec)["devices"] = [{"allow": True, "access": "rwm"}]


def with_seccomp(spec: Spec, profile: seccomp.Profile) -> None:
    """linux.seccomp: `profile` resolved for the process's bounding capabilities on this host."""
    caps = ((spec.get("process") or {}).get("capabilities") or {}).get("bounding") or []
    _linux(spec)["seccomp"] = profile.resolve(caps)


def parse_security_opt(text: str) -> str:
    """`seccomp=unconfined` or `seccomp=PATH` (Docker's --security-opt; `:` as Docker's old
    separator): the seccomp choice. Other options are refused."""
    key, sep, value = text.partition("=")
    if not sep:
        key, sep, value = text.partition(":")
    if key != "seccomp" or not value:
        raise InvalidArgument(f"security option {text!r}: want seccomp=unconfined or seccomp=PATH")
    return value


def seccomp_profile(choice: str) -> seccomp.Profile | None:
    """The profile `choice` names: the default, none for unconfined, else the file at that path."""
    if choice == SECCOMP_UNCONFINED:
        return None
    if choice == SECCOMP_DEFAULT:
        return seccomp.default_profile()
    try:
        return seccomp.load(choice)
    except seccomp.ProfileError as exc:
        raise InvalidArgument(str(exc)) from None


# -- environment, arguments, working directory ---------------------------------------------------


def replace_or_append_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """`defaults` with each override replacing the entry of the same name, or appended; an
    override without '=' removes that name."""
    results: list[str | None] = list(defaults)
    index = {entry.split("=", 1)[0]: i for i, entry in enumerate(defaults)}
    for value in overrides:
        name = value.split("=", 1)[0]
        if "=" not in value:
            if name in index:
                results[index[name]] = None
            continue
        if name in index:
            results[index[name]] = value
        else:
            index[name] = len(results)
            results.append(value)
    return [e for e in results if e is not None]


def with_env(spec: Spec, env: Sequence[str]) -> None:
    if env:
        proc = _process(spec)
        proc["env"] = replace_or_append_env(proc.get("env") or [], env)


def with_process_args(spec: Spec, args: Sequence[str]) -> None:
    _process(spec)["args"] = list(args)


def with_cwd(spec: Spec, cwd: str) -> None:
    if not cwd.startswith("/"):
        raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
    _process(spec)["cwd"] = cwd


def with_tty(spec: Spec) -> None:
    proc = _process(spec)
    proc["terminal"] = True
    proc["env"] = [*(proc.get("env") or []), "TERM=xterm"]


def with_hostname(spec: Spec, name: str) -> None:
    spec["hostname"] = name


def with_annotations(spec: Spec, annotations: dict[str, str]) -> None:
    if annotations:
        spec.setdefault("annotations", {}).update(annotations)


# -- mounts and namespaces ---------------------------------------------------------------------


def with_mounts(spec: Spec, mounts: Iterable[dict[str, Any]]) -> None:
    spec.setdefault("mounts", []).extend(copy.deepcopy(list(mounts)))


def parse_mount(text: str) -> dict[str, Any]:
    """`type=bind,src=/a,dst=/b,options=rbind:ro` (ctr's --mount syntax) as an OCI mount.
    The type defaults to bind, and a bind mount gets `rbind` unless it names bind or rbind."""
    mount: dict[str, Any] = {"type": "bind", "source": "", "destination": "", "options": []}
    for item in next(csv.reader([text]), []):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"mount {text!r}: {item!r} is not KEY=VALUE")
        if key == "type":
            mount["type"] = value
        elif key in ("source", "src"):
            mount["source"] = value
        elif key in ("destination", "dst", "target"):
            mount["destination"] = value
        elif key == "options":
            mount["options"] = [o for o in value.split(":") if o]
        else:
            raise InvalidArgument(f"mount {text!r}: unknown key {key!r} (want type, src, dst, options)")
    if not mount["destination"].startswith("/"):
        raise InvalidArgument(f"mount {text!r}: dst must be an absolute path in the container")
    if mount["type"] == "bind":
        if not mount["source"].startswith("/"):
            raise InvalidArgument(f"mount {text!r}: a bind mount's src must be an absolute host path")
        if not {"bind", "rbind"} & set(mount["options"]):
            mount["options"].insert(0, "rbind")
    elif not mount["source"]:
        mount["source"] = mount["type"]
    return mount


@dataclass(frozen=True)
class VolumeRequest:
    """`-v NAME:/path[:ro]`: a named volume of the daemon (made on first use), bound at `destination`
    once the daemon says where it lives (dock/volumes.py); `copy`: seeded from the image when empty.
    `name` "": an anonymous volume (`-v /path`, the image's VOLUME), named when it is made."""

    name: str
    destination: str
    readonly: bool = False
    copy: bool = True


# Docker's -v options: access, and (binds) propagation; `nocopy` only for a named volume.
_VOLUME_ACCESS = ("ro", "rw")
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
# Docker's --tmpfs defaults; a user's option (e.g. `exec`) comes after them, so it wins.
TMPFS_DEFAULTS = ("nosuid", "nodev", "noexec")
_TMPFS_SIZE = re.compile(r"\d+[kmgtKMGT%]?")
_OCTAL_MODE = re.compile(r"[0-7]{1,4}")


def _container_path(flag: str, text: str, path: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(f"{flag} {text!r}: {path!r} is not an absolute path in the container")
    if path.rstrip("/") == "":
        raise InvalidArgument(f"{flag} {text!r}: the container's root / cannot be a mount point")
    return path


def parse_volume(text: str) -> dict[str, Any] | VolumeRequest:
    """Docker's `-v`: `/host/path:/path[:OPTS]` (a bind mount, as parse_mount makes it) or
    `NAME:/path[:OPTS]` (a named volume); OPTS comma-separated: ro or rw, nocopy (volumes),
    a propagation (binds). `-v /path` alone: an anonymous volume there (Docker's)."""
    parts = text.split(":")
    if len(parts) == 1:
        if not text.startswith("/"):
            raise InvalidArgument(f"-v {text!r}: want /path (an anonymous volume), NAME:/path or "
                                  "/host/path:/path")
        return VolumeRequest("", _container_path("-v", text, text))
    if len(parts) > 3:
        raise InvalidArgument(f"-v {text!r}: want SOURCE:DESTINATION[:OPTIONS]")
    source, dest = parts[0], _container_path("-v", text, parts[1])
    opts = [o for o in parts[2].split(",") if o] if len(parts) == 3 else []
    if len(parts) == 3 and not opts:
        raise InvalidArgument(f"-v {text!r}: empty options after the last ':'")
    access = [o for o in opts if o in _VOLUME_ACCESS]
    if len(access) > 1:
        raise InvalidArgument(f"-v {text!r}: give ro or rw once")
    bind = source.startswith("/")
    allowed = (*_VOLUME_ACCESS, *(_PROPAGATIONS if bind else ("nocopy",)))
    unknown = [o for o in opts if o not in allowed]
    if unknown:
        raise InvalidArgument(f"-v {text!r}: unknown option {unknown[0]!r} (want {', '.join(allowed)})")
    if not bind:
        if not source:
            raise InvalidArgument(f"-v {text!r}: no volume name or host path before ':'")
        return VolumeRequest(check_name(source), dest, readonly=access == ["ro"], copy="nocopy" not in opts)
    # the OCI mount parse_mount makes of `type=bind,src=..,dst=..` (rbind: submounts come along)
    return {"type": "bind", "source": source, "destination": dest, "options": ["rbind", *opts]}


def parse_tmpfs(text: str) -> dict[str, Any]:
    """Docker's `--tmpfs /path[:OPTIONS]` (e.g. `/run:size=64m,mode=1777`): a tmpfs mount with
    nosuid, nodev and noexec unless the options say otherwise."""
    dest, _, rest = text.partition(":")
    _container_path("--tmpfs", text, dest)
    opts = [o for o in rest.split(",") if o]
    for o in opts:
        key, sep, value = o.partition("=")
        if key == "size" and not (sep and _TMPFS_SIZE.fullmatch(value)):
            raise InvalidArgument(f"--tmpfs {text!r}: size {value!r}: want bytes, or a number with k, m, g or %")
        if key == "mode" and not (sep and _OCTAL_MODE.fullmatch(value)):
            raise InvalidArgument(f"--tmpfs {text!r}: mode {value!r}: want octal permissions, e.g. 1777")
    return {"type": "tmpfs", "source": "tmpfs", "destination": dest, "options": [*TMPFS_DEFAULTS, *opts]}


def check_destinations(mounts: Iterable[dict[str, Any]], volumes: Iterable[VolumeRequest]) -> None:
    """Two mounts on one path: refused, as Docker's "Duplicate mount point"."""
    seen: set[str] = set()
    for dest in [*(m["destination"] for m in mounts), *(v.destination for v in volumes)]:
        clean = os.path.normpath(dest)
        if clean in seen:
            raise InvalidArgument(f"duplicate mount point: {dest}")
        seen.add(clean)


def image_volume_requests(opts: SpecOptions, image_volumes: Iterable[str]) -> list[VolumeRequest]:
    """An anonymous volume for each VOLUME path of the image that no mount or volume of `opts`
    covers (Docker: a user's mount at the path replaces the image's volume)."""
    covered = {os.path.normpath(m["destination"]) for m in opts.mounts}
    covered |= {os.path.normpath(v.destination) for v in opts.volumes}
    return [VolumeRequest("", p) for p in image_volumes if os.path.normpath(p) not in covered]


def volume_options(volumes: Sequence[str], tmpfs: Sequence[str], mounts: Sequence[dict[str, Any]] = (),
                   exists: Callable[[str], bool] = os.path.exists) -> tuple[list[dict[str, Any]], list[VolumeRequest]]:
    """`dock run -v ... --tmpfs ...`: the bind and tmpfs mounts, and the named volumes. A bind's
    host path must exist (refused, not made: unlike Docker's -v, a typo must not leave a new
    directory owned by root behind; --mount behaves the same). No two mounts (with `mounts`,
    those of --mount) may share a destination."""
    parsed = [parse_volume(v) for v in volumes]
    binds = [m for m in parsed if isinstance(m, dict)]
    named = [m for m in parsed if isinstance(m, VolumeRequest)]
    for m in binds:
        if not exists(m["source"]):
            raise InvalidArgument(f"-v {m['source']}:{m['destination']}: host path {m['source']} does not exist "
                                  "(create it first)")
    tmpfs_mounts = [parse_tmpfs(t) for t in tmpfs]
    check_destinations([*mounts, *binds, *tmpfs_mounts], named)
    return [*binds, *tmpfs_mounts], named


def volume_mounts(volumes: Iterable[VolumeRequest], paths: dict[str, str]) -> list[dict[str, Any]]:
    """Bind mounts of named volumes from their directories (`paths`: name -> the daemon's mountpoint)."""
    out = []
    for v in volumes:
        if v.name not in paths:
            raise InvalidArgument(f"volume {v.name!r}: the daemon has not said where it lives (create it first)")
        out.append({"type": "bind", "source": paths[v.name], "destination": v.destination,
                    "options": ["rbind", "ro" if v.readonly else "rw"]})
    return out


def with_readonly_root(spec: Spec) -> None:
    """Docker's --read-only: the root file system mounted read-only (mounts on it keep their own mode)."""
    spec.setdefault("root", {"path": "rootfs"})["readonly"] = True


def with_host_network(spec: Spec, hostname: str) -> None:
    """The host's network: no network namespace, the host's /etc/hosts and resolv.conf
    (read-only), and HOSTNAME as ctr sets it for --net-host."""
    without_namespace(spec, "network")
    with_mounts(spec, [
        {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
    ])
    with_env(spec, [f"HOSTNAME={hostname}"])


# -- resources ----------------------------------------------------------------------------------


def with_memory_limit(spec: Spec, limit: int) -> None:
    if limit < MIN_MEMORY:  # less and the container's init itself would not start
        raise InvalidArgument(f"memory limit {limit} is below the minimum of {MIN_MEMORY >> 20} MiB (as Docker's)")
    _resources(spec).setdefault("memory", {})["limit"] = limit


def with_pids_limit(spec: Spec, limit: int) -> None:
    if limit == 0 or limit < -1 or limit > MAX_BYTES:
        raise InvalidArgument(f"pids limit {limit} must be positive (or -1 for no limit)")
    _resources(spec).setdefault("pids", {})["limit"] = limit


def with_cpus(spec: Spec, cpus: float, period: int = 100_000) -> None:
    """A CFS quota of `cpus` CPUs per `period` microseconds (ctr's --cpus)."""
    if not 0 < cpus <= MAX_CPUS:  # also refuses nan
        raise InvalidArgument(f"cpus {cpus} must be above 0 and at most {MAX_CPUS}")
    cpu = _resources(spec).setdefault("cpu", {})
    cpu["quota"] = int(cpus * period)
    cpu["period"] = period


# -- users and groups -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = ""


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


def parse_passwd(text: str) -> list[PasswdEntry]:
    """/etc/passwd lines (name:password:uid:gid:gecos:home:shell); malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        try:
            out.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5] if len(parts) > 5 else ""))
        except (IndexError, ValueError):
            continue
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """/etc/group lines (name:password:gid:member,member); malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        try:
            members = tuple(m.strip() for m in parts[3].split(",") if m.strip()) if len(parts) > 3 else ()
            out.append(GroupEntry(parts[0], int(parts[2]), members))
        except (IndexError, ValueError):
            continue
    return out


class RootFS:
    """An image's root filesystem, mounted at `path` on the host; reads resolve inside it and
    read only regular files of a sane size (dockyard_common/rootfiles.py: the image chooses
    what its /etc/passwd is, including a symlink out, a FIFO or a device)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when the image has no such file."""
        return rootfiles.read_in_root(self.path, name)

    def users(self) -> list[PasswdEntry] | None:
        text = self.read_text("/etc/passwd")
        return None if text is None else parse_passwd(text)

    def groups(self) -> list[GroupEntry] | None:
        text = self.read_text("/etc/group")
        return None if text is None else parse_group(text)


def _user(spec: Spec) -> dict[str, Any]:
    return _process(spec).setdefault("user", {"uid": 0, "gid": 0})  # type: ignore[no-any-return]


def _ensure_primary_gid(spec: Spec) -> None:
    """containerd's ensureAdditionalGids: the primary group is listed among the additional ones."""
    user = _user(spec)
    gids = list(user.get("additionalGids") or [])
    if user.get("gid", 0) not in gids:
        gids.insert(0, user.get("gid", 0))
    user["additionalGids"] = gids


def _as_id(text: str) -> int | None:
    """The number a user/group field names, or None when it is a name (as strconv.Atoi + range)."""
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if 0 <= value <= MAX_ID and text.strip() == text else None


def _users(root: RootFS | None) -> list[PasswdEntry] | None:
    return root.users() if root is not None else None


def with_user(spec: Spec, userstr: str, root: RootFS | None) -> None:
    """Set process.user from `user`, `uid`, `user:group`, `uid:gid`, `uid:group` or `user:gid`
    (OCI image-spec's User), resolving names in the image's /etc/passwd and /etc/group, as
    containerd's WithUser. A uid the image does not list runs with gid 0; a name it does not
    list is an error."""
    user = _user(spec)
    user["additionalGids"] = []
    parts = userstr.split(":")
    try:
        if len(parts) == 1:
            uid = _as_id(parts[0])
            if uid is None:
                entry = _find_user(root, lambda u: u.name == parts[0], f"user {parts[0]!r}")
                user["uid"], user["gid"] = entry.uid, entry.gid
            else:
                users = _users(root)
                match = next((u for u in users or [] if u.uid == uid), None)
                user["uid"], user["gid"] = (match.uid, match.gid) if match else (uid, 0)
            return
        if len(parts) != 2:
            raise InvalidArgument(f"invalid USER value {userstr!r}")
        uid, gid = _as_id(parts[0]), _as_id(parts[1])
        if uid is None:
            if not parts[0]:
                raise InvalidArgument(f"invalid USER value {userstr!r}")
            uid = _find_user(root, lambda u: u.name == parts[0], f"user {parts[0]!r}").uid
        if gid is None:
            if not parts[1]:
                raise InvalidArgument(f"invalid USER value {userstr!r}")
            groups = root.groups() if root is not None else None
            if groups is None:
                raise NotFound(f"group {parts[1]!r}: the image has no /etc/group")
            found = next((g for g in groups if g.name == parts[1]), None)
            if found is None:
                raise NotFound(f"group {parts[1]!r} in the image's /etc/group")
            gid = found.gid
        user["uid"], user["gid"] = uid, gid
    finally:
        _ensure_primary_gid(spec)


def _find_user(root: RootFS | None, match: Callable[[PasswdEntry], bool], what: str) -> PasswdEntry:
    users = _users(root)
    if users is None:
        raise NotFound(f"{what}: the image has no /etc/passwd")
    entry = next((u for u in users if match(u)), None)
    if entry is None:
        raise NotFound(f"{what} in the image's /etc/passwd")
    return entry


def _group_id(root: RootFS | None, name: str) -> int | None:
    groups = root.groups() if root is not None else None
    return next((g.gid for g in groups or [] if g.name == name), None)


def with_additional_gids(spec: Spec, userstr: str, root: RootFS | None) -> None:
    """process.user.additionalGids: the groups of /etc/group that list the user (given by uid
    or name) as a member, plus the primary group, as containerd's WithAdditionalGIDs."""
    user = _user(spec)
    user["additionalGids"] = []
    try:
        name = userstr
        if (uid := _as_id(userstr)) is not None:
            match = next((u for u in _users(root) or [] if u.uid == uid), None)
            if match is None:
                return  # a uid the image does not list has no supplementary groups
            name = match.name
        groups = root.groups() if root is not None else None
        if groups is not None:
            user["additionalGids"] = [g.gid for g in groups if g.name != name and name in g.members]
    finally:
        _ensure_primary_gid(spec)


# -- image config -----------------------------------------------------------------------------------


@dataclass
class ImageConfig:
    """The run defaults of an image config (its `config` object)."""

    user: str = ""
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    working_dir: str = ""
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)  # the image's VOLUME paths: anonymous volumes
    exposed_ports: list[str] = field(default_factory=list)  # EXPOSE: "80/tcp", "53/udp" (what -P publishes)
    healthcheck: hc.HealthConfig | None = None  # HEALTHCHECK (Docker's HealthConfig)

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> ImageConfig:
        def strings(key: str) -> list[str]:
            value = config.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"image config: {key} must be an array of strings")
            return list(value)

        def string(key: str) -> str:
            value = config.get(key) or ""
            if not isinstance(value, str):
                raise InvalidArgument(f"image config: {key} must be a string")
            return value

        labels = config.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidArgument("image config: Labels must be an object of strings")
        rundefaults.check_strings(config)
        volumes = rundefaults.volume_paths(config.get("Volumes"))  # cleaned, distinct; / and /proc refused
        exposed = config.get("ExposedPorts") or {}
        if not isinstance(exposed, dict) or not all(isinstance(k, str) for k in exposed):
            raise InvalidArgument("image config: ExposedPorts must be an object whose keys are ports")
        return cls(string("User"), strings("Env"), strings("Entrypoint"), strings("Cmd"), string("WorkingDir"),
                   string("StopSignal"), dict(labels), volumes, sorted(exposed),
                   _image_healthcheck(config.get("Healthcheck")))


def _image_healthcheck(value: Any) -> hc.HealthConfig | None:
    """An image's HEALTHCHECK; one this client cannot read is not run (Docker's daemon warns and
    runs none), rather than refusing the image."""
    try:
        return hc.from_json(value, "image config: Healthcheck")
    except InvalidArgument:
        return None


def with_image_config(spec: Spec, config: ImageConfig, root: RootFS | None, args: Sequence[str] = ()) -> None:
    """containerd's WithImageConfigArgs: the image's Env under what the spec already has, args =
    Entrypoint + (args or Cmd), cwd = WorkingDir or /, the image's User, and the user's
    supplementary groups."""
    proc = _process(spec)
    proc["env"] = replace_or_append_env(config.env or DEFAULT_ENV, proc.get("env") or [])
    proc["args"] = [*config.entrypoint, *(args or config.cmd)]
    proc["cwd"] = config.working_dir or "/"
    if config.user:
        with_user(spec, config.user, root)
        with_additional_gids(spec, str(_user(spec)["uid"]), root)
    else:
        with_additional_gids(spec, "root", root)


# -- all together -----------------------------------------------------------------------------------


@dataclass
class SpecOptions:
    """What `dock run` / `dock containers create` let a user change."""

    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    cwd: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    net: str = "none"  # "none": a network namespace of its own (only lo); "host": the host's
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    mounts: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False  # every capability, the host's devices, no seccomp
    seccomp: str = SECCOMP_DEFAULT  # "default", "unconfined" or the path of a profile (JSON or .toml)
    volumes: list[VolumeRequest] = field(default_factory=list)  # -v NAME:/path
    volume_paths: dict[str, str] = field(default_factory=dict)  # their directories: dock/volumes.py fills it
    readonly_root: bool = False  # --read-only
    flags: runflags.RunFlags = field(default_factory=runflags.RunFlags)  # Docker's other run flags


def build_spec(namespace: str, cid: str, image: ImageConfig, opts: SpecOptions, root: RootFS | None,
               host_hostname: str = "", devices: list[dict[str, Any]] | None = None) -> Spec:
    """The spec `ctr run` would build (same option order), plus dock's --user, its hostname
    (--hostname, else the host's with --net host, else the id's first 12 characters), its
    capabilities and seccomp profile. `devices`: the host's, for --privileged (read from /dev
    when not given)."""
    if opts.net not in ("none", "host"):
        raise InvalidArgument(f"network mode {opts.net!r}: want none or host")
    host_hostname = host_hostname or os.uname().nodename
    spec = default_spec(namespace, cid)
    with_default_unix_devices(spec)
    with_env(spec, opts.env)
    with_mounts(spec, opts.mounts)
    with_mounts(spec, volume_mounts(opts.volumes, opts.volume_paths))
    if opts.readonly_root:
        with_readonly_root(spec)
    if opts.flags.entrypoint is not None:  # Docker: --entrypoint drops the image's Cmd too
        image = replace(image, entrypoint=list(opts.flags.entrypoint), cmd=[])
    with_image_config(spec, image, root, opts.args)
    if not _process(spec)["args"]:
        raise InvalidArgument("no command: the image has no Entrypoint or Cmd, and none was given")
    if opts.cwd:
        with_cwd(spec, opts.cwd)
    if opts.tty:
        with_tty(spec)
    if opts.net == "host":
        with_host_network(spec, host_hostname)
    if opts.cpus is not None:
        with_cpus(spec, opts.cpus)
    if opts.pids_limit is not None:
        with_pids_limit(spec, opts.pids_limit)
    if opts.memory is not None:
        with_memory_limit(spec, opts.memory)
    if opts.user:
        with_user(spec, opts.user, root)
        with_additional_gids(spec, str(_user(spec)["uid"]), root)
    with_hostname(spec, opts.hostname or (host_hostname if opts.net == "host" else cid[:SHORT_ID]))
    if opts.privileged:  # Docker: --privileged wins over --cap-add/--cap-drop and seccomp
        with_privileged(spec, host_devices() if devices is None else devices)
    else:
        try:
            with_capabilities(spec, capabilities.tweak(DEFAULT_CAPABILITIES, opts.cap_add, opts.cap_drop))
        except capabilities.UnknownCapability as exc:
            raise InvalidArgument(str(exc)) from None
        if (profile := seccomp_profile(opts.seccomp)) is not None:
            with_seccomp(spec, profile)
    runflags.apply(spec, opts.flags, host_net=opts.net == "host", lookup_group=lambda name: _group_id(root, name))
    with_annotations(spec, opts.annotations)
    return spec


def exec_process(spec: Spec, args: Sequence[str], *, tty: bool = False, cwd: str = "",
                 env: Sequence[str] = ()) -> dict[str, Any]:
    """The process of an exec in a container with `spec`: the container's process (user,
    env, capabilities, rlimits) with other args, as `ctr tasks exec` builds it."""
    if not args:
        raise InvalidArgument("exec needs a command")
    proc = copy.deepcopy(spec.get("process") or {})
    proc["args"] = list(args)
    proc["terminal"] = tty
    if tty and not any(e.startswith("TERM=") for e in proc.get("env") or []):
        proc["env"] = [*(proc.get("env") or []), "TERM=xterm"]
    if not tty:
        proc.pop("consoleSize", None)
    if cwd:
        if not cwd.startswith("/"):
            raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
        proc["cwd"] = cwd
    if env:
        proc["env"] = replace_or_append_env(proc.get("env") or [], env)
    return proc  # type: ignore[no-any-return]
