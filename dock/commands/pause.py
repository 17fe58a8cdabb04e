"""dock pause|unpause: freeze and thaw every process of running containers (docker pause).

    dock pause web db      # their cgroups frozen: the processes stay, but get no CPU time
    dock unpause web db

As the other verbs (dock/commands/verbs.py): names, ids or unique id prefixes, acted on
concurrently; the references that worked on stdout, each failure on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import containers_arg
from dock.client import Client
from dock.commands.verbs import each, task_of
from dock.lookup import resolve
from dock.ps import state_of
from dockyard_common.errors import FailedPrecondition


def register(sub: Any) -> None:
    for name, handler, text in (("pause", pause, "freeze every process of running containers"),
                                ("unpause", unpause, "thaw paused containers")):
        p = sub.add_parser(name, help=text)
        containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
        p.set_defaults(handler=handler)


def refusal(verb: str, ref: str, state: str) -> FailedPrecondition | None:
    """Why `verb` (pause or unpause) cannot act on a container in `state`, as Docker refuses it;
    None when it can."""
    if verb == "pause" and state != "running":
        return FailedPrecondition(f"cannot pause container {ref}: it is "
                                  + ("already paused" if state == "paused" else "not running"))
    if verb == "unpause" and state != "paused":
        return FailedPrecondition(f"cannot unpause container {ref}: it is not paused")
    return None


async def _act(client: Client, refs: list[str], verb: str) -> int:
    async def act(ref: str) -> str:
        c = await resolve(client, ref)
        if (error := refusal(verb, ref, state_of(await task_of(client, c.id)))) is not None:
            raise error
        await (client.tasks.pause if verb == "pause" else client.tasks.resume)(c.id)
        return ref
    return await each(refs, act)


async def pause(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args.refs, "pause")


async def unpause(client: Client, args: argparse.Namespace) -> int:
    return await _act(client, args.refs, "unpause")
