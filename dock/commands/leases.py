"""dock leases ls|create|rm|resources, dock gc."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from dock.args import parse_labels
from dock.client import Client
from dock.output import emit, emit_json, labels_text, say
from dockyard_common.errors import NotFound

# Go's time.ParseDuration units, which ctr's --expires takes.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """`1h30m`, `90s`, `0` … as Go's time.ParseDuration reads them (no sign)."""
    if text == "0":
        return timedelta()
    pos, seconds = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: want e.g. 30m, 24h, 1h30m")
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise argparse.ArgumentTypeError("invalid duration '': want e.g. 30m, 24h, 1h30m")
    return timedelta(seconds=seconds)


def _time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(sub: Any) -> None:
    group = sub.add_parser("leases", aliases=["lease"], help="manage leases (holds against garbage collection)")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("ls", aliases=["list"], help="list leases")
    p.add_argument("--quiet", "-q", action="store_true", help="print only ids")
    p.add_argument("filters", nargs="*", help="containerd filters, e.g. labels.purpose==pull")
    p.set_defaults(handler=ls)
    p = cmds.add_parser("create", help="create a lease and print its id")
    p.add_argument("--id", default="", help="lease id (default: generated)")
    p.add_argument("--expires", "-x", type=parse_duration, default=timedelta(hours=24),
                   help="expire after this long, e.g. 30m, 24h; 0 never expires (default 24h)")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=create)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove leases")
    p.add_argument("--sync", action="store_true", help="collect garbage before returning")
    p.add_argument("ids", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("resources", help="list what a lease holds")
    p.add_argument("id")
    p.set_defaults(handler=resources)
    p = sub.add_parser("gc", help="collect garbage now and print what was removed")
    p.set_defaults(handler=gc)


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.leases.list(*args.filters)
    if args.format == "json":
        emit_json([{"id": x.id, "created_at": _time(x.created_at), "labels": x.labels} for x in found])
        return 0
    if args.quiet:
        for lease in found:
            print(lease.id)
        return 0
    emit(args.format, found, [
        ("ID", lambda x: x.id),
        ("CREATED AT", lambda x: _time(x.created_at)),
        ("LABELS", lambda x: labels_text(x.labels)),
    ])
    return 0


async def create(client: Client, args: argparse.Namespace) -> int:
    expires = args.expires if args.expires > timedelta() else None
    lease = await client.leases.create(args.id, parse_labels(args.labels), expires=expires)
    if args.format == "json":
        emit_json({"id": lease.id, "created_at": _time(lease.created_at), "labels": lease.labels})
    else:
        print(lease.id)
    return 0


async def rm(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for lease_id in args.ids:
        try:
            await client.leases.delete(lease_id, sync=args.sync)
        except NotFound as exc:
            say(str(exc))
            failed = 1
            continue
        print(lease_id)
    return failed


async def resources(client: Client, args: argparse.Namespace) -> int:
    found = await client.leases.resources(args.id)
    emit(args.format, found, [("TYPE", lambda r: r.type), ("ID", lambda r: r.id)])
    return 0


async def gc(client: Client, args: argparse.Namespace) -> int:
    stats = await client.leases.collect_garbage()
    if args.format == "json":
        emit_json(stats)
        return 0
    print(f"removed {stats.content_removed} content, {stats.snapshots_removed} snapshots, "
          f"{stats.ingests_removed} ingests, {stats.leases_removed} expired leases "
          f"in {stats.duration:.3f}s")
    return 0
