"""dock events: the daemon's events as they happen (every namespace, unless a filter says).

`--format TEMPLATE`: a line per event, Docker's fields (dock/dockerview.py's event_view); the
template as written, as Docker's events take it (no `table`, `\\t` stays two characters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from dock.client import Client
from dock.dockerview import event_view
from dock.events import Envelope
from dock.formatting import add_format_option, is_template, render_one


def register(sub: Any) -> None:
    p = sub.add_parser("events", aliases=["event"], help="print events as they happen (Ctrl-C ends)")
    p.add_argument("filters", nargs="*",
                   help='containerd filters, any of which matches: topic~="/tasks/", namespace==default, '
                        "event.container_id==web")
    add_format_option(p)
    p.set_defaults(handler=events)


def as_json(env: Envelope) -> dict[str, Any]:
    return {"timestamp": env.timestamp.isoformat() if env.timestamp else None, "namespace": env.namespace,
            "topic": env.topic, "type": env.type_url, "event": env.event}


def as_line(env: Envelope) -> str:
    """As ctr prints them: time, namespace, topic, then the event's fields."""
    when = env.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f") if env.timestamp else "-"
    body = json.dumps(env.event, sort_keys=True, separators=(",", ":")) if env.decoded else f"<{env.type_url}>"
    return f"{when} {env.namespace} {env.topic} {body}"


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # one line per event, as it happens, even into a pipe


async def events(client: Client, args: argparse.Namespace) -> int:
    async for env in client.events.subscribe(*args.filters):
        if is_template(args.format):
            line = render_one(args.format, event_view(env))
        else:
            line = json.dumps(as_json(env), sort_keys=True) if args.format == "json" else as_line(env)
        await asyncio.to_thread(_print_line, line)
    return 0
