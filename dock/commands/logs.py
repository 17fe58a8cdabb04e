"""dock logs: what a container printed (its log, captured by its shim), like `docker logs`.

stdout entries go to our stdout, stderr ones to our stderr; `-t` prefixes each line with its
time (RFC 3339, nanoseconds, UTC). `--since`/`--until` take an RFC 3339 time, a Unix time
(seconds, fractions allowed) or a duration back from now (`10m`, `1h30m`, `2.5s`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from datetime import datetime
from typing import Any, BinaryIO

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import resolve_id
from dockyard_common.containerlog import parse_timestamp, timestamp
from dockyard_common.errors import InvalidArgument

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+")
INT32_MAX = 2**31 - 1
MAX_TIME_NS = 253402300799 * 10**9  # 9999-12-31T23:59:59Z, the last time a Timestamp holds
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A --since/--until value → ns since the epoch (before 1970 counts as 1970; after 9999, refused)."""
    when = _parse_time(text.strip(), now_ns)
    if when > MAX_TIME_NS:
        raise InvalidArgument(f"invalid time {text!r}: after the year 9999")
    return max(when, 0)


def _parse_time(text: str, now_ns: int | None) -> int:
    if _DURATION.fullmatch(text):
        back = sum(float(n) * _UNIT_NS[u] for n, u in _PART.findall(text))
        return (now_ns if now_ns is not None else time.time_ns()) - int(back)
    if re.fullmatch(r"\d+(?:\.\d{1,9})?", text):
        sec, _, frac = text.partition(".")
        return int(sec) * 10**9 + int(frac.ljust(9, "0") or 0)
    with contextlib.suppress(ValueError):
        return parse_timestamp(text.encode())  # RFC 3339 with a zone: nanoseconds kept
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"invalid time {text!r}: want RFC 3339 (2026-01-02T15:04:05Z), "
                              "a Unix time, or a duration such as 10m") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is local, as docker reads it
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="show a container's log (its stdout and stderr)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the container exits")
    p.add_argument("--tail", "-n", default="all", metavar="N", help="only the last N lines (default: all)")
    p.add_argument("--since", default="", metavar="TIME", help="only lines since TIME (RFC 3339, Unix time or 10m)")
    p.add_argument("--until", default="", metavar="TIME", help="only lines before TIME")
    p.add_argument("--timestamps", "-t", action="store_true", help="show each line's time")
    containers_arg(p, "id", metavar="ID", help="container name, id or unique id prefix")
    p.set_defaults(handler=logs)


def _tail(text: str) -> int | None:
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidArgument(f"invalid --tail {text!r}: want a number of lines or all")
    return None if n > INT32_MAX else n  # more lines than a log can hold: all of them


async def logs(client: Client, args: argparse.Namespace) -> int:
    tail = _tail(args.tail)
    since = parse_time(args.since) if args.since else 0
    until = parse_time(args.until) if args.until else 0
    out: dict[str, BinaryIO] = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
    line_start = {"stdout": True, "stderr": True}
    cid = await resolve_id(client, args.id)
    async for e in client.logs.read(cid, follow=args.follow, tail=tail, since_ns=since, until_ns=until,
                                    timestamps=args.timestamps):
        f = out.get(e.stream, sys.stdout.buffer)
        if args.timestamps and line_start.get(e.stream, True):
            f.write(timestamp(e.time_ns) + b" ")
        line_start[e.stream] = not e.partial
        f.write(e.data)
        if args.follow:
            f.flush()
    sys.stdout.buffer.flush()
    sys.stderr.buffer.flush()
    return 0
