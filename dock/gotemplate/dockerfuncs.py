"""Docker's template functions (cli/templates/templates.go): json join split lower upper title
truncate pad; and its HeaderFunctions, which leave a table's header cells as they are."""

from __future__ import annotations

from typing import Any

from dock.gotemplate.errors import MAX_OUTPUT
from dock.gotemplate.gofuncs import int_arg
from dock.gotemplate.values import MISSING, go_print, to_json, type_name


def _string(v: Any, fn: str) -> str:
    if isinstance(v, str):
        return v
    if v is MISSING or v is None:
        raise ValueError(f"{fn}: want a string, got nil")
    return go_print(v)


def _join(items: Any, sep: Any) -> str:
    if not isinstance(items, list | tuple):
        raise ValueError(f"join: want a list, got {type_name(items)}")
    return _string(sep, "join").join(_string(x, "join") for x in items)


def _split(text: Any, sep: Any) -> list[str]:
    text, sep = _string(text, "split"), _string(sep, "split")
    return list(text) if sep == "" else text.split(sep)


def _title(text: Any) -> str:
    """Go's strings.Title: the first letter of every word upper case, the rest as it was."""
    out: list[str] = []
    prev = " "
    for ch in _string(text, "title"):
        out.append(ch.upper() if not (prev.isalnum() or prev == "_" or prev == "'") else ch)
        prev = ch
    return "".join(out)


def _truncate(text: Any, length: Any) -> str:
    text = _string(text, "truncate")
    n = int_arg(length, "truncate length")
    return text if len(text) < n else text[:max(n, 0)]


def _pad_func(text: Any, prefix: Any, suffix: Any) -> str:
    text = _string(text, "pad")
    before, after = int_arg(prefix, "pad"), int_arg(suffix, "pad")
    if before + after > MAX_OUTPUT:
        raise ValueError("pad: too much padding")
    return "" if text == "" else " " * max(before, 0) + text + " " * max(after, 0)



DOCKER_FUNCS: dict[str, Any] = {
    "json": to_json, "join": _join, "split": _split, "lower": lambda s: _string(s, "lower").lower(),
    "upper": lambda s: _string(s, "upper").upper(), "title": _title, "truncate": _truncate, "pad": _pad_func,
}

# Docker's HeaderFunctions: rendering a table's header row, its functions leave the header as it is.
HEADER_FUNCS: dict[str, Any] = {
    "json": lambda v: v, "split": lambda v, _s: v, "join": lambda v, _s: v, "title": lambda v: v,
    "lower": lambda v: v, "upper": lambda v: v, "truncate": lambda v, _n: v, "pad": lambda v, _a, _b: v,
}
