"""Detach keys (dockyard_common/detachkeys.py): Docker's --detach-keys syntax and the input scanner."""

from __future__ import annotations

import pytest

from dockyard_common import detachkeys
from dockyard_common.errors import InvalidArgument


@pytest.mark.parametrize(("keys", "expected"), [
    ("", b"\x10\x11"),  # the default: ctrl-p ctrl-q
    ("ctrl-p,ctrl-q", b"\x10\x11"),
    ("ctrl-a,x", b"\x01x"),
    ("CTRL-A,X", b"\x01X"),  # ctrl- is case-blind, a plain character is itself
    ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x00\x1b\x1c\x1d\x1e\x1f"),
    ("ctrl-z", b"\x1a"),
    ("a", b"a"),
    (",", None),  # two empty keys
])
def test_parse(keys: str, expected: bytes | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument):
            detachkeys.parse(keys)
    else:
        assert detachkeys.parse(keys) == expected


@pytest.mark.parametrize("keys", ["ctrl-pp", "ctrl-", "ctrl-1", "ab", "ctrl-p,", "ctrl-p,,ctrl-q", "alt-x", "é"])
def test_invalid_keys_are_refused_in_words(keys: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid detach keys") as info:
        detachkeys.parse(keys)
    assert repr(keys) in str(info.value)


def test_scanner_detaches_on_the_sequence_and_holds_back_its_start() -> None:
    s = detachkeys.Scanner(detachkeys.parse(""))
    assert s.feed(b"ls\r") == (b"ls\r", False)
    assert s.feed(b"ab\x10") == (b"ab", False)  # ctrl-p may begin the sequence: held back
    assert s.feed(b"\x11rest") == (b"", True)  # ctrl-q completes it; nothing after it is sent


def test_scanner_lets_a_false_start_through() -> None:
    s = detachkeys.Scanner(detachkeys.parse("ctrl-p,ctrl-q"))
    assert s.feed(b"\x10") == (b"", False)
    assert s.feed(b"x") == (b"\x10x", False)  # not the sequence: the held ctrl-p goes on
    assert s.feed(b"\x10\x10\x11") == (b"\x10", True)  # a second ctrl-p starts it anew


def test_scanner_with_custom_keys_passes_the_default_ones() -> None:
    s = detachkeys.Scanner(detachkeys.parse("ctrl-a,x"))
    assert s.feed(b"\x10\x11") == (b"\x10\x11", False)
    assert s.feed(b"\x01y\x01") == (b"\x01y", False)
    assert s.feed(b"x") == (b"", True)
