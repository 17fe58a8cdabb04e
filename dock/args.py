"""Argument helpers shared by dock's commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from dockyard_common.errors import InvalidArgument

INT64_MAX = 2**63 - 1


def parse_labels(items: list[str]) -> dict[str, str]:
    """`k=v` pairs; a bare `k` (or `k=`) means an empty value, which removes the label."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}: want KEY=VALUE")
        out[key] = value
    return out


def containers_arg(p: argparse.ArgumentParser, dest: str, **kwargs: Any) -> argparse.Action:
    """A positional naming containers: completes from the daemon's (dock/completion.py)."""
    from dock.completion import containers

    action = p.add_argument(dest, **kwargs)
    action.completer = containers  # type: ignore[attr-defined]  # read by argcomplete
    return action


def images_arg(p: argparse.ArgumentParser, dest: str, **kwargs: Any) -> argparse.Action:
    """A positional naming images: completes from the daemon's."""
    from dock.completion import images

    action = p.add_argument(dest, **kwargs)
    action.completer = images  # type: ignore[attr-defined]
    return action


def int_in(low: int, high: int = INT64_MAX) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (a wire field's range, so nothing past it
    reaches a protobuf or a cgroup file)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low} to {high})")
        return value
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (not nan, not inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def add_prune_options(p: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """-f and Docker's label filters of the prune commands (dock/commands/prune.py)."""
    p.add_argument("--force", "-f", action="store_true", help="do not ask for confirmation")
    if labels:
        p.add_argument("--filter", action="append", default=[], metavar="label=KEY[=VALUE]",
                       help="only those with this label (label!=KEY[=VALUE]: without it); repeat: all must hold")
