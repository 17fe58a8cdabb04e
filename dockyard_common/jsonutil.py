"""Decoding JSON that came from outside (a client, a registry, an image, a file) into values
every later step can use, or into errors users can read. One function, one policy: every decode
of untrusted JSON goes through `json_value` so that none is missed.

Python's `json.loads` reads some documents Go's encoding/json (containerd's, Docker's) does not,
and makes of others values that fail later, far from the input. The policy follows Go:

- `NaN`, `Infinity`, `-Infinity` are not JSON: refused (Python reads them; Go refuses them).
- A number a 64-bit float cannot hold (`1e999`, an integer of 400 digits) is refused. Python
  made `inf` of the one and raised a ValueError of its own ("Exceeds the limit (4300 digits)")
  for an integer past 4 300 digits, which no caller caught.
- A `\\u` escape that is half of a surrogate pair decodes to U+FFFD, as Go decodes it. Python
  kept the lone surrogate, which every later UTF-8 encode of the text then failed on (an image
  whose Env held `\\udcff` could not be run: "codec can't encode ...: internal").
- Text that is not UTF-8 is refused (so are a byte order mark and UTF-16/32 text, which
  Python's `json.loads` of bytes accepted and Go refuses). Go replaces invalid bytes inside a
  string with U+FFFD; refusing them is the stricter choice this project made first.
- Nesting deeper than MAX_DEPTH is refused. Go allows 10 000 levels; Python's parser raised
  RecursionError (not a ValueError, its text Python's) near 1 000, and every recursive reader of
  the value after it (`json.dumps`, a template) would stop about there too.

    config = json_object(blob, f"image config {digest}", InvalidArgument)
    items = json_value(label, "label x", InvalidArgument)   # any JSON value
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 256  # levels of arrays and objects; no document of ours comes near it
_FLOAT_DIGITS = 309  # 1.8e308, the largest float64, has 309 digits before the point
_DIGITS_TO_DIGIT = bytes(ord("0") if 0x30 <= i <= 0x39 else ord(" ") for i in range(256))
_LONG_RUN = b"0" * _FLOAT_DIGITS
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"
SHOWN = 24  # characters of a refused number kept in the message


class JsonError(ValueError):
    """`data` is not the JSON expected; the message names what it was and is fit for users."""


class _Refused(Exception):
    """Raised inside the parser's hooks: what is wrong, in words (caught by json_value)."""


def utf8_encodable(text: str) -> bool:
    """Whether `text` is valid Unicode, i.e. UTF-8 can encode it: no lone surrogate (what JSON's
    `\\udcff` escapes and undecodable argv bytes leave in a str)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_value(data: bytes | str, what: str, error: type[Exception] = JsonError) -> Any:
    """`data` decoded under the module's policy; `error(message)` naming `what` when it cannot be.

    `error` lets each caller raise its own domain's kind (InvalidArgument in the daemon, ...).
    """
    try:
        return _decode(data)
    except _Refused as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # Python's parser, before the count of levels could
        raise error(f"{what} is not valid JSON: {_TOO_DEEP}") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not valid JSON: not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError: its text says where
        raise error(f"{what} is not valid JSON: {exc}") from None


def json_object(data: bytes | str, what: str, error: type[Exception] = JsonError) -> dict[str, Any]:
    """`data` decoded as a JSON object; `error(message)` naming `what` for anything else."""
    value = json_value(data, what, error)
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    return value


def _decode(data: bytes | str) -> Any:
    if isinstance(data, str):
        text, raw = data, None
        lone = not text.isascii() and _SURROGATE.search(text) is not None  # surrogateescape'd text, say
    else:
        text, raw = data.decode("utf-8"), data  # strict: encoded surrogates are not UTF-8 either
        lone = False
    if text.startswith("\ufeff"):
        raise _Refused("it starts with a byte order mark")
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    hooks: dict[str, Any] = {"parse_constant": _constant, "parse_float": _float}
    if _LONG_RUN in raw.translate(_DIGITS_TO_DIGIT):  # a number may be past a float64: check each
        hooks["parse_int"] = _int
    value = json.loads(text, **hooks)
    lone = lone or ("\\u" in text and _SURROGATE_ESCAPE.search(text) is not None)
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    return _settle(value, lone) if lone or deep else value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {_cut(text)} is out of range (larger than a 64-bit float)")
    return value


def _int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > _FLOAT_DIGITS:
        raise _Refused(f"the number {_cut(text)} ({digits} digits) is out of range (larger than a 64-bit float)")
    value = int(text)
    if digits == _FLOAT_DIGITS:
        try:
            float(value)
        except OverflowError:
            raise _Refused(f"the number {_cut(text)} is out of range (larger than a 64-bit float)") from None
    return value


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _settle(value: Any, fix: bool) -> Any:
    """Refuse nesting past MAX_DEPTH; with `fix`, lone surrogates in strings and keys become U+FFFD
    (Python pairs a valid high+low escape itself, so any surrogate left is alone). In place: the
    tree is the parser's own. A stack, not recursion: the tree may be as deep as Python allowed."""
    if not isinstance(value, (dict, list)):
        return _SURROGATE.sub("\ufffd", value) if fix and isinstance(value, str) else value
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Refused(_TOO_DEEP)
        if isinstance(node, dict):
            if fix and any(_SURROGATE.search(k) for k in node):
                items = list(node.items())
                node.clear()
                for k, v in items:  # a key that becomes one already there: the later wins, as in Go
                    node[_SURROGATE.sub("\ufffd", k)] = v
            for k, item in node.items():
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
                elif fix and isinstance(item, str):
                    node[k] = _SURROGATE.sub("\ufffd", item)
        else:
            for i, item in enumerate(node):
                if isinstance(item, (dict, list)):
                    stack.append((item, depth + 1))
                elif fix and isinstance(item, str):
                    node[i] = _SURROGATE.sub("\ufffd", item)
    return value
