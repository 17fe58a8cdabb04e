"""dock create: Docker's `create`, a container made as `dock run` makes one, its task not started;
prints the id (`--format json`: the container).

    dock create --name web -p 8080:80 busybox httpd -f -p 80     # then: dock start web
    dock create -it --rm busybox sh                               # dock start -ai <id>
    dock create -i -a stdout --name c busybox cat                 # echo hi | dock start -ai c: hi, and it exits

It takes `dock run`'s flags except those of the foreground (-d, --detach-keys), as Docker's does;
`dock containers create` is the same command.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from dock import cidfile
from dock.attachflags import add_attach_option, parse_attach
from dock.autopull import add_pull_option
from dock.client import Client
from dock.commands.run import add_container_options, request_from_args
from dock.lookup import check_name_free
from dock.output import emit_json
from dock.runner import create_container
from dockyard_common.errors import InvalidArgument


def add_create_options(p: argparse.ArgumentParser) -> None:
    """Every flag of `dock create` (and `dock containers create`)."""
    p.add_argument("--rm", action="store_true",
                   help="remove the container (its snapshot and anonymous volumes) when its task exits")
    p.add_argument("--interactive", "-i", action="store_true",
                   help="keep the process's stdin open (for `dock start -ai` and `dock attach`)")
    add_attach_option(p)
    add_pull_option(p)
    add_container_options(p)
    p.set_defaults(handler=create)


def register(sub: Any) -> None:
    add_create_options(sub.add_parser("create", help="create a container from an image (its task is not started)"))


async def create(client: Client, args: argparse.Namespace) -> int:
    from dock.commands.containers import describe  # the json view only

    try:
        parse_attach(args.attach)  # kept as a label (request_from_args): what `dock start -a` attaches
    except InvalidArgument as exc:
        raise SystemExit(f"dock: {exc}") from None
    req = request_from_args(args)
    if args.name:
        await check_name_free(client, req.id)
    with cidfile.written(args.cidfile, req.id):
        async with contextlib.AsyncExitStack() as undo:
            created = await create_container(client, req, undo)
            undo.pop_all()
    if args.format == "json":
        emit_json(describe(created))
    else:
        print(created.id)
    return 0
