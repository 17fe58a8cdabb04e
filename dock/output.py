"""Printing results: aligned tables for people, JSON for programs (`--format json`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO, TypeVar

from dockyard_common.errors import DockyardError
from dockyard_common.goquote import go_escape
from dockyard_common.imagespec import Descriptor

Column = tuple[str, Callable[[Any], Any]]  # (header, how to get the cell from a row)


def say(message: str, out: TextIO | None = None) -> None:
    """dock's one error line (to stderr unless `out`). The message may quote anything (a
    registry's words, an image's config, a container's name, a file's name): what is not
    printable is escaped as Go's %q escapes it, so an ESC sequence or a newline in it reaches the
    terminal as text."""
    print(f"dock: {go_escape(message)}", file=out or sys.stderr)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def confirm(warning: str) -> bool:
    """Docker's prompt before a prune removes things: the warning and a [y/N] question on
    stderr, the answer a line of stdin (no line, or anything but y/yes, is no)."""
    print(f"WARNING! {warning} Are you sure you want to continue? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Descriptor):
            # The daemon's API carries no platform or URLs in a descriptor: print them only when set.
            if obj.platform is None:
                del out["platform"]
            if not obj.urls:
                del out["urls"]
        return out
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    return obj


def emit_json(obj: Any, out: TextIO = sys.stdout) -> None:
    json.dump(to_jsonable(obj), out, indent=2, sort_keys=True)
    out.write("\n")


def emit_table(rows: Sequence[Any], columns: Sequence[Column], out: TextIO = sys.stdout) -> None:
    cells = [[h for h, _ in columns]] + [[str(get(r)) for _, get in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        line = "    ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")


def emit(fmt: str, rows: Sequence[Any], columns: Sequence[Column]) -> None:
    if fmt == "json":
        emit_json(list(rows))
    else:
        emit_table(rows, columns)


T = TypeVar("T")


async def for_each(names: Sequence[str], act: Callable[[str], Awaitable[T]], *,
                   at_once: int = 16) -> tuple[list[T], int]:
    """`act` on every name concurrently (`at_once` at a time), as `docker rm a b c` does: the
    results in the order given, each failure said on stderr, and 1 as the exit status if any."""
    limit = asyncio.Semaphore(at_once)

    async def one(name: str) -> T | DockyardError:
        async with limit:
            try:
                return await act(name)
            except DockyardError as exc:
                return exc

    done: list[T] = []
    failed = 0
    for result in await asyncio.gather(*(one(n) for n in names)):
        if isinstance(result, DockyardError):
            say(str(result))
            failed = 1
        else:
            done.append(result)
    return done, failed
