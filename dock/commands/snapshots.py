"""dock snapshots [--snapshotter NAME] ls|prepare|view|commit|rm|mounts|usage|tree|info|label."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from typing import Any

from dock.args import parse_labels
from dock.client import Client
from dock.output import emit_json, emit_table, human_size, labels_text, say
from dock.snapshots import DEFAULT_SNAPSHOTTER, Info, Mount, SnapshotsAPI
from dockyard_common.errors import NotFound

# Like ctr, prepare/commit (and here view too) mark what they make as a GC root, so the
# collector leaves it until `dock snapshots rm`.
GC_ROOT = "containerd.io/gc.root"


def register(sub: Any) -> None:
    group = sub.add_parser("snapshots", aliases=["snapshot", "snap"], help="manage snapshots")
    group.add_argument("--snapshotter", default=os.environ.get("DOCKYARD_SNAPSHOTTER", DEFAULT_SNAPSHOTTER),
                       help=f"snapshotter to use (env DOCKYARD_SNAPSHOTTER, default {DEFAULT_SNAPSHOTTER})")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("ls", aliases=["list"], help="list snapshots")
    p.add_argument("filters", nargs="*", metavar="FILTER", help="containerd filters, e.g. kind==committed")
    p.add_argument("--quiet", "-q", action="store_true", help="print only keys")
    p.set_defaults(handler=ls)
    for name, handler, what in (("prepare", prepare, "an active (writable)"), ("view", view, "a read-only")):
        p = cmds.add_parser(name, help=f"create {what} snapshot KEY on committed PARENT")
        p.add_argument("key")
        p.add_argument("parent", nargs="?", default="")
        p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--target", "-t", default="", help="print the mount command lines for this directory")
        p.add_argument("--mounts", action="store_true", help="print the mounts")
        p.set_defaults(handler=handler)
    p = cmds.add_parser("commit", help="commit active snapshot KEY as NAME")
    p.add_argument("name")
    p.add_argument("key")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=commit)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove snapshots")
    p.add_argument("keys", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("mounts", aliases=["m", "mount"], help="print the mount command lines of KEY at TARGET")
    p.add_argument("target")
    p.add_argument("key")
    p.set_defaults(handler=mounts)
    p = cmds.add_parser("usage", help="disk usage of snapshots (all, or the keys given)")
    p.add_argument("keys", nargs="*")
    p.set_defaults(handler=usage)
    p = cmds.add_parser("tree", help="show snapshots as a tree of parents and children")
    p.set_defaults(handler=tree)
    p = cmds.add_parser("info", help="show one snapshot")
    p.add_argument("key")
    p.set_defaults(handler=info)
    p = cmds.add_parser("label", help="set (KEY=VALUE) or remove (KEY=) labels of snapshot KEY")
    p.add_argument("key")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=label)


def _api(client: Client, args: argparse.Namespace) -> SnapshotsAPI:
    return client.snapshots.using(args.snapshotter)


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def info_json(i: Info) -> dict[str, Any]:
    return {"name": i.name, "parent": i.parent, "kind": str(i.kind).lower(), "created_at": _stamp(i.created_at),
            "updated_at": _stamp(i.updated_at), "labels": i.labels}


def mount_lines(target: str, found: list[Mount]) -> list[str]:
    """ctr's `mount -t TYPE SOURCE TARGET -o OPTIONS`, quoted for a shell when needed."""
    lines = []
    for m in found:
        dest = os.path.join(target, m.target.lstrip("/")) if m.target else target
        line = f"mount -t {shlex.quote(m.type)} {shlex.quote(m.source)} {shlex.quote(dest)}"
        lines.append(line + (f" -o {shlex.quote(','.join(m.options))}" if m.options else ""))
    return lines


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await _api(client, args).all(*args.filters)
    if args.format == "json":
        emit_json([info_json(i) for i in found])
    elif args.quiet:
        for i in found:
            print(i.name)
    else:
        emit_table(found, [("KEY", lambda i: i.name), ("PARENT", lambda i: i.parent),
                           ("KIND", lambda i: i.kind)])
    return 0


def _print_mounts(args: argparse.Namespace, found: list[Mount]) -> None:
    if args.format == "json":
        emit_json(found)
    elif args.target:
        print("\n".join(mount_lines(args.target, found)))
    elif args.mounts:
        emit_table(found, [("TYPE", lambda m: m.type), ("SOURCE", lambda m: m.source),
                           ("OPTIONS", lambda m: ",".join(m.options))])


def _with_root(items: list[str]) -> dict[str, str]:
    labels = parse_labels(items)
    labels.setdefault(GC_ROOT, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return labels


async def prepare(client: Client, args: argparse.Namespace) -> int:
    _print_mounts(args, await _api(client, args).prepare(args.key, args.parent, _with_root(args.label)))
    return 0


async def view(client: Client, args: argparse.Namespace) -> int:
    _print_mounts(args, await _api(client, args).view(args.key, args.parent, _with_root(args.label)))
    return 0


async def commit(client: Client, args: argparse.Namespace) -> int:
    await _api(client, args).commit(args.name, args.key, _with_root(args.label))
    return 0


async def rm(client: Client, args: argparse.Namespace) -> int:
    api, failed = _api(client, args), 0
    for key in args.keys:
        try:
            await api.remove(key)
        except NotFound as exc:
            say(str(exc), sys.stdout)
            failed = 1
            continue
        print(key)
    return failed


async def mounts(client: Client, args: argparse.Namespace) -> int:
    found = await _api(client, args).mounts(args.key)
    if args.format == "json":
        emit_json(found)
    else:
        print("\n".join(mount_lines(args.target, found)))
    return 0


async def usage(client: Client, args: argparse.Namespace) -> int:
    api = _api(client, args)
    keys = args.keys or [i.name for i in await api.all()]
    rows = [(key, await api.usage(key)) for key in keys]
    if args.format == "json":
        emit_json([{"key": k, "size": u.size, "inodes": u.inodes} for k, u in rows])
    else:
        emit_table(rows, [("KEY", lambda r: r[0]), ("SIZE", lambda r: human_size(r[1].size)),
                          ("INODES", lambda r: r[1].inodes)])
    return 0


def tree_lines(infos: list[Info]) -> list[str]:
    """ctr's tree: roots at the left, each child indented two spaces further under `\\_`."""
    children: dict[str, list[str]] = {}
    names = {i.name for i in infos}
    for i in infos:
        # A parent outside the listing (another page of a filter) makes the snapshot a root here.
        children.setdefault(i.parent if i.parent in names else "", []).append(i.name)
    lines: list[str] = []

    def walk(name: str, level: int) -> None:
        prefix = "  " * level + ("\\_" if level else "")
        lines.append(f"{prefix} {name}")
        for child in sorted(children.get(name, [])):
            walk(child, level + 1)

    for root in sorted(children.get("", [])):
        walk(root, 0)
    return lines


async def tree(client: Client, args: argparse.Namespace) -> int:
    infos = await _api(client, args).all()
    if args.format == "json":
        emit_json([info_json(i) for i in infos])
    else:
        for line in tree_lines(infos):
            print(line)
    return 0


async def info(client: Client, args: argparse.Namespace) -> int:
    found = await _api(client, args).stat(args.key)
    if args.format == "json":
        emit_json(info_json(found))
        return 0
    data = info_json(found)
    data["labels"] = labels_text(found.labels)
    width = max(len(k) for k in data) + 1
    for k, v in data.items():
        print(f"{(k + ':').ljust(width)} {v if v != '' else '-'}")
    return 0


async def label(client: Client, args: argparse.Namespace) -> int:
    found = await _api(client, args).set_labels(args.key, parse_labels(args.labels))
    if args.format == "json":
        emit_json(info_json(found))
    else:
        print(labels_text(found.labels))
    return 0
