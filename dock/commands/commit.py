"""dock commit: an image of a container's filesystem changes, made by the daemon (docker commit).

    dock commit web app:1                                  # web's changes on top of its image
    dock commit -c 'CMD ["nginx", "-g", "daemon off;"]' -c 'EXPOSE 80' -m "tuned" web app:2
    dock commit --no-pause --compression zstd web app:3

Prints the new image's manifest digest (`--format json`: name, target, config, layer, diff ID).
"""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import resolve_id
from dock.output import emit_json


def register(sub: Any) -> None:
    p = sub.add_parser("commit", help="make an image of a container's changes")
    p.add_argument("--pause", action=argparse.BooleanOptionalAction, default=True,
                   help="pause a running container during the commit (default: --pause)")
    p.add_argument("--change", "-c", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                        "USER, WORKDIR, VOLUME or STOPSIGNAL (repeatable)")
    p.add_argument("--message", "-m", default="", help="commit message (the history entry's comment)")
    p.add_argument("--author", default="", help='author, e.g. "Jane Doe <jane@example.com>"')
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip", help="layer compression (default gzip)")
    containers_arg(p, "container", help="container name, id or unique id prefix")
    p.add_argument("ref", help="image name, e.g. app:1 (normalized: docker.io/library/app:1)")
    p.set_defaults(handler=commit)


async def commit(client: Client, args: argparse.Namespace) -> int:
    cid = await resolve_id(client, args.container)
    result = await client.images.commit(cid, args.ref, pause=args.pause, changes=list(args.change),
                                        message=args.message, author=args.author, compression=args.compression)
    if args.format == "json":
        emit_json(result)
    else:
        print(result.target.digest)
    return 0
