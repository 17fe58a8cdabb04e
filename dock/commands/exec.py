"""dock exec: run a command in a running container, as `docker exec` does.

    dock exec [-i] [-t] [-u USER] [-w DIR] [-e K=V] [-d] CONTAINER CMD [ARG...]

The process starts from the container's own process (its env, user, working directory,
capabilities, rlimits); -u, -w and -e change those. A USER name (or uid without a gid) is looked
up in the container's /etc/passwd and /etc/group, read from the container itself. dock's exit
status is the process's; -t gives it a terminal kept at the size of ours. The exec id is made
up, and the process is removed once it has exited (with -d it is left to run, its id printed).
"""

from __future__ import annotations

import argparse
import io
import stat
import tarfile
from typing import Any

from dock import runflags
from dock.args import containers_arg
from dock.client import Client
from dock.commands.tasks import run_exec
from dock.copy import CopyAPI
from dock.lookup import resolve
from dock.oci import RootFS, exec_process, with_additional_gids, with_user
from dock.runner import Interrupted, terminal_size
from dock.tasks import Status
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.jsonutil import json_object

# /etc/passwd and /etc/group bigger than this are not read for a user lookup.
MAX_ACCOUNT_FILE = 16 << 20


def register(sub: Any) -> None:
    p = sub.add_parser("exec", help="run a command in a running container (docker exec)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interactive", "-i", action="store_true", help="connect our stdin to the process")
    p.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    p.add_argument("--detach", "-d", action="store_true", help="start it and return (no stdio)")
    p.add_argument("--user", "-u", default="", help="USER, UID, USER:GROUP or UID:GID (default: the container's)")
    p.add_argument("--workdir", "-w", default="", help="working directory in the container (absolute)")
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                   help="set (or add) a variable; KEY alone: our value, or KEY unset (as Docker)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="KEY=VALUE lines (# comments), before --env")
    containers_arg(p, "container", metavar="CONTAINER")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(handler=exec_)


class _Accounts(RootFS):
    """The container's /etc/passwd and /etc/group as read through the daemon, for with_user."""

    def __init__(self, texts: dict[str, str | None]) -> None:
        super().__init__("/nonexistent")
        self.texts = texts

    def read_text(self, name: str) -> str | None:
        return self.texts.get(name)


async def read_file(files: CopyAPI, cid: str, path: str, limit: int = MAX_ACCOUNT_FILE) -> str | None:
    """A small text file of the container (symlinks followed inside it), or None if it has none."""
    try:
        async with files.copy_from(cid, path, follow=True) as (st, chunks):
            if not stat.S_ISREG(st.mode) or st.size > limit:
                return None
            data = bytearray()
            async for piece in chunks:
                data += piece
    except NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tar:
        member = tar.next()
        f = tar.extractfile(member) if member is not None else None
        return f.read().decode(errors="replace") if f is not None else None


async def exec_(client: Client, args: argparse.Namespace) -> int:
    if not args.args:
        raise InvalidArgument("exec needs a command: dock exec CONTAINER CMD [ARG...]")
    if args.detach and (args.tty or args.interactive):
        raise InvalidArgument("-d does not go with -i or -t")
    container = await resolve(client, args.container)
    cid = container.id
    try:
        state = await client.tasks.get(cid)
    except NotFound:
        raise FailedPrecondition(f"container {args.container} is not running") from None
    if state.status == Status.PAUSED:
        raise FailedPrecondition(f"container {args.container} is paused; resume it first")
    if state.status != Status.RUNNING:
        raise FailedPrecondition(f"container {args.container} is not running")
    if container.spec is None:
        raise FailedPrecondition(f"container {args.container} has no spec")
    spec = json_object(container.spec.value, f"container {cid}: its spec", FailedPrecondition)
    if not isinstance(spec.get("process") or {}, dict):
        raise FailedPrecondition(f"container {cid}: its spec's process is not a JSON object")
    env = runflags.environment(args.env_file, args.env)
    process = exec_process(spec, args.args, tty=args.tty, cwd=args.workdir, env=env)
    if args.tty and (size := terminal_size(1)) is not None:
        # The terminal starts at our size: a resize sent after the start may come too late.
        process["consoleSize"] = {"width": size[0], "height": size[1]}
    if args.user:
        files = CopyAPI(client)
        accounts = _Accounts({name: await read_file(files, cid, name) for name in ("/etc/passwd", "/etc/group")})
        view = {"process": process}
        with_user(view, args.user, accounts)
        with_additional_gids(view, str(process["user"]["uid"]), accounts)
    try:
        return await run_exec(client, cid, process, tty=args.tty, interactive=args.interactive, detach=args.detach)
    except Interrupted as exc:
        return 128 + exc.signum
