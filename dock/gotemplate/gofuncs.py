"""Go's template functions (text/template's builtins): and or not len index slice print printf
println eq ne lt le gt ge html js urlquery call. Arguments arrive as Python values (values.py);
a misuse raises ValueError, which the evaluator reports as `error calling NAME: ...`."""

from __future__ import annotations

import html
import operator
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from dock.gotemplate.printf import go_sprint, go_sprintf, go_sprintln
from dock.gotemplate.values import MISSING, truth, type_name


def _length(v: Any) -> int:
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise ValueError(f"len of type {type_name(v)}")


def int_arg(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ValueError(f"cannot index slice/array with type {type_name(v)}" if what == "index"
                         else f"{what} must be an integer, not {type_name(v)}")
    return v


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is MISSING or item is None:
            raise ValueError("index of untyped nil")
        if isinstance(item, Mapping):
            if key in item:
                item = item[key]
            else:  # Go: the zero value of the element type; a map of strings gives ""
                item = "" if all(isinstance(x, str) for x in item.values()) and item else MISSING
        elif isinstance(item, list | tuple | str):
            i = int_arg(key, "index")
            if not 0 <= i < len(item):
                raise ValueError(f"index out of range: {i}")
            item = ord(item[i]) if isinstance(item, str) else item[i]
        else:
            raise ValueError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise ValueError(f"can't slice item of type {type_name(item)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(item, str)):
        raise ValueError(f"too many slice indexes: {len(idx)}")
    n = len(item)
    bounds = [int_arg(i, "index") for i in idx]
    lo = bounds[0] if bounds else 0
    hi = bounds[1] if len(bounds) > 1 else n
    if len(bounds) == 3 and not hi <= bounds[2] <= n:
        raise ValueError(f"index out of range: {bounds[2]}")
    if not 0 <= lo <= n or not lo <= hi <= n:
        raise ValueError(f"invalid slice index: {lo} > {hi}" if lo > hi else f"index out of range: {max(lo, hi)}")
    out = item[lo:hi]
    return list(out) if isinstance(out, tuple) else out


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b) or (isinstance(a, str) and isinstance(b, str))


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("missing argument for comparison")
    a = None if a is MISSING else a
    for b in others:
        b = None if b is MISSING else b
        if a is None or b is None:
            if a is b:
                return True
            continue
        if isinstance(a, Mapping | list | tuple) or isinstance(b, Mapping | list | tuple):
            raise ValueError(f"non-comparable type {type_name(a if isinstance(a, Mapping | list | tuple) else b)}")
        if not _comparable(a, b):
            raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
        if a == b:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    for v in (a, b):
        if v is None or v is MISSING or isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"invalid type for comparison: {type_name(v)}")
    if not _comparable(a, b):
        raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
    return a, b


def _compare(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    """lt, le, gt, ge: basic values of one kind (numbers with numbers), as Go orders them."""

    def compare(a: Any, b: Any) -> bool:
        x, y = _ordered(a, b)
        return bool(op(x, y))
    return compare


def _format_string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"wrong type for value; expected string; got {type_name(v)}")
    return v


def _js(*args: Any) -> str:
    text = go_sprint(list(args))
    table = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
             "=": "\\u003D", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(table.get(c, c if c.isprintable() else f"\\u{ord(c):04X}") for c in text)


def _call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise ValueError(f"non-function of type {type_name(fn)}")
    return fn(*args)


class _Lazy:
    """Marks `and`/`or`: their arguments are evaluated one by one, as Go does."""


AND, OR = _Lazy(), _Lazy()


GO_FUNCS: dict[str, Any] = {
    "and": AND, "or": OR, "not": lambda v: not truth(v), "len": _length, "index": _index, "slice": _slice,
    "print": lambda *a: go_sprint(list(a)), "println": lambda *a: go_sprintln(list(a)),
    "printf": lambda fmt, *a: go_sprintf(_format_string(fmt), list(a)),
    "eq": _eq, "ne": _ne, "lt": _compare(operator.lt), "le": _compare(operator.le), "gt": _compare(operator.gt),
    "ge": _compare(operator.ge),
    "html": lambda *a: html.escape(go_sprint(list(a))).replace("&#x27;", "&#39;"),
    "urlquery": lambda *a: urllib.parse.quote_plus(go_sprint(list(a))), "js": _js, "call": _call,
}
