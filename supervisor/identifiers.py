"""containerd's identifier rules: what a namespace, container ID or task ID may be.

An identifier is 1 to 76 bytes of ASCII letters and digits, optionally joined by single
separators `.`, `_` or `-` (never two in a row, never leading or trailing). The rule keeps IDs
safe to use as path components and in URLs. Errors are `InvalidArgument` with containerd's
wording, e.g. `identifier "a..b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`.

Also here: `go_quote`, Go's `%q` formatting, so every containerd-style message that quotes a
user's string renders it exactly as containerd would.
"""

from __future__ import annotations

import re

from dockyard_common.errors import InvalidArgument

MAX_LENGTH = 76
PATTERN = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
# \Z rather than $: Python's $ also matches before a trailing newline, Go's does not.
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*\Z")

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": r"\\", '"': r"\""}


def go_quote(s: str) -> str:
    """`s` as Go's strconv.Quote (`%q`) renders it: printable runes kept, the rest escaped.

    Lone surrogates (bytes that were not UTF-8, decoded with surrogateescape) render as the
    `\\xNN` byte escape Go uses for invalid UTF-8.
    """
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif ch.isprintable():  # Python's notion matches Go's unicode.IsPrint (L, M, N, P, S, ' ')
            out.append(ch)
        elif cp < 0x80:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def validate(s: str, what: str = "identifier") -> str:
    """Return `s` if it is a valid identifier, else raise InvalidArgument naming it `what`.

    The length limit counts UTF-8 bytes, as containerd does, and is checked before the pattern
    so an over-long ID gets the more helpful message.
    """
    if not s:
        raise InvalidArgument(f"{what} must not be empty")
    if len(s.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        raise InvalidArgument(f"{what} {go_quote(s)} greater than maximum length ({MAX_LENGTH} characters)")
    if not _IDENTIFIER.match(s):
        raise InvalidArgument(f"{what} {go_quote(s)} must match {PATTERN}")
    return s


def validate_namespace(s: str) -> str:
    """Return `s` if it is a valid namespace name: namespaces follow the identifier rule.

    The message is containerd's (`identifier "..." must match ...`); the request edge may
    prefix it (containerd says `namespace validation: ...` for a bad request header).
    """
    return validate(s)


def is_valid(s: str) -> bool:
    """Whether `s` is a valid identifier (for callers that skip rather than fail)."""
    try:
        validate(s)
    except InvalidArgument:
        return False
    return True
