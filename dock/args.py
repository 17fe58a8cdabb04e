"""Argument helpers shared by dock's commands."""

from __future__ import annotations

import argparse
from typing import Any


def parse_labels(items: list[str]) -> dict[str, str]:
    """`k=v` pairs; a bare `k` (or `k=`) means an empty value, which removes the label."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise SystemExit(f"dock: invalid label {item!r}: want KEY=VALUE")
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
