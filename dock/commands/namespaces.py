"""dock namespaces ls|create|rm|label."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dock.args import parse_labels
from dock.client import Client
from dock.output import emit, emit_json, labels_text, say
from dockyard_common.errors import NotFound


def register(sub: Any) -> None:
    group = sub.add_parser("namespaces", aliases=["namespace", "ns"], help="manage namespaces")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("ls", aliases=["list"], help="list namespaces")
    p.add_argument("--quiet", "-q", action="store_true", help="print only names")
    p.add_argument("--filter", default="", help="containerd filter, e.g. labels.team==infra")
    p.set_defaults(handler=ls)
    p = cmds.add_parser("create", help="create a namespace")
    p.add_argument("name")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=create)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove empty namespaces")
    p.add_argument("names", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("label", help="set (KEY=VALUE) or remove (KEY=) labels")
    p.add_argument("name")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=label)


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.list_namespaces(args.filter)
    if args.quiet and args.format != "json":
        for ns in found:
            print(ns.name)
        return 0
    emit(args.format, found, [("NAME", lambda n: n.name), ("LABELS", lambda n: labels_text(n.labels))])
    return 0


async def create(client: Client, args: argparse.Namespace) -> int:
    ns = await client.create_namespace(args.name, parse_labels(args.labels))
    if args.format == "json":
        emit_json(ns)
    return 0


async def rm(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for name in args.names:
        try:
            await client.delete_namespace(name)
        except NotFound as exc:
            say(str(exc), sys.stdout)
            failed = 1
            continue
        print(name)
    return failed


async def label(client: Client, args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels)
    ns = await client.update_namespace(args.name, labels, [f"labels.{k}" for k in labels])
    if args.format == "json":
        emit_json(ns)
    else:
        print(labels_text(ns.labels))
    return 0
