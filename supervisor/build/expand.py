"""Dockerfile word expansion: the rules of buildkit's shell lexer, applied to one word.

What a builder does to the arguments of ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL,
USER, VOLUME, WORKDIR, ARG (defaults) and the expandable flags (`--chown`, `--chmod`,
`--from`, `--platform`) before using them. RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK are
not expanded by the builder (the shell in the container does it, or nobody).

    expand_word('"$A b"', {"A": "x"})            -> "x b"
    expand_word("${A:-default}", {})             -> "default"
    expand_word("'$A'", {"A": "x"})               -> "$A"

Rules (buildkit `frontend/dockerfile/shell/lex.go`, Dockerfile frontend 1.x):
- `'...'` is literal; `"..."` expands `$` and lets the escape character escape only `"`, `$`
  and itself (elsewhere it stays); outside quotes the escape character makes the next
  character literal (a trailing one is dropped). The escape character is `\\` or, with
  `# escape=` followed by a backtick.
- `$NAME`, `${NAME}`; a name is letters, digits and `_` (a leading digit run, or one of
  `@*#?-$!0`, is a name by itself); a `$` followed by anything else is itself. Unset
  variables are empty.
- `${N:-w}` w if N is unset or empty, `${N-w}` if unset; `${N:+w}` w if N is set and not
  empty, `${N+w}` if set; `${N:?msg}`/`${N?msg}` an error when empty/unset; `${N#p}`,
  `${N##p}`, `${N%p}`, `${N%%p}` remove the shortest/longest prefix/suffix matching the
  glob `p` (`*`, `?`, `[...]`). `w`, `msg` and `p` are themselves expanded.
- Errors (InvalidArgument): unterminated quotes, `${` without `}`, `${}`, bad modifiers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dockyard_common import linearre
from dockyard_common.errors import InvalidArgument

_SPECIAL = "@*#?-$!0"


class ExpandError(InvalidArgument):
    """A word the lexer cannot read; the caller adds the Dockerfile line."""


def expand_word(word: str, env: Mapping[str, str], *, escape: str = "\\", raw: bool = False) -> str:
    """`word` with quotes removed, escapes applied and variables expanded from `env`.

    `raw` (heredoc contents): quotes and escape characters stay in the text; single-quoted
    text is still not expanded (buildkit's raw-quotes/raw-escapes lexer mode)."""
    return _Lexer(word, env, escape, raw).run(stop=None)


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, raw: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.raw = raw

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1 if ch else 0
        return ch

    def run(self, stop: str | None) -> str:
        """Read until `stop` (consumed) or the end; with a `stop`, reaching the end is an error."""
        out: list[str] = []
        while True:
            ch = self._peek()
            if not ch:
                if stop is not None:
                    raise ExpandError(f"syntax error: missing '{stop}' in {self.text!r}")
                return "".join(out)
            if stop is not None and ch == stop:
                self._next()
                return "".join(out)
            if ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._dollar())
            elif ch == self.escape:
                self._next()
                nxt = self._next()
                if self.raw:
                    out.append(ch)
                out.append(nxt)  # "" at the end: a trailing escape is dropped
            else:
                out.append(self._next())

    def _single_quoted(self) -> str:
        self._next()
        end = self.text.find("'", self.pos)
        if end < 0 and self.raw:  # file text, not a word: a lone apostrophe is just that
            return "'"
        if end < 0:
            raise ExpandError(f"unexpected end of statement while looking for matching single-quote in {self.text!r}")
        value = self.text[self.pos:end]
        self.pos = end + 1
        return f"'{value}'" if self.raw else value

    def _double_quoted(self) -> str:
        self._next()
        start = self.pos
        out: list[str] = []
        while True:
            ch = self._peek()
            if not ch and self.raw:  # a lone `"` in file text: itself, and go on after it
                self.pos = start
                return '"'
            if not ch:
                raise ExpandError(
                    f"unexpected end of statement while looking for matching double-quote in {self.text!r}"
                )
            if ch == '"':
                self._next()
                body = "".join(out)
                return f'"{body}"' if self.raw else body
            if ch == "$":
                out.append(self._dollar())
                continue
            self._next()
            if ch == self.escape:
                nxt = self._peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    if self.raw:
                        out.append(ch)
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        ch = self._peek()
        if ch.isdigit():
            start = self.pos
            while self._peek().isdigit():
                self._next()
            return self.text[start:self.pos]
        if ch and ch in _SPECIAL:
            return self._next()
        start = self.pos
        while (c := self._peek()) and (c.isalnum() or c == "_"):
            self._next()
        return self.text[start:self.pos]

    def _dollar(self) -> str:
        self._next()  # the `$`
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self._next()  # the `{`
        first = self._peek()
        if not first:
            raise ExpandError(f"syntax error: missing '}}' in {self.text!r}")
        if first in "{}:":
            raise ExpandError(f"syntax error: bad substitution in {self.text!r}")
        name = self._name()
        ch = self._next()
        value = self.env.get(name)
        if ch == "}":
            return value or ""
        if ch == ":":
            modifier = self._next()
            word = self.run(stop="}")
            if modifier == "-":
                return word if not value else value
            if modifier == "+":
                return word if value else ""
            if modifier == "?":
                if not value:
                    raise ExpandError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise ExpandError(f"unsupported modifier ({modifier}) in substitution in {self.text!r}")
        if ch in "-+?":
            word = self.run(stop="}")
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return word if value is not None else ""
            if value is None:
                raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in "#%":
            longest = self._peek() == ch
            if longest:
                self._next()
            pattern = self.run(stop="}")
            return _trim(value or "", pattern, prefix=ch == "#", longest=longest)
        if not ch:
            raise ExpandError(f"syntax error: missing '}}' in {self.text!r}")
        raise ExpandError(f"unsupported modifier ({ch}) in substitution in {self.text!r}")


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    """Remove the shortest/longest prefix or suffix of `value` matching the glob `pattern`."""
    rx = linearre.compile(_glob_regex(pattern), dotall=True)
    cuts = range(len(value) + 1)
    order = reversed(cuts) if longest else iter(cuts)
    for n in order:
        if prefix and rx.fullmatch(value[:n]):
            return value[n:]
        if not prefix and rx.fullmatch(value[len(value) - n:]):
            return value[: len(value) - n]
    return value


def _glob_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
