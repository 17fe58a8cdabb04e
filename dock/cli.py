"""dock: the command-line client. Each command group lives in dock/commands/<group>.py."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from dock.client import DEFAULT_ADDRESS, Client
from dock.commands import (
    containers,
    content,
    events,
    images,
    leases,
    namespaces,
    registry,
    run,
    snapshots,
    stats,
    system,
    tasks,
)
from supervisor.errors import DockyardError

GROUPS = (system, namespaces, leases, containers, content, snapshots, images, registry, run, tasks, events, stats)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dock", description="Client for the Dockyard container supervisor.")
    p.add_argument("--address", "-a", default=os.environ.get("DOCKYARD_ADDRESS", DEFAULT_ADDRESS),
                   help="daemon socket (env DOCKYARD_ADDRESS)")
    p.add_argument("--namespace", "-n", default=os.environ.get("DOCKYARD_NAMESPACE", "default"),
                   help="namespace to act in (env DOCKYARD_NAMESPACE, default 'default')")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--timeout", type=float, default=None, help="per-call timeout in seconds")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


async def _run(args: argparse.Namespace) -> int:
    async with Client(args.address, args.namespace, args.timeout) as client:
        result = await args.handler(client, args)
        return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except DockyardError as exc:
        print(f"dock: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
