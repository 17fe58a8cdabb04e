"""Dockerfile word expansion (supervisor/build/expand.py), buildkit's shell-lexer rules."""

from __future__ import annotations

import pytest

from supervisor.build.expand import ExpandError, expand_word

ENV = {"A": "x", "EMPTY": "", "P": "/usr/local/lib/file.tar.gz", "SP": "a b"}


@pytest.mark.parametrize(("word", "want"), [
    ("plain", "plain"),
    ("$A", "x"),
    ("${A}", "x"),
    ("pre${A}post", "prexpost"),
    ("$Apost", ""),  # the name runs on: $Apost is unset
    ("$UNSET", ""),
    ("${UNSET}", ""),
    ("$", "$"),
    ("a$-b", "ab"),  # `-` is a special parameter name, unset
    ("$1x", "x"),
    ("${A:-d}", "x"),
    ("${EMPTY:-d}", "d"),
    ("${UNSET:-d}", "d"),
    ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"),
    ("${A:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-$A}", "x"),
    ("${UNSET:-${A}y}", "xy"),
    ("'$A'", "$A"),
    ('"$A"', "x"),
    ('"${SP}"', "a b"),
    ('"a  b"', "a  b"),
    ("\\$A", "$A"),
    ('"\\$A"', "$A"),
    ('"\\"q\\""', '"q"'),
    ('"a\\b"', "a\\b"),  # inside double quotes only " $ and \ may be escaped
    ("a\\ b", "a b"),
    ("trailing\\", "trailing"),
    ("it'''s'", "its"),
    ("${P#*/}", "usr/local/lib/file.tar.gz"),
    ("${P##*/}", "file.tar.gz"),
    ("${P%.*}", "/usr/local/lib/file.tar"),
    ("${P%%.*}", "/usr/local/lib/file"),
    ("${A:?must}", "x"),
])
def test_expand(word: str, want: str) -> None:
    assert expand_word(word, ENV) == want


def test_backtick_escape() -> None:
    assert expand_word("c:\\dir", {}, escape="`") == "c:\\dir"
    assert expand_word("`$A", {"A": "x"}, escape="`") == "$A"
    assert expand_word('"`""', {}, escape="`") == '"'


@pytest.mark.parametrize(("word", "message"), [
    ("'open", "single-quote"),
    ('"open', "double-quote"),
    ("${A", "missing '}'"),
    ("${}", "bad substitution"),
    ("${:x}", "bad substitution"),
    ("${A:!x}", "unsupported modifier"),
    ("${A!x}", "unsupported modifier"),
    ("${UNSET:?is required}", "UNSET: is required"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ExpandError, match=message):
        expand_word(word, ENV)


def test_raw_mode_for_heredoc_text() -> None:
    env = {"A": "1"}
    assert expand_word("say \"$A\" '$A' \\$A ${A}\n", env, raw=True) == "say \"1\" '$A' \\$A 1\n"
    assert expand_word("it's $A\n", env, raw=True) == "it's 1\n"  # a lone quote is text
    assert expand_word('a "b $A\n', env, raw=True) == 'a "b 1\n'
