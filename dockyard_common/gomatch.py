"""Go's `path/filepath.Match` on `/`-separated names: how COPY and ADD expand wildcards, and
the syntax check `.dockerignore` patterns get.

    match("*.txt", "a.txt")   -> True      ("*" never crosses a "/")
    match("[^a]?", "bc")      -> True
    has_magic("a\\*b")        -> True      (Docker checks for `*?[\\`)

`*` any run of non-`/` characters, `?` one non-`/` character, `[abc]`, `[a-z]` or `[^a]` a
class of one character (`!` does not negate in Go, and a class may match `/`), `\\x` the
character x. Dot files are matched like any other name. A malformed pattern (an unclosed
class, a trailing `\\`, an empty or reversed range, an unescaped `-` or `]` in a class) is
InvalidArgument whatever the name: Go's ErrBadPattern is an error for the builder, and older
Go releases only notice it when the match gets that far, which we do not copy.
"""

from __future__ import annotations

import functools
import re

from dockyard_common import linearre
from dockyard_common.errors import InvalidArgument

_MAGIC = "*?[\\"


def has_magic(pattern: str) -> bool:
    """Whether Docker treats the path as a wildcard (it contains one of `*?[\\`)."""
    return any(c in pattern for c in _MAGIC)


def match(pattern: str, name: str) -> bool:
    return _compile(pattern).fullmatch(name) is not None


def check(pattern: str) -> None:
    """InvalidArgument when `pattern` is malformed (Go's ErrBadPattern)."""
    _compile(pattern)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> linearre.Pattern:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i >= n:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return linearre.compile("".join(out), dotall=True)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Parse a class starting after `[`; returns (index after `]`, regex)."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    first = True
    while True:
        if i >= n:
            raise InvalidArgument(f"syntax error in pattern {pattern!r}")
        if pattern[i] == "]" and not first:
            i += 1
            break
        first = False
        lo, i = _class_char(pattern, i)
        hi = lo
        if i < n and pattern[i] == "-" and i + 1 < n and pattern[i + 1] != "]":
            hi, i = _class_char(pattern, i + 1)
            if hi < lo:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
        ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    body = "".join(ranges)
    return i, f"[^{body}]" if negate else f"[{body}]"


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    ch = pattern[i]
    if ch == "\\":
        i += 1
        if i >= n:
            raise InvalidArgument(f"syntax error in pattern {pattern!r}")
        ch = pattern[i]
    elif ch in "-]":  # must be escaped inside a class (Go's getEsc)
        raise InvalidArgument(f"syntax error in pattern {pattern!r}")
    return ch, i + 1
