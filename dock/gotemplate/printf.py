"""Go's fmt for templates: `printf` (fmt.Sprintf's verbs, flags, widths, precisions, argument
indexes and its `%!verb(type=value)` for misuse), `print` and `println`."""

from __future__ import annotations

import re
from typing import Any

from dock.gotemplate.errors import MAX_DEPTH, MAX_OUTPUT
from dock.gotemplate.values import MISSING, go_collection, go_float, go_print, type_name
from dockyard_common.goquote import go_quote

_VERB = re.compile(r"%([-+# 0]*)(?:\[(\d+)\])?(\*|\d+)?(?:\.(?:\[(\d+)\])?(\*|\d*))?(?:\[(\d+)\])?(.?)", re.S)


def _bad(verb: str, v: Any) -> str:
    if v is None or v is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(v)}={go_print(v)})"


def _pad(text: str, width: int | None, flags: str, numeric: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text + " " * (width - len(text))
    if "0" in flags and numeric:
        sign = text[0] if text[:1] in "+- " and text[:1] else ""
        body = text[len(sign):]
        return sign + "0" * (width - len(text)) + body
    return " " * (width - len(text)) + text


def _format_one(verb: str, flags: str, width: int | None, prec: int | None, v: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        return "..."
    if verb and verb in "vdsqxXfegtoc":  # each element with the verb, the width for none of them
        collection = go_collection(v, lambda x: _format_one(verb, flags, None, prec, x, depth + 1))
        if collection is not None:
            return collection
    numeric = False
    if verb == "v":
        if isinstance(v, float) and not isinstance(v, bool):
            text, numeric = go_float(v, "g", -1 if prec is None else prec), True
        else:
            text = go_print(v, depth)
            numeric = isinstance(v, int) and not isinstance(v, bool)
            if "+" in flags and numeric and v >= 0:
                text = "+" + text
    elif verb == "s":
        if isinstance(v, str):
            text = v if prec is None else v[:prec]
        elif v is None or isinstance(v, bool | int | float):
            return _bad(verb, v)
        else:
            text = go_print(v, depth)
    elif verb == "q":
        if isinstance(v, str):
            text = go_quote(v)
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0x10FFFF:
            text = "'" + go_quote(chr(v))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        else:
            return _bad(verb, v)
    elif verb == "T":
        text = "<nil>" if v is None or v is MISSING else type_name(v)
    elif verb == "t":
        if not isinstance(v, bool):
            return _bad(verb, v)
        text = "true" if v else "false"
    elif verb in "dboxXc":
        if isinstance(v, str) and verb in "xX":
            data = v.encode("utf-8", "surrogateescape")
            text = data.hex() if verb == "x" else data.hex().upper()
        elif isinstance(v, float) and not isinstance(v, bool) and verb in "xX":
            text = float.hex(v)
        elif not isinstance(v, int) or isinstance(v, bool):
            return _bad(verb, v)
        elif verb == "c":
            text = chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
        else:
            spec = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
            text = format(abs(v), spec)
            if "#" in flags and verb in "boxX":
                text = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}[verb] + text
            if prec is not None:
                text = text.rjust(prec, "0")
            text = ("-" if v < 0 else "+" if "+" in flags else " " if " " in flags else "") + text
            numeric = True
    elif verb in "efgEFG":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return _bad(verb, v)
        text = go_float(float(v), verb.lower(), -1 if prec is None else prec)
        if verb.isupper():
            text = text.upper()
        if "+" in flags and not text.startswith("-"):
            text = "+" + text
        numeric = True
    else:
        return _bad(verb, v) if verb else "%!(NOVERB)"
    return _pad(text, width, flags, numeric)


def go_sprintf(fmt: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf for the verbs people use: %v %s %q %d %t %x %X %o %b %c %e %f %g, with flags,
    widths, precisions (also `*`) and %[n] argument indexes; Go's %!verb(...) for what does not fit."""
    out: list[str] = []
    argi = 0
    used_index = False

    def seek(idx: str | None) -> None:  # %[n]: the next argument is the nth
        nonlocal argi, used_index
        if idx is not None:
            argi, used_index = int(idx) - 1, True

    def star(text: str | None) -> int | None:  # a width or precision, `*` taking it from the arguments
        nonlocal argi
        if text is None or text == "":
            return None if text is None else 0
        if text != "*":
            return int(text)
        if argi >= len(args) or not isinstance(args[argi], int) or isinstance(args[argi], bool):
            argi += 1
            return None
        argi += 1
        return int(args[argi - 1])

    pos = 0
    while True:
        at = fmt.find("%", pos)
        if at < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:at])
        m = _VERB.match(fmt, at)
        assert m is not None
        pos = m.end()
        flags, idx1, width_text, idx2, prec_text, idx3, verb = m.groups()
        if verb == "%" and not (flags or width_text or prec_text):
            out.append("%")
            continue
        seek(idx1)
        width = star(width_text)
        seek(idx2)
        prec = star(prec_text) if m.group(0).find(".") >= 0 and prec_text is not None else None
        if width is not None and width < 0:
            flags, width = flags + "-", -width
        if (width or 0) > MAX_OUTPUT or (prec or 0) > MAX_OUTPUT:
            raise ValueError(f"width or precision {max(width or 0, prec or 0)} is too large")
        seek(idx3)
        if verb == "":
            out.append("%!(NOVERB)")
            continue
        if argi >= len(args) or argi < 0:
            out.append(f"%!{verb}(MISSING)" if argi >= 0 else f"%!{verb}(BADINDEX)")
            continue
        out.append(_format_one(verb, flags, width, prec, args[argi]))
        argi += 1
    if not used_index and argi < len(args):
        extra = ", ".join(f"{type_name(a)}={go_print(a)}" if a is not None else "<nil>" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def go_sprint(args: list[Any]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_print(None if a is MISSING else a))
    return "".join(out)


def go_sprintln(args: list[Any]) -> str:
    """fmt.Sprintln: spaces between all operands, a newline after."""
    return " ".join(go_print(None if a is MISSING else a) for a in args) + "\n"
