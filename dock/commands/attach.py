"""dock attach: this terminal to a running container's stdio, as `docker attach`.

    dock attach [--no-stdin] [--detach-keys KEYS] [--sig-proxy=false] CONTAINER

Output from the moment of attaching (`dock logs` has what came before); input goes to the
container when it was created with -i. The end of our input closes the container's stdin only
when it was created so (Docker's StdinOnce: `create -i`, a foreground `run -i`; dock/attachflags.py),
else the stdin stays open for the next attach. With a terminal (-t), ctrl-p ctrl-q (or
--detach-keys) detaches and leaves it running; otherwise, as Docker, our signals are forwarded to
it (--sig-proxy). The exit status is the container's when it exits, 0 after a detach.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from dock.attach import Attached, AttachOptions, attach
from dock.attachflags import attached_streams, shown_fds, stdin_once
from dock.client import Client
from dock.lookup import resolve
from dock.runner import Interrupted, Signals, container_mounts, destroy_task, raw_terminal, terminal_size
from dock.tasks import Process
from dockyard_common import detachkeys
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound
from dockyard_common.types import Status

DETACH_HELP = "the key sequence that detaches, e.g. ctrl-a,x (default ctrl-p,ctrl-q)"


def register(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach to a running container's input and output")
    p.add_argument("--no-stdin", action="store_true", help="do not send our input to the container")
    p.add_argument("--detach-keys", default="", metavar="KEYS", help=DETACH_HELP)
    p.add_argument("--sig-proxy", default="true", choices=("true", "false"),
                   help="forward our signals to the container (without a terminal; default true)")
    p.add_argument("id", metavar="CONTAINER", help="container name, id or unique id prefix")
    p.set_defaults(handler=attach_command)


def check_detach_keys(keys: str) -> str:
    """Refused before anything is made or attached (the daemon checks them again)."""
    try:
        detachkeys.parse(keys)
    except InvalidArgument as exc:
        raise SystemExit(f"dock: {exc}") from None
    return keys


async def attach_command(client: Client, args: argparse.Namespace) -> int:
    keys = check_detach_keys(args.detach_keys)
    c = await resolve(client, args.id)
    cid = c.id
    opts = AttachOptions(stdin=not args.no_stdin, detach_keys=keys, close_stdin=stdin_once(c.labels))
    try:
        async with Signals(client).installed() as signals:
            async def attached(how: Attached) -> None:
                if args.sig_proxy == "true" and not how.tty:  # a terminal's keys are input (Docker too)
                    signals.forward_to(cid)

            code = await attach(client, cid, opts, attached, raw_terminal, terminal_size)
            return 0 if code is None else code
    except Interrupted as exc:
        return 128 + exc.signum


async def start_attached(client: Client, ref: str, interactive: bool, detach_keys: str) -> int:
    """`dock start -a [-i] CONTAINER`: attach (the output create's -a chose; input too with -i, its
    end closing the container's stdin when create asked for that: StdinOnce), then start its task
    anew (an exited one is deleted first; a running one is only attached to). The container's exit
    status, or 0 after a detach."""
    check_detach_keys(detach_keys)
    c = await resolve(client, ref)
    try:
        task: Process | None = await client.tasks.get(c.id)
    except NotFound:
        task = None
    live = task is not None and task.status in (Status.RUNNING, Status.PAUSED, Status.PAUSING)
    made = False
    if not live and (task is None or task.status != Status.CREATED):
        if task is not None:
            await client.tasks.delete(c.id)
        await client.tasks.create(c.id, await container_mounts(client, c.id))
        made = True
    try:
        async with Signals(client).installed() as signals:
            async def started(how: Attached) -> None:
                if not live:
                    await client.tasks.start(c.id)
                if not how.tty:
                    signals.forward_to(c.id)

            with shown_fds(attached_streams(c.labels)) as (out_fd, err_fd):
                opts = AttachOptions(stdin=interactive, detach_keys=detach_keys,
                                     close_stdin=interactive and stdin_once(c.labels), out_fd=out_fd, err_fd=err_fd)
                code = await attach(client, c.id, opts, started, raw_terminal, terminal_size)
            return 0 if code is None else code
    except Interrupted as exc:
        return 128 + exc.signum
    except BaseException:
        if made:  # the task we made never ran (or the attach failed): none stays behind
            with contextlib.suppress(DockyardError):
                state = await client.tasks.get(c.id)
                if state.status == Status.CREATED:
                    await destroy_task(client, c.id)
        raise
