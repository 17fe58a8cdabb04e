"""dock stats: live cgroup stats of containers, like `docker stats`.

On a terminal: a table refreshed in place (CPU %, MEM USAGE / LIMIT, MEM %, NET I/O, PIDS, BLOCK I/O;
NET I/O is "--" for a container without a network of its own: only lo, or the host's).
Otherwise, or with `--format json`: one JSON object per sample, a line each, as they come.
`--no-stream` prints one table (or one JSON line per container) and exits; with `--format
TEMPLATE`, Docker's fields (dock/dockerview.py's stats_row), `table TEMPLATE` with Docker's headers;
streaming, the template's rows once per interval (the screen cleared first on a terminal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dock.args import containers_arg, positive_float
from dock.client import Client
from dock.dockerview import stats_row
from dock.formatting import JSON, STATS_HEADERS, TABLE, add_format_option, emit_rows, is_template, render_rows
from dock.lookup import name_of, resolve_id
from dock.output import emit_table, human_size, to_jsonable
from dock.stats import UNLIMITED, StatsSample, cpu_percent
from dock.tasks import Status

REDRAW_EVERY = 0.25  # seconds between redraws of the live table, however many samples come
CLEAR_SCREEN = "\x1b[2J\x1b[H"  # before each block of a streaming template on a terminal, as Docker


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="live CPU, memory, network, pids and block I/O of running containers")
    p.add_argument("--no-stream", action="store_true", help="print one snapshot and exit")
    add_format_option(p)  # table: a terminal's default; json: one object per line, the default into a pipe
    p.add_argument("--no-trunc", action="store_true", help="full container ids in a template's .ID")
    p.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                   help="sampling interval (default 1)")
    p.add_argument("--filter", action="append", default=[], metavar="FILTER",
                   help='also stream containers a containerd filter matches, e.g. labels."app"==web')
    containers_arg(p, "ids", nargs="*", metavar="ID",
                   help="containers to show: names, ids or id prefixes (default: all)")
    p.set_defaults(handler=stats)


@dataclass
class Row:
    last: StatsSample
    prev: StatsSample | None = None

    def add(self, s: StatsSample) -> None:
        if s.cpu is not None or self.last.cpu is None:
            self.prev, self.last = self.last, s


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


HOST_MEMORY = _host_memory()


def memory_limit(s: StatsSample) -> int:
    """The limit as docker shows it: the host's memory when the container has none."""
    if s.memory is None:
        return 0
    limit = s.memory.limit
    if (limit == 0 or limit >= UNLIMITED or limit > HOST_MEMORY > 0) and HOST_MEMORY:
        return HOST_MEMORY
    return limit


def figures(row: Row) -> dict[str, Any]:
    s = row.last
    used = s.memory.used if s.memory else 0
    limit = memory_limit(s)
    cpu = cpu_percent(row.prev, s)
    net = s.network_io
    return {
        "id": s.id, "cpu_percent": cpu, "memory_usage": used, "memory_limit": limit,
        "memory_percent": (used / limit * 100) if limit else None,
        "net_rx": net[0] if net else None, "net_tx": net[1] if net else None,
        "pids": s.pids.current if s.pids else 0,
        "block_read": s.blkio.read_bytes if s.blkio else 0, "block_write": s.blkio.write_bytes if s.blkio else 0,
    }


def _size(n: int) -> str:
    return human_size(n).replace(" ", "")


def cells(row: Row) -> list[str]:
    f = figures(row)
    cpu = "--" if f["cpu_percent"] is None else f"{f['cpu_percent']:.2f}%"
    mem = "--" if f["memory_percent"] is None else f"{f['memory_percent']:.2f}%"
    net = "--" if f["net_rx"] is None else f"{_size(f['net_rx'])} / {_size(f['net_tx'])}"
    return [f["id"], cpu, f"{_size(f['memory_usage'])} / {_size(f['memory_limit'])}", mem, net, str(f["pids"]),
            f"{_size(f['block_read'])} / {_size(f['block_write'])}"]


HEADERS = ["CONTAINER", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "PIDS", "BLOCK I/O"]
LEFT = ("CONTAINER", "MEM USAGE / LIMIT", "NET I/O", "BLOCK I/O")


def sample_json(s: StatsSample, row: Row | None) -> dict[str, Any]:
    out = to_jsonable(s)
    out["timestamp"] = s.timestamp.isoformat()
    if row is not None:
        out.update({k: v for k, v in figures(row).items() if k in ("cpu_percent", "memory_percent")})
    return out


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # a line per sample, as it comes, even into a pipe


async def _expected(client: Client, ids: list[str], filters: list[str]) -> set[str]:
    """The containers a --no-stream snapshot waits for: named ones, else those with a live task."""
    if ids and not filters:
        return set(ids)
    live = {t.id for t in await client.tasks.list() if t.status in (Status.RUNNING, Status.PAUSED, Status.CREATED)}
    if not ids and not filters:
        return live
    matched = {c.id for c in await client.containers.list(filters)} if filters else set()
    return set(ids) | (matched & live)


def render(rows: Iterable[Row]) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for h in HEADERS:
        table.add_column(h, justify="right" if h not in LEFT else "left",
                         no_wrap=True)
    for row in sorted(rows, key=lambda r: r.last.id):
        table.add_row(*cells(row))
    return table


async def stats(client: Client, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    fmt = args.format
    if fmt == TABLE and not getattr(args, "format_after_verb", False) and not (tty or args.no_stream):
        fmt = JSON  # the default into a pipe; `dock stats --format table` is a table there too
    typed = list(args.ids)
    args.ids = list(await asyncio.gather(*(resolve_id(client, ref) for ref in args.ids)))  # names, prefixes
    args.typed = dict(zip(args.ids, typed, strict=True))  # Docker's .Container: the name or id as given
    stream = client.stats.stream(*args.ids, filters=args.filter, interval=args.interval)
    if args.no_stream:
        return await _snapshot(client, args, stream, fmt)
    if fmt == "json":
        rows: dict[str, Row] = {}
        async for s in stream:
            row = _track(rows, s)
            await asyncio.to_thread(_write, json.dumps(sample_json(s, row), sort_keys=True) + "\n")
        return 0
    if is_template(fmt):
        return await _live_template(client, args, stream, fmt, tty)
    return await _live(stream, tty)


async def _live_template(client: Client, args: argparse.Namespace, stream: Any, fmt: str, tty: bool) -> int:
    """As Docker's streaming `stats --format`: the rows through the template once per interval,
    the screen cleared before each block on a terminal (into a pipe, block after block)."""
    rows: dict[str, Row] = {}
    names: dict[str, str] = {}
    drawn = 0.0
    async for s in stream:
        _track(rows, s)
        now = time.monotonic()
        if now - drawn < args.interval:
            continue
        drawn = now
        if rows.keys() - names.keys():  # new containers: their names (renames show from here on)
            names = {c.id: name_of(c) for c in await client.containers.list()}
        block = render_rows(fmt, [stats_row(cid, names.get(cid, ""), args.typed.get(cid, cid), figures(rows[cid]),
                                            no_trunc=args.no_trunc) for cid in sorted(rows)], STATS_HEADERS)
        await asyncio.to_thread(_write, (CLEAR_SCREEN if tty else "") + block)
    return 0


def _track(rows: dict[str, Row], s: StatsSample) -> Row:
    row = rows.get(s.id)
    if row is None:
        row = rows[s.id] = Row(s)
    else:
        row.add(s)
    if s.end:
        del rows[s.id]
    return row


async def _live(stream: Any, tty: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    rows: dict[str, Row] = {}
    console = Console(force_terminal=tty)
    with Live(render([]), console=console, auto_refresh=False, transient=False) as live:
        drawn = 0.0
        async for s in stream:
            _track(rows, s)
            now = time.monotonic()
            if now - drawn >= REDRAW_EVERY:
                live.update(render(list(rows.values())), refresh=True)
                drawn = now
    return 0


async def _snapshot(client: Client, args: argparse.Namespace, stream: Any, fmt: str) -> int:
    """Two samples of every expected container (CPU % needs two), or what came before a deadline."""
    want = await _expected(client, list(args.ids), list(args.filter))
    rows: dict[str, Row] = {}
    seen: dict[str, int] = {}
    done: set[str] = set()
    if want:
        try:
            async with asyncio.timeout(max(3 * args.interval, 2.0)):
                async for s in stream:
                    row = rows.get(s.id)
                    if row is None:
                        rows[s.id] = Row(s)
                    else:
                        row.add(s)
                    seen[s.id] = seen.get(s.id, 0) + 1
                    if s.end or seen[s.id] >= 2:
                        done.add(s.id)
                    if want <= done:
                        break
        except TimeoutError:
            pass
        finally:
            await stream.aclose()
    if fmt == "json":
        for cid in sorted(rows):
            sys.stdout.write(json.dumps(sample_json(rows[cid].last, rows[cid]), sort_keys=True) + "\n")
        return 0
    if is_template(fmt):
        names = {c.id: name_of(c) for c in await client.containers.list()}
        emit_rows(fmt, [stats_row(cid, names.get(cid, ""), args.typed.get(cid, cid),
                                  figures(rows[cid]) if cid in rows else None, no_trunc=args.no_trunc)
                        for cid in sorted(rows.keys() | want)], STATS_HEADERS)
        return 0
    table = [cells(rows[cid]) for cid in sorted(rows)]
    table += [[cid, "--", "-- / --", "--", "--", "--", "-- / --"] for cid in sorted(want - rows.keys())]
    emit_table(table, [(h, operator.itemgetter(i)) for i, h in enumerate(HEADERS)])
    return 0

