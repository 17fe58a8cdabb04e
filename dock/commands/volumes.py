"""dock volume create|ls|inspect|rm|prune: named volumes of the namespace (`client.volumes`)."""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import add_prune_options, parse_labels
from dock.client import Client
from dock.dockerview import volume_row, volume_view
from dock.formatting import VOLUME_HEADERS, add_format_option, emit_each, emit_rows, is_template
from dock.output import confirm, emit, emit_json, for_each, human_size, labels_text
from dock.volumes import VolumeInfo
from dockyard_common.errors import InvalidArgument
from dockyard_common.volumelabels import check_name


def register(sub: Any) -> None:
    group = sub.add_parser("volume", aliases=["volumes"], help="manage named volumes")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("create", help="create a volume (an existing one with the same labels is fine) and print "
                                       "its name")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="volume label")
    p.add_argument("name")
    p.set_defaults(handler=create)
    p = cmds.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("--quiet", "-q", action="store_true", help="print only names")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="FILTER",
                   help="containerd's filter syntax over name and labels, e.g. 'labels.team==a' (any may match)")
    add_format_option(p)
    p.set_defaults(handler=ls)
    p = cmds.add_parser("inspect", help="show volumes (JSON) and the containers using them")
    p.add_argument("names", nargs="+", metavar="NAME")
    add_format_option(p, short=True)
    p.set_defaults(handler=inspect)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove volumes and their data (refused while "
                                                                  "a container uses one)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("prune", help="remove the anonymous volumes no container uses (-a: named ones too), "
                                      "with their data")
    p.add_argument("--all", "-a", action="store_true", help="remove named unused volumes too, not only anonymous ones")
    add_prune_options(p)
    p.set_defaults(handler=prune)


def volume_json(vol: VolumeInfo, users: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": vol.name, "driver": "local", "mountpoint": vol.mountpoint, "labels": vol.labels,
                           "created_at": vol.created_at.isoformat() if vol.created_at else None}
    if users is not None:
        out["containers"] = users
    return out


async def create(client: Client, args: argparse.Namespace) -> int:
    vol, _ = await client.volumes.create(check_name(args.name), parse_labels(args.label))
    if args.format == "json":
        emit_json(volume_json(vol))
    else:
        print(vol.name)
    return 0


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.volumes.list(args.filter)
    if args.format == "json":
        emit_json([volume_json(v) for v in found])
    elif args.quiet:
        for v in found:
            print(v.name)
    elif is_template(args.format):
        emit_rows(args.format, [volume_row(volume_json(v)) for v in found], VOLUME_HEADERS)
    else:
        emit("table", found, [("DRIVER", lambda v: "local"), ("VOLUME NAME", lambda v: v.name),
                              ("LABELS", lambda v: labels_text(v.labels))])
    return 0


async def inspect(client: Client, args: argparse.Namespace) -> int:
    """As `docker volume inspect`: a JSON list; names not found are reported and make it fail."""
    async def one(name: str) -> dict[str, Any]:
        return volume_json(*await client.volumes.get(name))

    found, failed = await for_each(args.names, one)
    if is_template(args.format):
        emit_each(args.format, [volume_view(v) for v in found])
    elif found or not failed:
        emit_json(found)
    return failed


async def rm(client: Client, args: argparse.Namespace) -> int:
    async def one(name: str) -> str:
        await client.volumes.delete(name)
        return name

    removed, failed = await for_each(args.names, one)
    if args.format == "json":
        emit_json(removed)
    else:
        for name in removed:
            print(name)
    return failed


def prune_filters(items: list[str]) -> tuple[list[str], list[str]]:
    """Docker's `--filter label=KEY[=VALUE]` and `label!=KEY[=VALUE]` values: (with, without)."""
    carrying: list[str] = []
    not_carrying: list[str] = []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in ("label", "label!") or not value.partition("=")[0]:
            raise InvalidArgument(f"invalid filter {item!r}: want label=KEY[=VALUE] or label!=KEY[=VALUE]")
        (carrying if key == "label" else not_carrying).append(value)
    return carrying, not_carrying


async def prune(client: Client, args: argparse.Namespace) -> int:
    carrying, not_carrying = prune_filters(args.filter)  # a bad filter fails before the question
    if not args.force and not confirm(f"This will remove {'all' if args.all else 'anonymous'} local volumes "
                                      "not used by at least one container."):
        return 0
    removed, space = await client.volumes.prune(all=args.all, labels=carrying, labels_not=not_carrying)
    if args.format == "json":
        emit_json({"removed": removed, "space_reclaimed": space})
        return 0
    if removed:
        print("Deleted Volumes:")
        for name in removed:
            print(name)
        print()
    print(f"Total reclaimed space: {human_size(space)}")
    return 0
