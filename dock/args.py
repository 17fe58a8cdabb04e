"""Argument helpers shared by dock's commands."""

from __future__ import annotations


def parse_labels(items: list[str]) -> dict[str, str]:
    """`k=v` pairs; a bare `k` (or `k=`) means an empty value, which removes the label."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise SystemExit(f"dock: invalid label {item!r}: want KEY=VALUE")
        out[key] = value
    return out
