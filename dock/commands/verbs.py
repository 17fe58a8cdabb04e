"""Docker's everyday container verbs: dock ps|inspect|stop|start|restart|kill|rm|wait.

Each takes containers by name, id or unique id prefix (dock/lookup.py). Verbs given several
containers act on them concurrently and report each: the ids that worked on stdout in the order
given, the others' errors on stderr (exit status 1), as Docker does.

    dock run -d --name web busybox httpd -f
    dock ps                       # running ones; -a all, -q ids, --filter status=exited ...
    dock stop -t 5 web            # the image's stop signal, SIGKILL after 5 s
    dock start web; dock wait web; dock rm -f web
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dock import health as healthview
from dock.args import containers_arg, int_in
from dock.client import Client
from dock.commands.containers import describe, network_info, ports_json, published
from dock.commands.tasks import parse_signal, process_json, start_detached, stop_signal
from dock.dockerview import inspect_view, ps_row
from dock.formatting import PS_HEADERS, add_format_option, emit_each, emit_rows, is_template
from dock.lookup import NAME_LABEL, SHORT_ID, name_of, resolve
from dock.network import ports_text
from dock.output import emit_json, emit_table, for_each
from dock.ps import (
    Filters,
    ago,
    command_of,
    command_text,
    image_text,
    process_started,
    ps_json,
    state_of,
    status_text,
    with_last_exit,
)
from dock.runner import container_mounts, destroy_task, remove_container
from dock.stopping import DEFAULT_STOP_TIMEOUT, stop_timeout
from dock.tasks import Process
from dock.volumes import remove_anonymous
from dockyard_common import autoremove, oomkilled
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.types import Container, Status

# restart policy bookkeeping (containerd's labels, and the daemon's record of the last run), shown by inspect
RESTART_LABELS = "containerd.io/restart."
RESTART_LABEL_PREFIXES = (RESTART_LABELS, "dockyard.restart.")
LIVE = ("running", "paused")
AT_ONCE = 16  # containers acted on concurrently


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list containers (running ones; -a for all)")
    p.add_argument("--all", "-a", action="store_true", help="show every container, not just running ones")
    p.add_argument("--quiet", "-q", action="store_true", help="print only ids")
    p.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                   help="id, name, status (created|running|paused|exited), label (KEY or KEY=VALUE), "
                        "ancestor (image), exited (exit code), health (starting|healthy|unhealthy|none); "
                        "repeat a key for either, keys for all")
    p.add_argument("--no-trunc", action="store_true", help="full ids and commands")
    add_format_option(p)
    p.set_defaults(handler=ps)
    p = sub.add_parser("inspect", help="show containers as JSON: record, state, mounts, network")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    add_format_option(p, short=True)
    p.set_defaults(handler=inspect)
    for name, handler, text in (("stop", stop, "stop containers: the image's stop signal, then SIGKILL"),
                                ("restart", restart, "stop containers, then start them again")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--time", "-t", type=int_in(-1, 2**31 - 1), default=None, metavar="SECONDS",
                       help=f"seconds to wait before SIGKILL (default: the container's --stop-timeout, else "
                            f"{DEFAULT_STOP_TIMEOUT}; -1 waits for ever)")
        containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
        p.set_defaults(handler=handler)
    p = sub.add_parser("start", help="start stopped containers (detached; -a attaches)")
    p.add_argument("--attach", "-a", action="store_true", help="attach to its output (and wait for its exit)")
    p.add_argument("--interactive", "-i", action="store_true", help="attach our input too")
    p.add_argument("--detach-keys", default="", metavar="KEYS", help="the keys that detach (default ctrl-p,ctrl-q)")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=start)
    p = sub.add_parser("kill", help="signal running containers (default SIGKILL)")
    p.add_argument("--signal", "-s", default="KILL", help="signal name or number (default KILL)")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=kill)
    p = sub.add_parser("rm", help="remove containers and their snapshots")
    p.add_argument("--force", "-f", action="store_true", help="kill a running container first")
    p.add_argument("--volumes", "-v", action="store_true",
                   help="remove the container's anonymous volumes too (named volumes stay)")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=rm)
    p = sub.add_parser("wait", help="wait for containers to exit; print their exit codes")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=wait)


async def task_of(client: Client, cid: str) -> Process | None:
    """The container's task, None when it has none."""
    try:
        return await client.tasks.get(cid)
    except NotFound:
        return None


async def each(refs: list[str], act: Callable[[str], Awaitable[str]]) -> int:
    """`act` on every reference concurrently; its lines in the order given, errors on stderr."""
    lines, failed = await for_each(refs, act, at_once=AT_ONCE)
    for line in lines:
        print(line)
    return failed


# -- ps ---------------------------------------------------------------------------------------------


async def ps(client: Client, args: argparse.Namespace) -> int:
    filters = Filters.parse(args.filter)
    containers, tasks = await asyncio.gather(client.containers.list(), client.tasks.list())
    by_id = {t.id: t for t in tasks}
    show_all = args.all or filters.wants_all
    every = [(c, with_last_exit(c, by_id.get(c.id))) for c in containers]
    rows = [(c, t) for c, t in every if (show_all or state_of(t) in LIVE) and filters.match(c, t)]
    epoch = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda r: r[0].created_at.replace(tzinfo=UTC) if r[0].created_at else epoch, reverse=True)
    width = None if args.no_trunc else SHORT_ID
    if args.quiet and args.format != "json":
        print("".join(f"{c.id[:width]}\n" for c, _ in rows), end="")
        return 0
    ports = await published(client, [c for c, _ in rows])
    now = datetime.now(UTC)
    started = {c.id: process_started(t.pid) for c, t in rows if t is not None and state_of(t) in LIVE}
    if args.format == "json":
        emit_json([ps_json(c, t, ports_json(ports.get(c.id, [])), started.get(c.id), now) for c, t in rows])
        return 0
    if is_template(args.format):  # Docker's --format '{{.Names}}\t{{.Status}}', 'table {{.ID}}...'
        emit_rows(args.format, [ps_row(
            c, state=state_of(t), status=status_text(t, started.get(c.id), now, healthview.status_of(c)),
            ports=ports_text(ports[c.id]) if ports.get(c.id) else "", created=c.created_at, now=now,
            binds=spec_mounts(c), no_trunc=args.no_trunc) for c, t in rows], PS_HEADERS)
        return 0
    emit_table(rows, [
        ("CONTAINER ID", lambda r: r[0].id[:width]), ("IMAGE", lambda r: image_text(r[0].image)),
        ("COMMAND", lambda r: command_text(command_of(r[0]), truncate=not args.no_trunc)),
        ("CREATED", lambda r: ago(r[0].created_at, now)),
        ("STATUS", lambda r: status_text(r[1], started.get(r[0].id), now, healthview.status_of(r[0]))),
        ("PORTS", lambda r: ports_text(ports[r[0].id]) if ports.get(r[0].id) else ""),
        ("NAMES", lambda r: r[0].labels.get(NAME_LABEL) or r[0].id if args.no_trunc else name_of(r[0])),
    ])
    return 0


# -- inspect ----------------------------------------------------------------------------------------


def spec_mounts(c: Container) -> list[dict[str, Any]]:
    """The mounts of the container's spec that come from the host (binds), as the spec has them."""
    if c.spec is None:
        return []
    with contextlib.suppress(JsonError):
        spec = json_value(c.spec.value, "spec")
        mounts = spec.get("mounts") if isinstance(spec, dict) else None
        if isinstance(mounts, list):
            return [m for m in mounts if isinstance(m, dict) and
                    (m.get("type") == "bind" or any(o in ("bind", "rbind") for o in m.get("options") or []))]
    return []


def state_json(task: Process | None) -> dict[str, Any]:
    state = state_of(task)
    started = process_started(task.pid) if task is not None and state in LIVE else None
    return {"status": state, "running": state == "running", "paused": state == "paused",
            "pid": task.pid if task is not None and state in LIVE else 0,
            "exit_code": task.exit_status if task is not None and state == "exited" else None,
            "started_at": started.isoformat() if started else None,
            "exited_at": task.exited_at.isoformat() if task is not None and task.exited_at else None,
            "task": process_json(task) if task is not None else None}


async def inspect_one(client: Client, ref: str) -> dict[str, Any]:
    c = await resolve(client, ref)
    task, network = await asyncio.gather(task_of(client, c.id), network_info(client, c))
    task = with_last_exit(c, task)
    out = describe(c) | network | {"name": name_of(c), "state": state_json(task), "mounts": spec_mounts(c)}
    out["state"]["oom_killed"] = oomkilled.killed(c.labels)  # Docker's State.OOMKilled, kept by the daemon
    if (health := healthview.state_json(c)) is not None:  # Docker's State.Health
        out["state"]["Health"] = health
    if (check := healthview.config_json(c)) is not None:  # Docker's Config.Healthcheck
        out["Config"] = {"Healthcheck": check}
    restart = {k: v for k, v in c.labels.items() if k.startswith(RESTART_LABEL_PREFIXES)}
    if restart:
        out["restart"] = restart
        if (policy := restart.get(RESTART_LABELS + "policy")) is not None:
            out["RestartPolicy"] = policy
        if (count := restart.get(RESTART_LABELS + "count")) is not None:
            out["RestartCount"] = count
    return out


async def inspect(client: Client, args: argparse.Namespace) -> int:
    """As `docker inspect`: one JSON array; references not found are reported and make it fail."""
    if is_template(args.format):  # Docker's inspect --format '{{.State.Status}}': our object + Docker's paths
        async def view(ref: str) -> dict[str, Any]:
            c = await resolve(client, ref)
            return inspect_view(await inspect_one(client, c.id), c)
        found, failed = await for_each(args.refs, view, at_once=AT_ONCE)
        emit_each(args.format, found)
        return failed
    found, failed = await for_each(args.refs, lambda ref: inspect_one(client, ref), at_once=AT_ONCE)
    if found or not failed:
        emit_json(found)
    return failed


# -- lifecycle --------------------------------------------------------------------------------------


def _stop_signal(c: Container) -> int:
    try:
        return stop_signal(c)
    except SystemExit:  # a stop signal label we cannot read (another client's record): Docker's default
        return signal.SIGTERM


async def stop_container(client: Client, c: Container, given: int | None) -> None:
    """As `docker stop`: the stop signal, then SIGKILL (every process) once the timeout passes (`given`,
    else the container's; negative: never); returns when the task has exited. A container not running
    is left as it is."""
    timeout = stop_timeout(c.labels, given)
    task = await task_of(client, c.id)
    if state_of(task) not in LIVE:
        return
    exited = asyncio.ensure_future(client.tasks.wait(c.id))
    try:
        if timeout != 0:
            with contextlib.suppress(NotFound, FailedPrecondition):  # it may be gone already
                await client.tasks.kill(c.id, _stop_signal(c))
                if task is not None and task.status == Status.PAUSED:  # frozen, it would never see the signal
                    await client.tasks.resume(c.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), None if timeout < 0 else timeout)
                return
        with contextlib.suppress(NotFound, FailedPrecondition):
            await client.tasks.kill(c.id, signal.SIGKILL, all=True)
        await exited
    finally:
        if not exited.done():
            exited.cancel()
            with contextlib.suppress(BaseException):
                await exited


async def start_container(client: Client, c: Container) -> None:
    """As `docker start -d`: the task of the container anew (an exited one is deleted first);
    nothing to do when it runs."""
    task = await task_of(client, c.id)
    state = state_of(task)
    if state in LIVE:
        return
    if task is not None and task.status == Status.CREATED:  # made by someone but never started
        await client.tasks.start(c.id)
        return
    if task is not None:
        await client.tasks.delete(c.id)
    await start_detached(client, c.id, await container_mounts(client, c.id))


async def stop(client: Client, args: argparse.Namespace) -> int:
    async def act(ref: str) -> str:
        await stop_container(client, await resolve(client, ref), args.time)
        return ref
    return await each(args.refs, act)


async def restart(client: Client, args: argparse.Namespace) -> int:
    async def act(ref: str) -> str:
        c = await resolve(client, ref)
        held = autoremove.LABEL in c.labels  # an --rm container: its stop here must not remove it
        if held:
            c = await client.containers.update(replace(c, labels={**c.labels, autoremove.HELD: "restart"}),
                                               [f"labels.{autoremove.HELD}"])
        await stop_container(client, c, args.time)
        await start_container(client, c)
        if held:
            labels = {k: v for k, v in c.labels.items() if k != autoremove.HELD}
            await client.containers.update(replace(c, labels=labels), [f"labels.{autoremove.HELD}"])
        return ref
    return await each(args.refs, act)


async def start(client: Client, args: argparse.Namespace) -> int:
    if args.attach or args.interactive:
        from dock.commands.attach import start_attached
        if len(args.refs) != 1:
            raise InvalidArgument("you cannot start and attach several containers at once")
        return await start_attached(client, args.refs[0], args.interactive, args.detach_keys)
    async def act(ref: str) -> str:
        await start_container(client, await resolve(client, ref))
        return ref
    return await each(args.refs, act)


async def kill(client: Client, args: argparse.Namespace) -> int:
    signum = parse_signal(args.signal)

    async def act(ref: str) -> str:
        c = await resolve(client, ref)
        if state_of(await task_of(client, c.id)) not in LIVE:
            raise FailedPrecondition(f"cannot kill container {ref}: it is not running")
        await client.tasks.kill(c.id, signum)
        return ref
    return await each(args.refs, act)


async def rm(client: Client, args: argparse.Namespace) -> int:
    async def act(ref: str) -> str:
        c = await resolve(client, ref)
        task = await task_of(client, c.id)
        state = state_of(task)
        if task is not None and state not in ("created", "exited"):  # running, paused, or a shim not answering
            if not args.force:
                raise FailedPrecondition(f"cannot remove container {ref}: it is {state}; "
                                         "stop it first, or use dock rm -f")
            await destroy_task(client, c.id)
        await remove_container(client, c.id)
        if args.volumes:
            await remove_anonymous(client, c.id)
        return ref
    return await each(args.refs, act)


async def wait(client: Client, args: argparse.Namespace) -> int:
    async def act(ref: str) -> str:
        c = await resolve(client, ref)
        try:
            status = await client.tasks.wait(c.id)
        except NotFound:
            raise FailedPrecondition(f"container {ref} has no task to wait for: never started, "
                                     "or its task was removed") from None
        return str(status.code)
    return await each(args.refs, act)
