"""The objects `--format` templates see: Docker's field names for what dock lists and inspects.

    dock ps --format '{{.Names}} {{.Status}} {{.Label "app"}}'     # ps_row
    dock inspect --format '{{.State.Status}} {{.Config.Labels}}'   # inspect_view: ours + Docker's paths
    dock images ls --format '{{.Repository}}:{{.Tag}} {{.Size}}'  # image_row

What is mapped, and where ours differ from Docker's:
- ps: ID, Image, Command (quoted, cut unless --no-trunc), CreatedAt (Go's time format), RunningFor,
  Ports, State, Status, Size (always 0B: dock ps does not measure the writable layer), Names,
  Labels (k=v,... sorted), Mounts (volume names and bind sources), Networks, LocalVolumes, and
  `.Label "key"`.
- inspect: dock's own object (lower-case keys, `dock --format json inspect`), plus Docker's
  capitalised paths: Id, Name ("/name"), Created, Path, Args, Image (the image's name: containerd
  keeps no image id on a container), State.{Status,Running,Paused,Restarting,OOMKilled,Dead,Pid,
  ExitCode,StartedAt,FinishedAt,Health} (OOMKilled: the daemon's `dockyard.oom-killed` label),
  Config.{Hostname,User,Env,Cmd,Entrypoint,WorkingDir,Image,Labels,Healthcheck}, Mounts
  [{Type,Name,Source,Destination,Mode,RW}], NetworkSettings.{IPAddress, Ports,
  Networks.NAME.{IPAddress,Gateway,MacAddress}}, HostConfig.RestartPolicy.{Name,
  MaximumRetryCount}, RestartCount, Platform, Driver (the snapshotter).
- images: ID (the target's digest, cut: with containerd's image store Docker's image id is that
  digest too), Repository, Tag, Digest, CreatedAt/CreatedSince (the image record's creation: the
  config's date costs a read per image), Size (unpacked, else content; Docker's decimal units),
  Containers ("N/A", as Docker without -a... ), Labels.
- stats (--no-stream): Container (the name or id as given, else the id), Name, ID (cut unless
  --no-trunc), CPUPerc, MemUsage (binary units, as Docker's), MemPerc, NetIO ("--" without a network
  of its own, as our table), BlockIO, PIDs; "--" (and "-- / --") where no sample came.
- system df (the summary): Type, TotalCount, Active, Size, Reclaimable (Docker's HumanSize:
  decimal, 4 digits; the share of Size in percent, none for the build cache). With -v the template
  runs once, on Images, Containers, Volumes and BuildCache (lists of rows, as Docker's): images
  Repository, Tag, ID, Digest, CreatedAt, CreatedSince, Size, SharedSize, UniqueSize, VirtualSize,
  Containers; containers ID, Names, Image, Command, LocalVolumes, Size, CreatedAt, RunningFor,
  Status; volumes Name, Driver, Scope, Links, Size; build cache ID, CacheType, Description, Size,
  CreatedAt, CreatedSince, LastUsedAt, LastUsedSince, InUse, Shared. IDs and commands are cut only
  for a `table` template, as Docker cuts them.
- history: ID, CreatedSince, CreatedAt (RFC 3339, local time), CreatedBy (cut to 45 unless
  --no-trunc), Size, Comment.
- events (a line per event, the template as written, no `table`): Type, Action, Actor.ID,
  Actor.Attributes, Scope, Time, TimeNano, and the old Status, ID, From. Where Docker has a word
  for one of ours it is used (container create, start, die, exec_create, exec_start, pause,
  unpause, oom, update, destroy, "health_status: healthy"; image delete; network connect,
  disconnect); the rest say what containerd says: Type the topic's first word in the singular
  (task, image, snapshot, namespace, content), Action the rest (/tasks/create: task create).
  Actor.ID: the container, image, namespace, snapshot key, blob digest or network; Attributes:
  the event's own fields as text (labels merged in), the namespace, Docker's `exitCode`, `execID`
  and `container`. No `name`: the events carry no container names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dock.formatting import docker_bytes, docker_size, go_rfc3339, go_time, labels_csv
from dock.gotemplate import Struct
from dock.lookup import NAME_LABEL, SHORT_ID, name_of
from dock.ps import ago, command_of, command_text, image_text
from dockyard_common import netlabels, volumelabels
from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.reference import InvalidReference, Reference, familiar, is_dangling, parse
from dockyard_common.types import Container

if TYPE_CHECKING:  # types only: ps and images need not load the events' and df's modules
    from dock.dfview import Report, Summary
    from dock.events import Envelope


def network_names(c: Container) -> list[str]:
    """The networks a container joins, as its labels say (dock run writes them)."""
    with contextlib.suppress(JsonError):
        names = json_value(c.labels.get(netlabels.NETWORKS, "[]"), "networks")
        if isinstance(names, list):
            return [n for n in names if isinstance(n, str)]
    return []


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def ps_row(c: Container, *, state: str, status: str, ports: str, created: datetime | None, now: datetime,
           binds: list[dict[str, Any]], no_trunc: bool) -> dict[str, Any]:
    """One `dock ps --format TEMPLATE` row."""
    volumes = sorted(volumelabels.names_in(c.labels))
    mounts = volumes + [str(m.get("source", "")) for m in binds]
    if not no_trunc:
        mounts = [_ellipsis(m, 15) for m in mounts]
    labels = dict(c.labels)

    def label(key: str) -> str:
        return labels.get(key, "")

    return {
        "ID": c.id if no_trunc else c.id[:SHORT_ID], "Image": image_text(c.image),
        "Command": command_text(command_of(c), truncate=not no_trunc), "CreatedAt": go_time(created),
        "RunningFor": ago(created, now).removesuffix(" ago") + " ago" if created else "",
        "Ports": ports, "State": state, "Status": status, "Size": "0B",
        "Names": (c.labels.get(NAME_LABEL) or c.id) if no_trunc else name_of(c),
        "Labels": labels_csv(labels), "Mounts": ",".join(mounts), "Networks": ",".join(network_names(c)),
        "LocalVolumes": str(len(volumes)), "Label": label,
    }


def _spec(c: Container) -> dict[str, Any]:
    if c.spec is None:
        return {}
    with contextlib.suppress(JsonError):
        spec = json_value(c.spec.value, "spec")
        if isinstance(spec, dict):
            return spec
    return {}


def inspect_view(ours: Mapping[str, Any], c: Container) -> dict[str, Any]:
    """What `dock inspect --format` sees: `ours` (the JSON dock inspect prints) with Docker's paths added."""
    spec = _spec(c)
    proc: dict[str, Any] = spec["process"] if isinstance(spec.get("process"), dict) else {}
    args = command_of(c)
    state = ours.get("state") or {}
    status = state.get("status", "created")
    mounts: list[dict[str, Any]] = []
    for m in ours.get("mounts") or []:
        rw = "ro" not in (m.get("options") or [])
        mounts.append({"Type": "bind", "Name": "", "Source": m.get("source", ""),
                       "Destination": m.get("destination", ""), "Mode": "" if rw else "ro", "RW": rw,
                       "Propagation": "rprivate"})
    with contextlib.suppress(InvalidArgument):
        for v in volumelabels.decode(c.labels.get(volumelabels.MOUNTS, "[]")):
            mounts.append({"Type": "volume", "Name": v.name, "Source": "", "Destination": v.destination,
                           "Mode": "", "RW": True, "Driver": "local"})
    interfaces = ((ours.get("network") or {}).get("interfaces")) or []
    networks = {}
    for i in interfaces:
        address = (i.get("addresses") or [""])[0]
        networks[i.get("network", "")] = {"IPAddress": address.partition("/")[0],
                                          "IPPrefixLen": int(address.partition("/")[2] or 0),
                                          "Gateway": i.get("gateway", ""), "MacAddress": i.get("mac", "")}
    ports: dict[str, list[dict[str, str]] | None] = {}
    for p in ours.get("ports") or []:
        ports.setdefault(f"{p['container_port']}/{p['protocol']}", []).append(  # type: ignore[union-attr]
            {"HostIp": p.get("host_ip") or "0.0.0.0", "HostPort": str(p.get("host_port", ""))})
    restart = ours.get("restart") or {}
    policy, _, retries = str(ours.get("RestartPolicy", "no")).partition(":")
    config = dict(ours.get("Config") or {})
    config.update({
        "Hostname": spec.get("hostname", ""), "User": _user(proc), "Env": list(proc.get("env") or []),
        "Cmd": args, "Entrypoint": None, "WorkingDir": proc.get("cwd", ""), "Image": image_text(c.image),
        "Labels": dict(c.labels), "Tty": bool(proc.get("terminal", False)),
    })
    docker = {
        "Id": c.id, "Name": "/" + name_of(c), "Created": c.created_at.isoformat() if c.created_at else "",
        "Path": args[0] if args else "", "Args": args[1:], "Image": c.image, "Platform": "linux",
        "Driver": c.snapshotter,
        "State": {
            "Status": status, "Running": status == "running", "Paused": status == "paused", "Restarting": False,
            "OOMKilled": bool(state.get("oom_killed")), "Dead": False, "Pid": state.get("pid", 0),
            "ExitCode": state.get("exit_code") or 0,
            "StartedAt": state.get("started_at") or "", "FinishedAt": state.get("exited_at") or "",
            **({"Health": state["Health"]} if "Health" in state else {}),
        },
        "Config": config, "Mounts": mounts,
        "NetworkSettings": {"Networks": networks, "Ports": ports,
                            "IPAddress": next(iter(networks.values()))["IPAddress"] if networks else ""},
        "HostConfig": {"RestartPolicy": {"Name": policy or "no", "MaximumRetryCount": int(retries or 0)
                                         if retries.isdigit() else 0}},
        "RestartCount": int(restart.get("containerd.io/restart.count", 0) or 0)
        if str(restart.get("containerd.io/restart.count", "0")).isdigit() else 0,
    }
    return {**ours, **docker}


def _user(proc: Mapping[str, Any]) -> str:
    user: Mapping[str, Any] = proc["user"] if isinstance(proc.get("user"), Mapping) else {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    return f"{uid}:{gid}" if uid or gid else ""


def image_row(name: str, target_digest: str, labels: Mapping[str, str], created: datetime | None, now: datetime,
              size: int | None, containers: Callable[[], int] | None = None) -> dict[str, Any]:
    """One `dock images ls --format TEMPLATE` row."""
    repository, tag = name, "<none>"
    if is_dangling(name):
        repository = "<none>"
    else:
        with contextlib.suppress(InvalidReference):
            ref = parse(name)
            repository, tag = familiar(Reference(ref.domain, ref.path)), ref.tag or "<none>"
    return {
        "ID": target_digest.removeprefix("sha256:")[:SHORT_ID], "Repository": repository, "Tag": tag,
        "Digest": target_digest or "<none>", "CreatedAt": go_time(created),
        "CreatedSince": ago(created, now) if created else "N/A",
        "Size": docker_size(size) if size is not None else "N/A", "Containers": "N/A",
        "Labels": labels_csv(labels),
    }


def network_row(ours: Mapping[str, Any]) -> dict[str, Any]:
    """One `dock network ls --format TEMPLATE` row, from the object `--format json` prints."""
    created = ours.get("created_at")
    return {
        "ID": str(ours.get("id", ""))[:SHORT_ID], "Name": ours.get("name", ""), "Driver": ours.get("driver", ""),
        "Scope": "local", "IPv6": "false", "Internal": "true" if ours.get("internal") else "false",
        "Labels": labels_csv(ours.get("labels") or {}), "Label": lambda key: (ours.get("labels") or {}).get(key, ""),
        "CreatedAt": go_time(datetime.fromisoformat(created)) if created else "",
        "Subnet": ",".join(ours.get("subnets") or []), "Gateway": ours.get("gateway", ""),
    }


def network_view(ours: Mapping[str, Any]) -> dict[str, Any]:
    """What `dock network inspect --format` sees: ours plus Docker's Name, Id, Driver, Scope, Internal,
    Labels, Created, IPAM.Config[{Subnet, Gateway}], Containers (by id)."""
    return {**ours, "Name": ours.get("name", ""), "Id": ours.get("id", ""), "Driver": ours.get("driver", ""),
            "Scope": "local", "Internal": bool(ours.get("internal")), "Labels": dict(ours.get("labels") or {}),
            "Created": ours.get("created_at") or "",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": s, "Gateway": ours.get("gateway", "")}
                                                     for s in ours.get("subnets") or []]},
            "Containers": {u["id"]: {"Name": u["id"]} for u in ours.get("containers") or []}}


def volume_row(ours: Mapping[str, Any]) -> dict[str, Any]:
    """One `dock volume ls --format TEMPLATE` row, from the object `--format json` prints."""
    labels = ours.get("labels") or {}
    created = ours.get("created_at")
    return {
        "Name": ours.get("name", ""), "Driver": "local", "Scope": "local", "Mountpoint": ours.get("mountpoint", ""),
        "Labels": labels_csv(labels), "Label": lambda key: labels.get(key, ""), "Links": "N/A", "Size": "N/A",
        "CreatedAt": go_time(datetime.fromisoformat(created)) if created else "",
    }


def volume_view(ours: Mapping[str, Any]) -> dict[str, Any]:
    """What `dock volume inspect --format` sees: ours plus Docker's Name, Driver, Mountpoint, Labels,
    Scope, CreatedAt, Options."""
    return {**ours, "Name": ours.get("name", ""), "Driver": "local", "Mountpoint": ours.get("mountpoint", ""),
            "Labels": dict(ours.get("labels") or {}), "Scope": "local", "CreatedAt": ours.get("created_at") or "",
            "Options": {}}


def _percent(value: float | None) -> str:
    return "--" if value is None else f"{value:.2f}%"


def _pair(a: int | None, b: int | None, size: Callable[[float], str]) -> str:
    return "--" if a is None or b is None else f"{size(a)} / {size(b)}"


def stats_row(cid: str, name: str, container: str, figures: Mapping[str, Any] | None, *,
              no_trunc: bool = False) -> dict[str, Any]:
    """One `dock stats --no-stream --format TEMPLATE` row: Docker's statsContext. `figures`: what
    dock/commands/stats.py's figures() makes of the samples, None when none came."""
    row = {"Container": container, "Name": name or "--", "ID": cid if no_trunc else cid[:SHORT_ID]}
    if figures is None:
        return {**row, "CPUPerc": "--", "MemUsage": "-- / --", "MemPerc": "--", "NetIO": "--", "BlockIO": "--",
                "PIDs": "--"}
    f = figures
    return {**row, "CPUPerc": _percent(f["cpu_percent"]),
            "MemUsage": _pair(f["memory_usage"], f["memory_limit"], docker_bytes),
            "MemPerc": _percent(f["memory_percent"]), "NetIO": _pair(f["net_rx"], f["net_tx"], docker_size),
            "BlockIO": _pair(f["block_read"], f["block_write"], docker_size), "PIDs": str(f["pids"])}


def df_row(s: Summary) -> dict[str, Any]:
    """One `dock system df --format TEMPLATE` row (a line of the summary), as Docker's diskUsage contexts."""
    reclaimable = docker_size(s.reclaimable, 4)
    if s.percent and s.size > 0:
        reclaimable += f" ({s.reclaimable * 100 // s.size}%)"
    return {"Type": s.type, "TotalCount": str(s.total), "Active": str(s.active), "Size": docker_size(s.size, 4),
            "Reclaimable": reclaimable}


def df_verbose_view(report: Report, now: datetime, *, trunc: bool) -> dict[str, Any]:
    """What `dock system df -v --format TEMPLATE` renders (once): Docker's verbose disk-usage context."""
    from dock.dfview import short_cache_id

    def since(when: datetime | None) -> str:
        return ago(when, now) if when else "N/A"

    images = [{**image_row(r.name, r.id, {}, r.created_at, now, r.size),
               "ID": r.id.removeprefix("sha256:")[:SHORT_ID] if trunc else r.id,
               "SharedSize": docker_size(r.shared_size), "UniqueSize": docker_size(r.unique_size),
               "VirtualSize": docker_size(r.size), "Containers": str(r.containers)} for r in report.images]
    containers = [{"ID": r.id[:SHORT_ID] if trunc else r.id, "Names": r.name, "Image": image_text(r.image),
                   "Command": command_text(r.command, truncate=trunc), "LocalVolumes": str(r.local_volumes),
                   "Size": docker_size(r.size), "CreatedAt": go_time(r.created_at),
                   "RunningFor": since(r.created_at), "Status": r.status} for r in report.containers]
    volumes = [{"Name": r.name, "Driver": "local", "Scope": "local", "Links": str(r.links),
                "Size": docker_size(r.size, 4)} for r in report.volumes]
    cache = [{"ID": short_cache_id(r.id) if trunc else r.id, "CacheType": r.type, "Description": r.description,
              "Size": docker_size(r.size, 4), "CreatedAt": go_time(r.created_at), "CreatedSince": since(r.created_at),
              "LastUsedAt": go_time(r.last_used), "LastUsedSince": since(r.last_used),
              "InUse": "true" if r.in_use else "false", "Shared": "true" if r.shared else "false"}
             for r in report.build_cache]
    return {"Images": images, "Containers": containers, "Volumes": volumes, "BuildCache": cache}


def history_row(shown_id: str, created: datetime | None, created_by: str, size: int, comment: str,
                now: datetime) -> dict[str, Any]:
    """One `dock history --format TEMPLATE` row; the ID and CREATED BY as the table shows them."""
    return {"ID": shown_id, "CreatedSince": ago(created, now), "CreatedAt": go_rfc3339(created),
            "CreatedBy": created_by, "Size": docker_size(size), "Comment": comment}


# topic -> Docker's (Type, Action); the others are named from the topic (event_view)
_DOCKER_EVENTS = {
    "/containers/create": ("container", "create"), "/containers/update": ("container", "update"),
    "/containers/delete": ("container", "destroy"), "/tasks/start": ("container", "start"),
    "/tasks/exit": ("container", "die"), "/tasks/oom": ("container", "oom"), "/tasks/paused": ("container", "pause"),
    "/tasks/resumed": ("container", "unpause"), "/tasks/exec-added": ("container", "exec_create"),
    "/tasks/exec-started": ("container", "exec_start"), "/containers/health_status": ("container", "health_status"),
    "/images/delete": ("image", "delete"), "/network/attach": ("network", "connect"),
    "/network/detach": ("network", "disconnect"),
}
_ACTOR_KEYS = ("container_id", "id", "name", "key", "digest")  # the first one an event has is its actor


def event_view(env: Envelope) -> dict[str, Any]:
    """What `dock events --format TEMPLATE` sees: Docker's events.Message, from one of our events."""
    event = env.event
    first, _, rest = env.topic.strip("/").partition("/")
    kind, action = _DOCKER_EVENTS.get(env.topic) or (first.removesuffix("s"), rest)
    attributes = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in event.items()
                  if isinstance(v, str | int | bool)}
    attributes.update(event.get("labels") or {})
    attributes["namespace"] = env.namespace
    actor = next((str(event[k]) for k in _ACTOR_KEYS if event.get(k)), "")
    if kind == "container" and action == "die" and event.get("id") not in (None, "", actor):
        action = "exec_die"
    if action.startswith("exec_"):
        attributes["execID"] = str(event.get("exec_id") or event.get("id") or "")
    if action in ("die", "exec_die"):
        attributes["exitCode"] = str(event.get("exit_status", 0))
    if action == "health_status":
        action = f"health_status: {event.get('status', '')}"
    if kind == "network":
        interfaces = (event.get("attachment") or {}).get("interfaces") or []
        attributes["container"] = actor
        actor = ",".join(i.get("network", "") for i in interfaces)
    when = env.timestamp
    nanos = (when - _EPOCH) // timedelta(microseconds=1) * 1000 if when is not None else 0
    old = kind in ("container", "image")  # Docker's deprecated fields, set for these two
    return Struct({"Status": action if old else "", "ID": actor if old else "",
                   "From": str(event.get("image", "")) if kind == "container" else "", "Type": kind,
                   "Action": action, "Actor": Struct({"ID": actor, "Attributes": attributes}, {}), "Scope": "local",
                   "Time": nanos // 10**9, "TimeNano": nanos}, _MESSAGE_TAGS)


# events.Message's JSON tags (`{{json .}}`): the deprecated three and the times are omitempty
_MESSAGE_TAGS = {"Status": ("status", True), "ID": ("id", True), "From": ("from", True), "Scope": ("scope", True),
                 "Time": ("time", True), "TimeNano": ("timeNano", True)}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
