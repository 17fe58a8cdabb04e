"""Go regexps for the filter language's `~=` operator, matched by RE2 (dockyard_common.linearre).

Go's regexp package is RE2's syntax and semantics (leftmost-first, `$` the end of text, ASCII
`\\d \\s \\w`, `(?U)`, Unicode classes and scripts), so RE2 matches a containerd filter exactly as
containerd does, in linear time. Until session 13 this module translated Go's syntax into
Python's `re` (~450 lines); Python's backtracking let one filter such as `(a+)+b` freeze the
daemon. What Go refuses and RE2 accepts is refused here first: `\\C` (any byte) and a capture
group name used twice. Error texts are RE2's, after Go's "error parsing regexp: " (they are only
logged: a filter whose regexp does not compile matches nothing, as in containerd).
"""

from __future__ import annotations

import functools

from dockyard_common import linearre


class GoRegexpError(ValueError):
    """A regexp Go would refuse."""


@functools.lru_cache(maxsize=256)
def compile_go_regexp(pattern: str) -> linearre.Pattern:
    """Compile a Go regexp (cached: filters recur across requests)."""
    _refuse_what_go_refuses(pattern)
    try:
        return linearre.compile(pattern)
    except linearre.error as e:
        detail = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise GoRegexpError(f"error parsing regexp: {detail}") from None


def _refuse_what_go_refuses(pattern: str) -> None:
    names: set[str] = set()
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if pattern[i + 1:i + 2] == "C":
                raise GoRegexpError("error parsing regexp: invalid escape sequence: `\\C`")
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            # a `]` first in the class (after an optional ^) is a member, not its end
            i += 2 if pattern[i + 1:i + 2] == "]" else 3 if pattern[i + 1:i + 3] == "^]" else 1
            continue
        elif pattern.startswith(("(?P<", "(?<"), i) and not pattern.startswith(("(?<=", "(?<!"), i):
            start = pattern.index("<", i) + 1
            end = pattern.find(">", start)
            name = pattern[start:end] if end != -1 else ""
            if name and name in names:
                raise GoRegexpError(f"error parsing regexp: duplicate capture group name: `{name}`")
            names.add(name)
        i += 1
