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
  ExitCode,StartedAt,FinishedAt,Health}, Config.{Hostname,User,Env,Cmd,Entrypoint,WorkingDir,Image,
  Labels,Healthcheck}, Mounts [{Type,Name,Source,Destination,Mode,RW}], NetworkSettings.{IPAddress,
  Ports, Networks.NAME.{IPAddress,Gateway,MacAddress}}, HostConfig.RestartPolicy.{Name,
  MaximumRetryCount}, RestartCount, Platform, Driver (the snapshotter).
- images: ID (the target's digest, cut: with containerd's image store Docker's image id is that
  digest too), Repository, Tag, Digest, CreatedAt/CreatedSince (the image record's creation: the
  config's date costs a read per image), Size (unpacked, else content; Docker's decimal units),
  Containers ("N/A", as Docker without -a... ), Labels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from dock.formatting import docker_size, go_time, labels_csv
from dock.lookup import NAME_LABEL, SHORT_ID, name_of
from dock.ps import ago, command_of, command_text, image_text
from dockyard_common import netlabels, volumelabels
from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.reference import InvalidReference, Reference, familiar, is_dangling, parse
from dockyard_common.types import Container


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
            "OOMKilled": False, "Dead": False, "Pid": state.get("pid", 0), "ExitCode": state.get("exit_code") or 0,
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
