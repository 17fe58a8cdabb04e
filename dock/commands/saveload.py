"""dock save, dock load: Docker's names for `dock images export` and `dock images import`.

    dock save busybox > bb.tar           # or -o bb.tar; several images into one archive
    dock load < bb.tar                   # or -i bb.tar; prints "Loaded image: busybox:latest"

As Docker's: save writes to stdout unless -o (and refuses a terminal), load reads stdin unless -i
(and refuses a terminal). The archive is a `docker save` tar that is an OCI layout too, so
Docker, podman and `ctr images import` read what save writes; load reads both kinds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dock.args import images_arg
from dock.client import Client
from dock.output import emit_json
from dock.registryview import follow
from dock.transfer import ImportResult
from dockyard_common.errors import InvalidArgument
from dockyard_common.reference import InvalidReference, familiar, parse


def register(sub: Any) -> None:
    p = sub.add_parser("save", help="save images to a tar archive (stdout by default)")
    p.add_argument("--output", "-o", default="", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--platform", default="", help="the platform to save from multi-platform images "
                                                  "(default: this host's)")
    images_arg(p, "names", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=save)
    p = sub.add_parser("load", help="load images from a tar archive (stdin by default)")
    p.add_argument("--input", "-i", default="", metavar="FILE", help="read from FILE instead of stdin")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress (the default here: only the \"Loaded image\" lines, which -q keeps, as Docker's)")
    p.add_argument("--platform", default="", help="load only this platform of multi-platform archives")
    p.set_defaults(handler=load)


async def save(client: Client, args: argparse.Namespace) -> int:
    if not args.output and sys.stdout.isatty():
        raise InvalidArgument("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    names = [(await client.images.find(n)).name for n in args.names]  # every name known before a byte is written
    dest: Any = args.output or sys.stdout.buffer
    await client.transfer.export_to(dest, names, platform=args.platform, format="docker")
    if not args.output:
        sys.stdout.buffer.flush()
    return 0


def shown_name(name: str) -> str:
    """`busybox:latest` for docker.io/library/busybox:latest, as Docker's load prints it."""
    try:
        return familiar(parse(name))
    except InvalidReference:
        return name


async def load(client: Client, args: argparse.Namespace) -> int:
    if not args.input and sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    source: Any = args.input or sys.stdin.buffer
    events = client.transfer.import_stream(source, platform=args.platform)
    result = await follow(events, None, ImportResult)
    if result is None:
        return 1
    if args.format == "json":
        emit_json(result)
    else:
        for img in result.images:
            print(f"Loaded image: {shown_name(img.name)}")
    return 0
