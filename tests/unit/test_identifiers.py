"""containerd's identifier rules and Go's %q quoting."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote
from supervisor import identifiers
from supervisor.identifiers import MAX_LENGTH, PATTERN, validate, validate_namespace

VALID = [
    "default",
    "Default",
    "default-default",
    "containerd.io",
    "foo.boo",
    "swarmkit.docker.io",
    "0912341234",
    "task.0.0123456789",
    "container.system-75-f19a.00",
    "underscores_are_allowed",
    "a",
    "a" * MAX_LENGTH,
]

INVALID_PATTERN = [
    ".foo..foo",
    "foo/foo",
    "foo/..",
    "foo..foo",
    "foo.-boo",
    "-foo.boo",
    "foo.boo-",
    "but__only_tasteful_underscores",
    "zn--e9.org",
    "default--default",
    "foo bar",
    "foo\n",         # Python's $ would accept the trailing newline; Go's does not
    "föö",
    "a:b",
    ".",
]


@pytest.mark.parametrize("name", VALID)
def test_valid(name: str) -> None:
    assert validate(name) == name
    assert validate_namespace(name) == name
    assert identifiers.is_valid(name)


@pytest.mark.parametrize("name", INVALID_PATTERN)
def test_invalid_pattern(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(name)
    assert info.value.message == f"identifier {go_quote(name)} must match {PATTERN}"
    assert not identifiers.is_valid(name)


def test_messages_are_containerds() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate("")
    assert str(info.value) == "identifier must not be empty: invalid argument"

    long = "a" * (MAX_LENGTH + 1)
    with pytest.raises(InvalidArgument) as info:
        validate(long)
    assert str(info.value) == (
        f'identifier "{long}" greater than maximum length (76 characters): invalid argument')

    with pytest.raises(InvalidArgument) as info:
        validate("foo/bar")
    assert str(info.value) == (
        'identifier "foo/bar" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument')


def test_length_counts_utf8_bytes_and_comes_before_the_pattern() -> None:
    name = "é" * 39  # 39 characters, 78 bytes
    with pytest.raises(InvalidArgument, match="greater than maximum length"):
        validate(name)
    with pytest.raises(InvalidArgument, match="must match"):
        validate("é" * 38)  # 76 bytes: within the limit, fails the pattern


def test_what_names_the_thing() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate("", what="container id")
    assert info.value.message == "container id must not be empty"
    with pytest.raises(InvalidArgument) as info:
        validate("a/b", what="topic component")
    assert info.value.message.startswith('topic component "a/b" must match ')


def test_namespaces_follow_the_identifier_rule() -> None:
    for bad in ["", "a..b", "x" * 77, "k8s.io/"]:
        with pytest.raises(InvalidArgument):
            validate_namespace(bad)
    assert validate_namespace("k8s.io") == "k8s.io"


@pytest.mark.parametrize(("s", "quoted"), [
    ("", '""'),
    ("abc", '"abc"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
    ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
    ("é牛", '"é牛"'),                      # printable Unicode is kept
    ("\u00a0", '"\\u00a0"'),               # non-ASCII spaces are not printable in Go
    ("\u200b", '"\\u200b"'),
    ("\U000e0001", '"\\U000e0001"'),
    ("\U0001f600", '"\U0001f600"'),
    ("\udcff", '"\\xff"'),                  # a byte that was not UTF-8
    ("a'b", '"a\'b"'),
])
def test_go_quote(s: str, quoted: str) -> None:
    assert go_quote(s) == quoted
