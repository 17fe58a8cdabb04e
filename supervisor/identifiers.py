"""containerd's identifier rules: what a namespace, container ID or task ID may be.

An identifier is 1 to 76 bytes of ASCII letters and digits, optionally joined by single
separators `.`, `_` or `-` (never two in a row, never leading or trailing). The rule keeps IDs
safe to use as path components and in URLs. Errors are `InvalidArgument` with containerd's
wording, e.g. `identifier "a..b" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`.

Messages quote the identifier with `dockyard_common.goquote.go_quote`, as containerd does.
"""

from __future__ import annotations

import re

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote

MAX_LENGTH = 76
PATTERN = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
# \Z rather than $: Python's $ also matches before a trailing newline, Go's does not.
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*\Z")


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
