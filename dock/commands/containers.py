"""dock containers create|ls|info|rm|label."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from dock.args import add_prune_options, containers_arg, parse_labels
from dock.client import Client
from dock.commands.create import add_create_options
from dock.network import LABEL_PREFIX, PORTS_LABEL, PortBinding, ports_text
from dock.output import emit, emit_json, labels_text, say, to_jsonable
from dock.runner import remove_container
from dockyard_common.errors import FailedPrecondition, NotFound
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.types import Container


def register(sub: Any) -> None:
    group = sub.add_parser("containers", aliases=["container", "c"], help="manage containers")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    add_create_options(cmds.add_parser("create", help="create a container from an image (its task is not started)"))
    p = cmds.add_parser("prune", help="remove every stopped container (Docker's; see dock/commands/prune.py)")
    add_prune_options(p)
    p.set_defaults(handler=prune_stopped)
    p = cmds.add_parser("ls", aliases=["list"], help="list containers")
    p.add_argument("--quiet", "-q", action="store_true", help="print only ids")
    p.add_argument("filters", nargs="*", help="containerd filters, e.g. labels.app==web")
    p.set_defaults(handler=ls)
    p = cmds.add_parser("info", help="show a container, spec included")
    containers_arg(p, "id")
    p.set_defaults(handler=info)
    p = cmds.add_parser("rm", aliases=["delete", "remove"],
                        help="remove containers and their snapshots (a stopped task goes too)")
    containers_arg(p, "ids", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("label", help="set (KEY=VALUE) or remove (KEY=) labels")
    containers_arg(p, "id")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=label)


def describe(c: Container) -> dict[str, Any]:
    """A container as users read it: the spec decoded from its JSON."""
    spec: Any = None
    if c.spec is not None:
        try:
            spec = json_value(c.spec.value, "spec")
        except JsonError:  # shown as what it is, not decoded
            spec = {"type_url": c.spec.type_url, "bytes": len(c.spec.value)}
    return {
        "id": c.id, "image": c.image, "labels": c.labels, "runtime": c.runtime_name,
        "snapshotter": c.snapshotter, "snapshot_key": c.snapshot_key,
        "created_at": c.created_at.isoformat() if c.created_at else None,
        "updated_at": c.updated_at.isoformat() if c.updated_at else None,
        "extensions": sorted(c.extensions), "spec": spec,
    }


async def published(client: Client, containers: list[Container]) -> dict[str, list[PortBinding]]:
    """The host ports of the containers that publish some, asked concurrently (a few at a time):
    only those carry the ports label, so listing many containers costs no extra calls for the rest."""
    limit = asyncio.Semaphore(16)

    async def one(cid: str) -> tuple[str, list[PortBinding]]:
        async with limit:
            return cid, await client.networks.published_ports(cid)

    return dict(await asyncio.gather(*(one(c.id) for c in containers if PORTS_LABEL in c.labels)))


def ports_json(ports: list[PortBinding]) -> list[dict[str, Any]]:
    return [p.to_json() for p in ports]


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.containers.list(args.filters)
    if args.quiet and args.format != "json":
        print("\n".join(c.id for c in found) + ("\n" if found else ""), end="")
        return 0
    ports = await published(client, found)
    if args.format == "json":
        emit_json([describe(c) | {"spec": None, "ports": ports_json(ports.get(c.id, []))} for c in found])
        return 0
    emit("table", found, [("CONTAINER", lambda c: c.id), ("IMAGE", lambda c: c.image or "-"),
                          ("RUNTIME", lambda c: c.runtime_name), ("PORTS", lambda c: ports_text(ports.get(c.id, []))),
                          ("LABELS", lambda c: labels_text(c.labels))])
    return 0


async def network_info(client: Client, c: Container) -> dict[str, Any]:
    """The ports and network (netns, interfaces) container `c`'s task got, for `info` and `dock inspect`."""
    att = None
    if any(k.startswith(LABEL_PREFIX) for k in c.labels):
        with contextlib.suppress(NotFound):  # no task yet, or its network is another container's
            att = await client.networks.attachment(c.id)
    ports = sorted(att.ports, key=lambda p: (p.container_port, p.protocol)) if att else []
    network = {"netns": att.netns_path, "interfaces": to_jsonable(att.interfaces)} if att else None
    return {"ports": ports_json(ports), "network": network}


async def info(client: Client, args: argparse.Namespace) -> int:
    c = await client.containers.get(args.id)
    emit_json(describe(c) | await network_info(client, c))
    return 0


async def rm(client: Client, args: argparse.Namespace) -> int:
    """As `ctr containers delete`: refused while the task runs; the snapshot is removed too."""
    failed = 0
    for cid in args.ids:
        try:
            await remove_container(client, cid)
        except (NotFound, FailedPrecondition) as exc:
            say(str(exc))
            failed = 1
    return failed


async def label(client: Client, args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels)
    current = await client.containers.get(args.id)
    current.labels = labels
    updated = await client.containers.update(current, [f"labels.{k}" for k in labels])
    if args.format == "json":
        emit_json(describe(updated))
    else:
        print(labels_text(updated.labels))
    return 0


async def prune_stopped(client: Client, args: argparse.Namespace) -> int:
    from dock.commands import prune  # the prune module pulls in verbs and runner: only for this command

    return await prune.container_prune(client, args)
