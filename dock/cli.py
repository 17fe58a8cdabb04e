"""dock: the command-line client. Each command group lives in dock/commands/<group>.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
import traceback
from typing import NoReturn

from dock.client import DEFAULT_ADDRESS, Client
from dockyard_common.errors import DockyardError

# Command groups, in help order. Only the module of the command being run is imported (a CLI
# that imports every group starts in ~1 s instead of ~0.3 s); `--help` or an unknown command
# imports them all. tests/unit/test_cli_table.py checks COMMANDS against what modules register.
GROUPS = ("system", "namespaces", "leases", "containers", "content", "snapshots", "images", "history", "registry",
          "commit", "diff", "export", "build", "run", "verbs", "pause", "update", "exec", "cp", "top", "tasks",
          "events", "stats", "logs", "network", "volumes", "completion", "attach")
COMMANDS: dict[str, str] = {
    "version": "system", "info": "system", "plugins": "system", "system": "system",
    "namespaces": "namespaces", "namespace": "namespaces", "ns": "namespaces",
    "leases": "leases", "lease": "leases", "gc": "leases",
    "containers": "containers", "container": "containers", "c": "containers",
    "content": "content",
    "snapshots": "snapshots", "snapshot": "snapshots", "snap": "snapshots",
    "images": "images", "image": "images", "i": "images", "rmi": "images",
    "pull": "registry", "push": "registry", "tag": "registry", "login": "registry", "logout": "registry",
    "commit": "commit",
    "build": "build", "builder": "build",
    "run": "run",
    "ps": "verbs", "inspect": "verbs", "stop": "verbs", "start": "verbs", "restart": "verbs", "kill": "verbs",
    "rm": "verbs", "wait": "verbs",
    "exec": "exec", "cp": "cp", "top": "top",
    "tasks": "tasks", "task": "tasks", "t": "tasks",
    "events": "events", "event": "events",
    "stats": "stats",
    "logs": "logs",
    "attach": "attach",
    "network": "network", "networks": "network", "port": "network",
    "volume": "volumes", "volumes": "volumes",
    "completion": "completion",
    "pause": "pause", "unpause": "pause", "update": "update", "diff": "diff", "export": "export",
    "history": "history",
}


def _add_global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", "-a", default=os.environ.get("DOCKYARD_ADDRESS", DEFAULT_ADDRESS),
                   help="daemon socket (env DOCKYARD_ADDRESS)")
    p.add_argument("--namespace", "-n", default=os.environ.get("DOCKYARD_NAMESPACE", "default"),
                   help="namespace to act in (env DOCKYARD_NAMESPACE, default 'default')")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--timeout", type=float, default=None, help="per-call timeout in seconds")


class _QuietParser(argparse.ArgumentParser):
    """A parser that raises instead of printing usage and exiting: a look-ahead, never the judge."""

    def error(self, message: str) -> NoReturn:
        raise argparse.ArgumentError(None, message)


def _groups_for(argv: list[str] | None) -> list[str]:
    """The group modules the parser needs for `argv`: the command's own, or all of them. Only the
    words before the command are read as global options (`ps -a` is ps's -a, not --address)."""
    pre = _QuietParser(add_help=False)
    _add_global_options(pre)
    words = sys.argv[1:] if argv is None else argv
    for i, word in enumerate(words):
        if word not in COMMANDS:
            continue
        try:
            _, rest = pre.parse_known_args(words[:i])
        except argparse.ArgumentError:  # a bad global option: the full parser says what is wrong
            return list(GROUPS)
        if not rest:
            return [COMMANDS[word]]
    return list(GROUPS)


def build_parser(argv: list[str] | None = None, groups: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dock", description="Client for the Dockyard container supervisor.")
    _add_global_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in groups if groups is not None else _groups_for(argv):
        importlib.import_module(f"dock.commands.{name}").register(sub)
    return p


async def _run(args: argparse.Namespace) -> int:
    async with Client(args.address, args.namespace, args.timeout) as client:
        result = await args.handler(client, args)
        return int(result or 0)


# Set (to anything but "" or "0") to see the traceback of an unexpected error.
DEBUG_ENV = "DOCK_DEBUG"


def main(argv: list[str] | None = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks what TAB could mean: dock/completion.py
        from dock.completion import complete

        complete(build_parser(groups=list(GROUPS)))  # exits
    args = build_parser(argv).parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except DockyardError as exc:
        print(f"dock: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dock ... | head`: the reader is gone, nothing left to say
        _quiet_stdout()
        return 141
    except OSError as exc:  # a local file or device of the command's (not the daemon's answer): as it is
        print(f"dock: {_describe(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an answer we could not read: one line, never a traceback
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"dock: unexpected error: {_describe(exc)} (set {DEBUG_ENV}=1 for details)", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    """What went wrong, in words: the message without Python's exception name."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(str(exc).split())
    return text[:300] if text else "no details"


def _quiet_stdout() -> None:
    # Python would complain once more when it flushes stdout at exit.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
