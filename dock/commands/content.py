"""dock content ls|get|ingest|rm|label|status (alias active)|abort."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from dock.args import int_in, parse_labels
from dock.client import Client
from dock.content import ContentInfo, IngestStatus
from dock.output import emit_json, emit_table, human_size, labels_text, say
from dockyard_common.errors import NotFound


def register(sub: Any) -> None:
    group = sub.add_parser("content", help="manage blobs in the content store")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("ls", aliases=["list"], help="list blobs")
    p.add_argument("--quiet", "-q", action="store_true", help="print only digests")
    p.add_argument("filters", nargs="*", help="containerd filters, e.g. labels.team==red or digest~=^sha256:ab")
    p.set_defaults(handler=ls)
    p = cmds.add_parser("get", help="write a blob's bytes to stdout (or --output)")
    p.add_argument("digest")
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    p.set_defaults(handler=get)
    p = cmds.add_parser("ingest", help="store a blob read from a file or stdin under REF")
    p.add_argument("ref", help="ingest key; an unfinished ingest of the same key is resumed")
    p.add_argument("file", nargs="?", default="-", help="file to read (default: stdin)")
    p.add_argument("--expected-size", type=int_in(0), default=0, help="verify the size")
    p.add_argument("--expected-digest", default="", help="verify the digest (and skip content already present)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label to set at commit")
    p.add_argument("--lease", default="", help="write under this lease (content nothing holds is garbage-collected)")
    p.set_defaults(handler=ingest)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove blobs from this namespace")
    p.add_argument("digests", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("label", help="set (KEY=VALUE) or remove (KEY=) labels of a blob")
    p.add_argument("digest")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=label)
    p = cmds.add_parser("status", aliases=["active"], help="unfinished ingests")
    p.add_argument("refs", nargs="*", help="show just these refs")
    p.add_argument("--filter", action="append", default=[], help="containerd filter, e.g. ref~=^layer-")
    p.set_defaults(handler=status)
    p = cmds.add_parser("abort", help="abandon unfinished ingests")
    p.add_argument("refs", nargs="+")
    p.set_defaults(handler=abort)


def _age(t: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - t).total_seconds()))
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit}"
    return f"{seconds}s"


def _info_json(i: ContentInfo) -> dict[str, Any]:
    return {"digest": i.digest, "size": i.size, "created_at": i.created_at.isoformat(),
            "updated_at": i.updated_at.isoformat(), "labels": i.labels}


def _status_json(s: IngestStatus) -> dict[str, Any]:
    return {"ref": s.ref, "offset": s.offset, "total": s.total, "expected": s.expected,
            "started_at": s.started_at.isoformat(), "updated_at": s.updated_at.isoformat()}


def _progress(s: IngestStatus) -> str:
    return f"{human_size(s.offset)}/{human_size(s.total)}" if s.total else human_size(s.offset)


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.content.list(args.filters)
    if args.format == "json":
        emit_json([_info_json(i) for i in found])
    elif args.quiet:
        for i in found:
            print(i.digest)
    else:
        emit_table(found, [("DIGEST", lambda i: i.digest), ("SIZE", lambda i: human_size(i.size)),
                           ("AGE", lambda i: _age(i.created_at)), ("LABELS", lambda i: labels_text(i.labels))])
    return 0


async def get(client: Client, args: argparse.Namespace) -> int:
    await client.content.info(args.digest)  # a clear NotFound before any output file is made
    out = sys.stdout.buffer if args.output == "-" else await asyncio.to_thread(open, args.output, "wb")
    try:
        async for chunk in client.content.read(args.digest):
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.flush)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return 0


async def ingest(client: Client, args: argparse.Namespace) -> int:
    source = sys.stdin.buffer if args.file == "-" else args.file
    api = client.content.with_lease(args.lease) if args.lease else client.content
    info = await api.write(args.ref, source, total=args.expected_size,
                                      expected=args.expected_digest, labels=parse_labels(args.label))
    if args.format == "json":
        emit_json(_info_json(info))
    else:
        print(info.digest)
    return 0


async def rm(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for digest in args.digests:
        try:
            await client.content.delete(digest)
        except NotFound as exc:
            say(str(exc))
            failed = 1
            continue
        print(digest)
    return failed


async def label(client: Client, args: argparse.Namespace) -> int:
    info = await client.content.set_labels(args.digest, parse_labels(args.labels))
    if args.format == "json":
        emit_json(_info_json(info))
    else:
        print(labels_text(info.labels))
    return 0


async def status(client: Client, args: argparse.Namespace) -> int:
    if args.refs:
        found = [await client.content.status(ref) for ref in args.refs]
    else:
        found = await client.content.list_statuses(args.filter)
    if args.format == "json":
        emit_json([_status_json(s) for s in found])
    else:
        emit_table(found, [("REF", lambda s: s.ref), ("PROGRESS", _progress),
                           ("STARTED", lambda s: _age(s.started_at)), ("UPDATED", lambda s: _age(s.updated_at)),
                           ("EXPECTED", lambda s: s.expected or "-")])
    return 0


async def abort(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for ref in args.refs:
        try:
            await client.content.abort(ref)
        except NotFound as exc:
            say(str(exc))
            failed = 1
            continue
        print(ref)
    return failed
