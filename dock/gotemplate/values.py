"""Go values as templates see and print them: Go's type names, truth, fmt's %v, and Docker's `json`.

Python stands in for Go: bool, int, float (float64), str, Mapping (map[string]interface {}),
list/tuple ([]interface {}), None (nil), dataclasses (structs). MISSING is Go's invalid value: a
missing map key, printed `<no value>`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from dock.gotemplate.errors import MAX_DEPTH

NO_VALUE = "<no value>"


class _Missing:
    """Go's invalid reflect.Value: a missing map key, or no value at all (`final` of a first command)."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING: Any = _Missing()

_GO_TYPES: tuple[tuple[Any, str], ...] = (
    (bool, "bool"), (int, "int"), (float, "float64"), (str, "string"), (Mapping, "map[string]interface {}"),
    (list | tuple, "[]interface {}"),
)


def type_name(v: Any) -> str:
    """The Go type a value stands for, as Go's errors name it."""
    if v is MISSING or v is None:
        return "nil"
    return next((name for kind, name in _GO_TYPES if isinstance(v, kind)), type(v).__name__)


def truth(v: Any) -> bool:
    """Go's truth: false, 0, nil, and empty strings, lists and maps are false."""
    if v is MISSING or v is None:
        return False
    if isinstance(v, bool | int | float | str | Mapping | list | tuple):
        return bool(v)
    return True


def go_float(v: float, verb: str = "g", prec: int = -1) -> str:
    """A float64 as Go's fmt prints it: %v (strconv's shortest 'g': an exponent below 1e-4 and from
    1e+06 up), %e, %f, %g with a precision."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if verb == "f":
        return f"{v:.{6 if prec < 0 else prec}f}"
    if verb == "e":
        return _go_exponent(f"{v:.{6 if prec < 0 else prec}e}")
    if prec >= 0:
        return _go_exponent(f"{v:.{max(prec, 1)}g}")
    d = Decimal(repr(v)).normalize()
    if d == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    exp = d.adjusted()
    sign, digits, _ = d.as_tuple()
    text = "".join(map(str, digits))
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return minus + format(abs(d), "f")


def _go_exponent(text: str) -> str:
    """Python writes e+6 / e-07; Go writes at least two exponent digits: e+06, e-07."""
    m = re.search(r"e([+-])(\d+)$", text)
    if not m:
        return text
    return f"{text[:m.start()]}e{m.group(1)}{int(m.group(2)):02d}"


def go_collection(v: Any, each: Callable[[Any], str]) -> str | None:
    """A map as `map[k:v ...]` (keys sorted, methods left out) or a list as `[a b]`, `each` printing
    the keys and elements, as fmt prints them; None for any other value."""
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{each(k)}:{each(v[k])}" for k in sorted_keys(v) if not callable(v[k])) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(each(x) for x in v) + "]"
    return None


def go_print(v: Any, depth: int = 0) -> str:
    """A value as Go's fmt %v prints it: maps as map[k:v] (sorted), lists as [a b], nil as <nil>."""
    if depth > MAX_DEPTH:
        return "..."
    if v is MISSING:
        return NO_VALUE
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return v
    collection = go_collection(v, lambda x: go_print(x, depth + 1))
    if collection is not None:
        return collection
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return "{" + " ".join(go_print(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)) + "}"
    return str(v)


def sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    """A map's keys in Go's print order: sorted (mixed types grouped by type)."""
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=lambda k: (type(k).__name__, str(k)))


class Struct(dict[str, Any]):
    """A Go struct as a template sees it: its fields by their Go names (`.Status`), in declared
    order. `json` marshals it as encoding/json does a struct: in that order, under each field's
    JSON tag (`tags`: Go name -> (JSON name, omitempty)), not as a map's sorted keys."""

    def __init__(self, fields: Mapping[str, Any], tags: Mapping[str, tuple[str, bool]]) -> None:
        super().__init__(fields)
        self.tags = tags

    def marshal(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.items():
            key, omitempty = self.tags.get(name, (name, False))
            if not (omitempty and value in ("", 0, None, False)):
                out[key] = value
        return out


def _jsonable(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply for json")
    if v is MISSING:
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    if isinstance(v, Struct):  # declared order: a plain dict keeps it, and to_json sorts only maps
        return {k: _jsonable(x, depth + 1) for k, x in v.marshal().items()}
    if isinstance(v, Mapping):  # a Go map: keys sorted, as encoding/json writes them
        return {str(k): _jsonable(v[k], depth + 1) for k in sorted_keys(v) if not callable(v[k])}
    if isinstance(v, list | tuple):
        return [_jsonable(x, depth + 1) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def to_json(v: Any) -> str:
    """Docker's `json`: compact, no HTML escaping; a map's keys sorted (Docker's contexts marshal
    maps), a `Struct` in its declared order under its JSON tags."""
    text = json.dumps(_jsonable(v), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
