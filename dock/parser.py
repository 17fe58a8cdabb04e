"""dock's argument parser: the global options and the command groups' own parsers."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from dock.launch import DEFAULT_ADDRESS

# Command groups, in help order. Only the module of the command being run is imported (a CLI
# that imports every group starts in ~1 s instead of ~0.3 s); `--help` or an unknown command
# imports them all. tests/unit/test_cli_table.py checks COMMANDS against what modules register.
GROUPS = ("system", "namespaces", "leases", "containers", "content", "snapshots", "images", "history", "registry",
          "commit", "diff", "export", "build", "run", "verbs", "pause", "update", "exec", "cp", "top", "tasks",
          "events", "stats", "logs", "network", "volumes", "completion", "attach", "create", "saveload", "importfs",
          "rename")
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
    "create": "create", "save": "saveload", "load": "saveload", "import": "importfs", "rename": "rename",
}


def _add_global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", "-a", default=os.environ.get("DOCKYARD_ADDRESS", DEFAULT_ADDRESS),
                   help="daemon socket (env DOCKYARD_ADDRESS)")
    p.add_argument("--namespace", "-n", default=os.environ.get("DOCKYARD_NAMESPACE", "default"),
                   help="namespace to act in (env DOCKYARD_NAMESPACE, default 'default')")
    p.add_argument("--format", default="table", metavar="FORMAT",
                   help="table, json, or a Go template as Docker's ('{{.ID}}', 'table {{.Names}}\\t{{.Status}}')")
    p.add_argument("--timeout", type=float, default=None, help="per-call timeout in seconds")
    p.add_argument("--version", "-v", action=_PrintVersion, help="print the client's version and exit")


class _PrintVersion(argparse.Action):
    """Docker's `docker -v`: one line, the client's version and build, no daemon asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=str(kwargs.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from dockyard_common.version import REVISION, VERSION

        print(f"Dock version {VERSION}, build {REVISION}")
        parser.exit()


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
