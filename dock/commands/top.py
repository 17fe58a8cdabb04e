"""dock top: the processes of a container, as `docker top` shows them.

    dock top CONTAINER [ps OPTIONS]        (default: -ef: UID PID PPID C STIME TTY TIME CMD)

The daemon runs ps(1) on its host with the options and keeps the rows of the container's
processes (their host PIDs, as docker top shows them). `--format json` prints the titles and rows.
"""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import containers_arg
from dock.client import Client
from dock.copy import CopyAPI
from dock.lookup import resolve_id
from dock.output import emit_json, emit_table


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="the processes of a container (docker top)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    containers_arg(p, "container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS", help="options for ps (default -ef)")
    p.set_defaults(handler=top)


async def top(client: Client, args: argparse.Namespace) -> int:
    cid = await resolve_id(client, args.container)
    result = await CopyAPI(client).top(cid, list(args.ps_args))
    if args.format == "json":
        emit_json({"titles": result.titles, "processes": result.processes})
        return 0
    columns = [(title, lambda row, i=i: row[i] if i < len(row) else "") for i, title in enumerate(result.titles)]
    emit_table(result.processes, columns)
    return 0
