"""Detach keys: the key sequence that leaves an attached terminal with the container running.

Docker's syntax (`--detach-keys`): keys separated by commas, each a single character (`x`) or
`ctrl-<c>` for c in a-z, @, [, \\, ], ^, _ (case ignored). "" means the default, ctrl-p ctrl-q.

    parse("ctrl-p,ctrl-q") == b"\\x10\\x11";  parse("ctrl-a,x") == b"\\x01x"
    scanner = Scanner(parse(""))
    forward, detached = scanner.feed(data)   # what goes on to the container; True at the sequence

As in Docker, only a terminal's input is scanned (a pipe's bytes go through untouched): the
daemon makes a Scanner for tty containers only.
"""

from __future__ import annotations

from typing import NoReturn

from dockyard_common.errors import InvalidArgument

DEFAULT = "ctrl-p,ctrl-q"
_CTRL = "@abcdefghijklmnopqrstuvwxyz[\\]^_"  # ctrl-<c> is the byte at c's index


def parse(keys: str) -> bytes:
    """The bytes of a detach key sequence; InvalidArgument naming the key it cannot read."""
    out = bytearray()
    for key in (keys or DEFAULT).split(","):
        if len(key) == 1 and ord(key) < 128:
            out.append(ord(key))
            continue
        lower = key.lower()
        if lower.startswith("ctrl-") and len(lower) == 6 and lower[5] in _CTRL:
            out.append(_CTRL.index(lower[5]))
            continue
        _bad(key, keys)
    return bytes(out)


def _bad(key: str, keys: str) -> NoReturn:
    raise InvalidArgument(f"invalid detach keys {keys!r}: unknown key {key!r} "
                          "(want keys such as ctrl-p,ctrl-q or ctrl-a,x: a character or ctrl-<a-z@[\\]^_>)")


class Scanner:
    """Input on its way to a terminal, watched for the detach sequence. Bytes that may begin it
    are held back until the next byte tells; the sequence itself never reaches the container."""

    def __init__(self, keys: bytes) -> None:
        if not keys:
            raise InvalidArgument("an empty detach key sequence")
        self.keys = keys
        self._held = 0  # how many bytes of `keys` were just typed (and are held back)

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(the bytes to forward, whether the sequence is complete); after it, the rest of
        `data` is dropped."""
        if not self._held and self.keys[0] not in data:
            return data, False  # the common case: no byte of interest
        out = bytearray()
        for b in data:
            if b == self.keys[self._held]:
                self._held += 1
                if self._held == len(self.keys):
                    self._held = 0
                    return bytes(out), True
                continue
            out += self.keys[:self._held]  # not the sequence after all: what was held goes on
            self._held = 0
            if b == self.keys[0]:
                self._held = 1
            else:
                out.append(b)
        return bytes(out), False
