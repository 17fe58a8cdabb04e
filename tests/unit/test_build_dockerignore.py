""".dockerignore semantics (dockyard_common/dockerignore.py) and Go's filepath.Match (gomatch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_common.dockerignore import Matcher, go_clean, read_patterns, walk_context
from dockyard_common.errors import InvalidArgument
from dockyard_common.gomatch import has_magic, match


def test_read_patterns_cleans_and_skips_comments() -> None:
    text = "\ufeff# comment\n  \nfoo/\n/abs//x/./y\n! keep \n  # not a comment after spaces\n../up\n"
    assert read_patterns(text) == ["foo", "abs/x/y", "!keep", "# not a comment after spaces", "../up"]


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["foo"], "foo", True),
    (["foo"], "foo/bar/baz", True),  # a parent matches
    (["foo"], "sub/foo", False),  # anchored at the root, unlike .gitignore
    (["*.log"], "a.log", True),
    (["*.log"], "d/a.log", False),  # * stays within one component
    (["*/*.log"], "d/a.log", True),
    (["**/*.log"], "d/e/a.log", True),
    (["**/*.log"], "a.log", True),
    (["docs/**"], "docs/a/b", True),
    (["docs/**"], "docs", False),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["?.txt"], "ab.txt", False),
    (["[a-c].txt"], "b.txt", True),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["!x", "x"], "x", True),  # the last match wins
    (["x", "!x", "x"], "x", True),
    (["a\\*b"], "a*b", True),
    (["a\\*b"], "axb", False),
    (["a.b"], "axb", False),  # regexp characters are literal
    (["**"], "anything/at/all", True),
])
def test_matcher(patterns: list[str], path: str, excluded: bool) -> None:
    assert Matcher(patterns).excluded(path) is excluded


def test_bad_patterns() -> None:
    with pytest.raises(InvalidArgument, match="illegal exclusion"):
        Matcher(["!"])
    with pytest.raises(InvalidArgument, match="syntax error"):
        Matcher(["a["])


def test_walk_context(tmp_path: Path) -> None:
    for rel in ("src/a.py", "src/a.pyc", "node_modules/m/i.js", "node_modules/keep.txt", "logs/x.log", "README"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    m = Matcher(read_patterns("**/*.pyc\nnode_modules\n!node_modules/keep.txt\nlogs\n"))
    assert list(walk_context(tmp_path, m)) == ["README", "node_modules/keep.txt", "src", "src/a.py"]


def test_go_clean() -> None:
    assert [go_clean(p) for p in ("", "a//b/./c/", "/../a", "../../a", "a/../..", "./")] == \
        [".", "a/b/c", "/a", "../../a", "..", "."]


@pytest.mark.parametrize(("pattern", "name", "want"), [
    ("*", "abc", True), ("*", "a/b", False), ("a*", "a", True), ("*.go", ".go", True),
    ("?", "a", True), ("?", "", False), ("[abc]", "b", True), ("[^abc]", "d", True),
    ("[!abc]", "a", True), ("[!abc]", "d", False),  # `!` is a plain member in Go, not a negation
    ("[a-z]x", "qx", True), ("\\*", "*", True), ("\\*", "a", False), ("[\\]]", "]", True),
])
def test_go_match(pattern: str, name: str, want: bool) -> None:
    assert match(pattern, name) is want


@pytest.mark.parametrize("pattern", ["[", "[a", "a\\", "[z-a]", "[]", "[-a]"])
def test_go_bad_pattern(pattern: str) -> None:
    with pytest.raises(InvalidArgument):
        match(pattern, "x")


def test_has_magic() -> None:
    assert has_magic("a*") and has_magic("a\\b") and has_magic("[x]") and not has_magic("plain/path")
