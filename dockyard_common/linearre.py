"""Regular expressions matched in linear time (RE2, Google's engine, through `google-re2`), for
every pattern that comes from a caller: filters' `~=`, Dockerfile globs and `${v%pattern}`,
.dockerignore lines, COPY sources.

Python's `re` backtracks: `(a+)+b` against 30 a's, or a glob of eight `*` against a 200-character
name, takes seconds to years, holding the GIL the whole time, so one hostile filter or Dockerfile
froze the whole daemon (found by a fuzz round). RE2 never backtracks: time is linear in the text.
It is also the syntax the patterns are written for: containerd's filters and Docker's
.dockerignore compile Go regexps, which are RE2.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]

error = re2.error


class Match(Protocol):
    def group(self, index: int = 0) -> str: ...

    def groups(self) -> tuple[str | None, ...]: ...


class Pattern(Protocol):
    @property
    def pattern(self) -> str: ...

    def search(self, text: str) -> Match | None: ...

    def match(self, text: str) -> Match | None: ...

    def fullmatch(self, text: str) -> Match | None: ...


def compile(pattern: str, *, dotall: bool = False) -> Pattern:
    """`pattern` in RE2 syntax (Go's); `dotall`: `.` matches a newline too. Raises `error`."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern on the daemon's stderr
    options.dot_nl = dotall
    compiled: Pattern = re2.compile(pattern, options)
    return compiled
