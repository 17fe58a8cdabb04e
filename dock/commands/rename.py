"""dock rename CONTAINER NEW_NAME: Docker's rename, as names work here (dock/lookup.py).

A container's id is the name it was created with, and containerd's id cannot change (it keys the
container's record, snapshot, task, shim, logs and network), so the new name is kept in the label
`dockyard.name` (which `--name` writes at create too): `dock ps` shows it, and every command
finds the container by it. Running containers can be renamed, also back to their id. The daemon
keeps names unique, so two renames (or a rename and a create) to one name at the same moment
cannot both win: dock/lookup.py.

    dock run -d --name web busybox sleep 600
    dock rename web api        # dock ps: NAMES api; dock stop api
"""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import check_container_name, claim_name, name_of, resolve
from dock.output import emit_json
from dockyard_common.errors import InvalidArgument


def register(sub: Any) -> None:
    p = sub.add_parser("rename", help="rename a container")
    containers_arg(p, "container", help="container name, id or unique id prefix")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(handler=rename)


async def rename(client: Client, args: argparse.Namespace) -> int:
    new = check_container_name(args.new_name)
    c = await resolve(client, args.container)
    old = name_of(c)
    if new == old:
        raise InvalidArgument(f"renaming a container with the same name as its current name ({new!r})")
    await claim_name(client, c, new)
    if args.format == "json":
        emit_json({"id": c.id, "old_name": old, "name": new})
    return 0
