"""`.dockerignore`: which files of a build context the client leaves out, as docker does.

    patterns = read_patterns(Path(ctx, ".dockerignore").read_text())
    matcher = Matcher(patterns)
    matcher.excluded("node_modules/x/y.js")                # True / False
    for rel in walk_context(ctx, matcher): ...             # what to send, in walk order

Semantics are moby's (`moby/patternmatcher` and its `ignorefile.ReadAll`), the ones the
docker CLI applies before sending the context:
- one pattern a line; a line starting with `#` is a comment; surrounding whitespace is
  trimmed, empty lines skipped; a leading `!` makes an exception (re-includes); patterns are
  cleaned like Go's filepath.Clean and a leading `/` dropped (they are relative to the
  context root, never matched at any depth as in .gitignore).
- nothing is kept back for the build's own files: the Dockerfile travels in the build's
  options, so one the .dockerignore leaves out (or the .dockerignore itself) is not in the
  context and COPY cannot copy it, which is docker's rule for them.
- `*` matches within one path component, `?` one character, `[...]` a class, `\\` escapes,
  and `**` any number of components (`**/x` is x at any depth, `x/**` everything below x).
- the last matching pattern wins; a path is also excluded when one of its parent directories
  matches (`node_modules` excludes everything below it, unless a later `!` pattern says
  otherwise for a file below it).
A malformed pattern is InvalidArgument naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import linearre
from dockyard_common.errors import InvalidArgument
from dockyard_common.gomatch import check as check_glob

_ESCAPED = ".+()|{}$"


def go_clean(path: str) -> str:
    """Go's path.Clean: no `.`, no doubled `/`, `..` resolved lexically (kept at the front)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    out = "/".join(parts)
    return ("/" + out) if rooted else (out or ".")


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file (ignorefile.ReadAll)."""
    out: list[str] = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


@dataclass(frozen=True)
class _Pattern:
    text: str  # cleaned, without the `!`
    exclusion: bool
    kind: str  # "exact" | "prefix" | "suffix" | "regexp"
    regexp: linearre.Pattern | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.match(path) is not None


class Matcher:
    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise InvalidArgument('.dockerignore: illegal exclusion pattern: "!"')
                p = p[1:]
            try:
                check_glob(p)
            except InvalidArgument:
                raise InvalidArgument(f".dockerignore: syntax error in pattern {raw!r}") from None
            self.patterns.append(_compile(p, exclusion, raw))
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether the context path `path` (relative, `/`-separated) is left out
        (patternmatcher's MatchesOrParentMatches)."""
        matched = False
        parent = os.path.dirname(path) or "."
        parent_dirs = parent.split("/")
        for pattern in self.patterns:
            # An inclusion already matched, or an exclusion not matched yet, cannot change it.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent != ".":
                for i in range(len(parent_dirs)):
                    if pattern.match("/".join(parent_dirs[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could re-include something below the excluded `directory`
        (the CLI's test before skipping a whole directory)."""
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def walk_context(root: Path, matcher: Matcher) -> Iterator[str]:
    """Relative paths under `root` that are not excluded, parents before children, sorted by
    name; excluded directories are not entered unless an exception may re-include below them."""

    def walk(directory: Path, prefix: str) -> Iterator[str]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if matcher.excluded(rel):
                if is_dir and matcher.has_exclusions and matcher.may_include_below(rel):
                    yield from walk(Path(entry.path), rel + "/")
                continue
            yield rel
            if is_dir:
                yield from walk(Path(entry.path), rel + "/")

    yield from walk(root, "")


def _compile(pattern: str, exclusion: bool, raw: str) -> _Pattern:
    """moby's pattern compile: a regexp, or the exact/prefix/suffix shortcuts it takes (which
    decide some matches differently from the regexp, so they are kept as they are)."""
    out = ["^"]
    kind = "exact"
    i, n = 0, len(pattern)
    first = True
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1  # `**/` is `**`
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regexp"
                else:
                    out.append("(.*/)?")
                    kind = "regexp"
                if first:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regexp"
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = "regexp"
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regexp"
        else:
            out.append(ch)
        first = False
    if kind != "regexp":
        return _Pattern(pattern, exclusion, kind, None)
    out.append("$")
    try:
        rx = linearre.compile("".join(out), dotall=True)  # RE2: Docker compiles these as Go regexps
    except linearre.error:
        raise InvalidArgument(f".dockerignore: syntax error in pattern {raw!r}") from None
    return _Pattern(pattern, exclusion, kind, rx)
