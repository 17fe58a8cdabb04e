"""dock tasks ls|ps|start|kill|exec|pause|resume|metrics|rm|wait."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
from typing import Any

from dock.args import containers_arg
from dock.client import Client
from dock.oci import STOP_SIGNAL_LABEL, exec_process
from dock.output import emit, emit_json, say, to_jsonable
from dock.runner import Signals, attach, container_mounts, destroy_task
from dock.stdio import ProcessIO
from dock.stopping import signal_number
from dock.tasks import Process, Status, TaskMetrics
from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.jsonutil import json_object
from dockyard_common.types import Container, Mount


def register(sub: Any) -> None:
    group = sub.add_parser("tasks", aliases=["task", "t"], help="manage tasks (running containers)")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("ls", aliases=["list"], help="list tasks")
    p.add_argument("--quiet", "-q", action="store_true", help="print only ids")
    p.add_argument("filter", nargs="?", default="", help="a containerd filter, e.g. status==running")
    p.set_defaults(handler=ls)
    p = cmds.add_parser("ps", help="list a task's processes")
    containers_arg(p, "id")
    p.set_defaults(handler=ps)
    p = cmds.add_parser("start", help="create and start the task of an existing container")
    p.add_argument("--detach", "-d", action="store_true", help="return once started")
    p.add_argument("--interactive", "-i", action="store_true", help="connect our stdin to the process")
    containers_arg(p, "id")
    p.set_defaults(handler=start)
    p = cmds.add_parser("kill", help="signal a task (default SIGTERM, or the image's stop signal)")
    p.add_argument("--signal", "-s", default="", help="signal name or number")
    p.add_argument("--all", "-a", action="store_true", help="signal every process in the task")
    p.add_argument("--exec-id", default="", help="signal this exec process instead of the init")
    containers_arg(p, "id")
    p.set_defaults(handler=kill)
    p = cmds.add_parser("exec", help="run another process in a task")
    p.add_argument("--exec-id", default="", help="the process' id (default: a random one)")
    p.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    p.add_argument("--interactive", "-i", action="store_true", help="connect our stdin to the process")
    p.add_argument("--cwd", "-w", default="", help="working directory")
    p.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--detach", "-d", action="store_true", help="start it and return (no stdio)")
    containers_arg(p, "id")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(handler=exec_)
    for name, handler, text in (("pause", pause, "freeze a task's processes"),
                                ("resume", resume, "thaw a paused task")):
        p = cmds.add_parser(name, help=text)
        containers_arg(p, "id")
        p.set_defaults(handler=handler)
    p = cmds.add_parser("metrics", aliases=["metric"], help="a task's cgroup statistics")
    containers_arg(p, "ids", nargs="+")
    p.set_defaults(handler=metrics)
    p = cmds.add_parser("rm", aliases=["delete", "remove"], help="delete stopped tasks")
    p.add_argument("--force", "-f", action="store_true", help="kill a running task first")
    p.add_argument("--exec-id", default="", help="delete this exec process instead")
    containers_arg(p, "ids", nargs="+")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("wait", help="wait for a task to exit; exits with its status")
    p.add_argument("--exec-id", default="")
    containers_arg(p, "id")
    p.set_defaults(handler=wait)


def parse_signal(text: str) -> int:
    """`SIGKILL`, `KILL`, `kill` or `9`; a bad one ends the command with its message."""
    try:
        return signal_number(text)
    except InvalidArgument:
        raise SystemExit(f"dock: invalid signal {text!r}") from None


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.tasks.list(args.filter)
    if args.quiet and args.format != "json":
        print("".join(f"{t.id}\n" for t in found), end="")
        return 0
    if args.format == "json":
        emit_json([process_json(t) for t in found])
        return 0
    emit("table", found, [("TASK", lambda t: t.id), ("PID", lambda t: t.pid), ("STATUS", lambda t: t.status.name)])
    return 0


def process_json(p: Process) -> dict[str, Any]:
    return to_jsonable(p) | {"status": p.status.name,
                             "exited_at": p.exited_at.isoformat() if p.exited_at else None}


async def ps(client: Client, args: argparse.Namespace) -> int:
    pids = await client.tasks.pids(args.id)
    emit(args.format, pids, [("PID", lambda p: p.pid), ("INFO", lambda p: json.dumps(p.info) if p.info else "-")])
    return 0


async def start(client: Client, args: argparse.Namespace) -> int:
    rootfs = await container_mounts(client, args.id)
    container = await client.containers.get(args.id)
    process = _spec(args.id, container.spec.value).get("process") if container.spec else None
    tty = bool(process.get("terminal")) if isinstance(process, dict) else False
    if args.detach:
        await start_detached(client, args.id, rootfs)
        return 0
    async with Signals(client).installed() as signals, contextlib.AsyncExitStack() as undo:
        io = await ProcessIO.open(args.id, stdin=args.interactive, tty=tty)
        undo.push_async_callback(io.close)
        await client.tasks.create(args.id, rootfs, io.stdin, io.stdout, io.stderr, tty)
        undo.push_async_callback(destroy_task, client, args.id)
        return await attach(client, args.id, io, signals, lambda: client.tasks.start(args.id), tty=tty,
                            interactive=args.interactive)
    raise AssertionError("unreachable")


async def start_detached(client: Client, cid: str, rootfs: list[Mount]) -> None:
    """Create and start the task of container `cid`, without stdio; none is left if the start fails."""
    await client.tasks.create(cid, rootfs)
    try:
        await client.tasks.start(cid)
    except BaseException:
        await destroy_task(client, cid)
        raise


def stop_signal(container: Container) -> int:
    """As ctr: the image's stop signal, which `run` stored as a container label; else SIGTERM."""
    return parse_signal(container.labels.get(STOP_SIGNAL_LABEL) or "SIGTERM")


async def kill(client: Client, args: argparse.Namespace) -> int:
    if args.signal:
        signum = parse_signal(args.signal)
    else:
        signum = stop_signal(await client.containers.get(args.id))
    await client.tasks.kill(args.id, signum, exec_id=args.exec_id, all=args.all)
    return 0


async def exec_(client: Client, args: argparse.Namespace) -> int:
    if not args.args:
        raise SystemExit("dock: exec needs a command")
    if args.detach and (args.tty or args.interactive):
        raise InvalidArgument("-d does not go with -i or -t")
    container = await client.containers.get(args.id)
    if container.spec is None:
        raise FailedPrecondition(f"container {args.id} has no spec")
    spec = _spec(args.id, container.spec.value)
    if not isinstance(spec.get("process") or {}, dict):
        raise FailedPrecondition(f"container {args.id}: its spec's process is not a JSON object")
    process = exec_process(spec, args.args, tty=args.tty, cwd=args.cwd, env=args.env)
    return await run_exec(client, args.id, process, exec_id=args.exec_id, tty=args.tty,
                          interactive=args.interactive, detach=args.detach)


async def run_exec(client: Client, cid: str, process: dict[str, Any], *, exec_id: str = "", tty: bool = False,
                   interactive: bool = False, detach: bool = False) -> int:
    """Run `process` (an OCI process) in the task of `cid`: detached (its exec id printed), or
    attached to our stdio until it exits, then deleted; its exit status. (`dock exec` too.)"""
    exec_id = exec_id or f"exec-{secrets.token_hex(6)}"
    if detach:
        await client.tasks.exec(cid, exec_id, process)
        await client.tasks.start(cid, exec_id)
        print(exec_id)
        return 0
    async with Signals(client).installed() as signals, contextlib.AsyncExitStack() as undo:
        io = await ProcessIO.open(exec_id, stdin=interactive, tty=tty)
        undo.push_async_callback(io.close)
        await client.tasks.exec(cid, exec_id, process, io.stdin, io.stdout, io.stderr, tty)
        undo.push_async_callback(_delete_exec, client, cid, exec_id)
        return await attach(client, cid, io, signals, lambda: client.tasks.start(cid, exec_id),
                            exec_id=exec_id, tty=tty, interactive=interactive)
    raise AssertionError("unreachable")


async def _delete_exec(client: Client, cid: str, exec_id: str) -> None:
    with contextlib.suppress(DockyardError):
        state = await client.tasks.get(cid, exec_id)
        if state.status not in (Status.STOPPED, Status.CREATED):
            await client.tasks.kill(cid, signal.SIGKILL, exec_id=exec_id)
            await client.tasks.wait(cid, exec_id)
        await client.tasks.delete_process(cid, exec_id)


async def pause(client: Client, args: argparse.Namespace) -> int:
    await client.tasks.pause(args.id)
    return 0


async def resume(client: Client, args: argparse.Namespace) -> int:
    await client.tasks.resume(args.id)
    return 0


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested stats as `memory.usage.usage  12345` rows (lists keep their index)."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in flatten(v, f"{prefix}{k}.")]
    if isinstance(data, list):
        return [row for i, v in enumerate(data) for row in flatten(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), data)]


async def metrics(client: Client, args: argparse.Namespace) -> int:
    found = await client.tasks.metrics(*args.ids)
    missing = set(args.ids) - {m.id for m in found}
    if missing:
        raise NotFound(f"task {sorted(missing)[0]}")
    if args.format == "json":
        emit_json([to_jsonable(m) | {"timestamp": m.timestamp.isoformat() if m.timestamp else None} for m in found])
        return 0
    for m in found:
        _print_metrics(m, len(found) > 1)
    return 0


def _print_metrics(m: TaskMetrics, titled: bool) -> None:
    if titled:
        print(f"ID: {m.id}")
    rows = [("METRIC", "VALUE"), *((k, str(v)) for k, v in flatten(m.data))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}    {v}")


async def rm(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for cid in args.ids:
        try:
            if args.exec_id:
                status = await client.tasks.delete_process(cid, args.exec_id)
            else:
                state = await client.tasks.get(cid)
                if state.status not in (Status.STOPPED, Status.CREATED):
                    if not args.force:
                        raise FailedPrecondition(f"task {cid} must be stopped before deletion: "
                                                 f"{state.status.name.lower()}")
                    await destroy_task(client, cid)
                    continue
                status = await client.tasks.delete(cid)
            if status.code:
                say(f"task {cid} exited with non-zero exit code {status.code}")
        except (NotFound, FailedPrecondition) as exc:
            say(str(exc))
            failed = 1
    return failed


async def wait(client: Client, args: argparse.Namespace) -> int:
    status = await client.tasks.wait(args.id, args.exec_id)
    if args.format == "json":
        emit_json({"id": args.exec_id or args.id, "exit_status": status.code,
                   "exited_at": status.exited_at.isoformat() if status.exited_at else None})
    return status.code & 0xFF


def _spec(cid: str, data: bytes) -> dict[str, Any]:
    """A container's OCI spec as stored; a record another client wrote may hold anything."""
    return json_object(data, f"container {cid}: its spec", FailedPrecondition)
