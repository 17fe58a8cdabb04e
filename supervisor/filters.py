"""containerd's filter language: the `filters` strings of List and Subscribe requests.

Grammar (containerd's, including the corners its scanner gives it):

    filter    := selector ("," selector)*          all selectors must match (AND)
    selector  := fieldpath [operator value]        no operator: the field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_]+
    operator  := "==" | "!=" | "~="
    value     := quoted | a run of graphic characters other than "," and white space
    quoted    := '"' ... '"'  (a Go-style string literal with escapes); after "~=" also
                 "/" ... "/" and "|" ... "|", so a regexp need not escape its quotes

A request's repeated `filters` field is a list of filters, any of which may match (OR); an empty
list, or an empty string anywhere in it, matches everything (`ctr` sends `filters: [""]`).

Meaning of a selector, given an adaptor that maps a fieldpath to `(value, present)`:
- `a.b`        present
- `a.b==v`     present and value == v
- `a.b!=v`     value != v (containerd does not ask for presence: an absent field is "" here)
- `a.b~=re`    the regexp matches somewhere in value (unanchored, absent fields match as "");
               a regexp that does not compile matches nothing (containerd logs it; so do we)

White space is skipped before a token, but the parser looks at the raw next character between
selectors, so `name==a ,x` and a trailing space after a value are errors, exactly as containerd.
Syntax errors raise `FilterSyntaxError` (an InvalidArgument) with containerd's message, e.g.
`filters: parse error: [labels. >|?|< x]: expected field or quoted`, and `.position`, the index of
the offending character. Positions count characters (containerd counts UTF-8 bytes; the two agree
for ASCII input, and the rendered message is the same).

Regexps are Go's (RE2) syntax, matched by RE2 in linear time (`supervisor.goregexp`).
"""

from __future__ import annotations

import enum
import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from dockyard_common import linearre
from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote
from supervisor.goregexp import GoRegexpError, compile_go_regexp

log = logging.getLogger(__name__)

# Maps a fieldpath (e.g. ["labels", "foo.bar"]) to (value, present).
Adaptor = Callable[[list[str]], tuple[str, bool]]


class FilterSyntaxError(InvalidArgument):
    """A filter string that does not parse; `position` indexes the offending character."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        self.reason = reason
        if position < len(text):
            where = f"[{text[:position]} >|{text[position]}|< {text[position + 1:]}]"
        else:
            where = f"[{text}]"
        super().__init__(f"filters: parse error: {where}: {reason}")


# ---------------------------------------------------------------------------------------------
# Filters


class Filter:
    """Decides whether an object, seen through an adaptor, matches."""

    def match(self, adaptor: Adaptor) -> bool:
        raise NotImplementedError


class _Always(Filter):
    def match(self, adaptor: Adaptor) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALWAYS"


ALWAYS: Filter = _Always()


@dataclass(frozen=True)
class All(Filter):
    """Matches when every filter matches (the selectors of one filter string)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return all(f.match(adaptor) for f in self.filters)


@dataclass(frozen=True)
class AnyOf(Filter):
    """Matches when some filter matches (the filter strings of one request)."""

    filters: tuple[Filter, ...]

    def match(self, adaptor: Adaptor) -> bool:
        return any(f.match(adaptor) for f in self.filters)


class Operator(enum.Enum):
    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


_OPERATORS = {op.value: op for op in Operator if op is not Operator.PRESENT}


@dataclass(frozen=True)
class Selector(Filter):
    """One `fieldpath [op value]` term."""

    fieldpath: tuple[str, ...]
    operator: Operator = Operator.PRESENT
    value: str = ""
    # For MATCHES: the compiled regexp, or None with the reason when it does not compile.
    regex: linearre.Pattern | None = field(default=None, init=False, compare=False, repr=False)
    regex_error: str = field(default="", init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.operator is Operator.MATCHES:
            try:
                object.__setattr__(self, "regex", compile_go_regexp(self.value))
            except GoRegexpError as e:
                object.__setattr__(self, "regex_error", str(e))
                log.error("error compiling regexp %s: %s", go_quote(self.value), e)

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(list(self.fieldpath))
        if self.operator is Operator.PRESENT:
            return present
        if self.operator is Operator.EQUAL:
            return present and value == self.value
        if self.operator is Operator.NOT_EQUAL:
            return value != self.value
        return self.regex is not None and self.regex.search(value) is not None


def parse(text: str) -> Filter:
    """Parse one filter string; "" matches everything. Raises FilterSyntaxError."""
    if text == "":
        return ALWAYS
    return _Parser(text).parse()


# The most distinct filter strings one request may carry. Every filter is tried on every object
# listed, on the event loop: 20 000 filters over 300 containers held every other client for 15 s.
# Clients send a handful (ctr one, dock one per --filter); repeats are dropped before counting.
MAX_FILTERS = 256


def parse_all(texts: Iterable[str]) -> Filter:
    """Parse a request's filter list: any filter may match; none at all matches everything.
    More than MAX_FILTERS distinct strings is InvalidArgument."""
    distinct = list(dict.fromkeys(texts))  # OR of the same filter twice is that filter
    if len(distinct) > MAX_FILTERS:
        raise InvalidArgument(f"filters: {len(distinct)} distinct filters, at most {MAX_FILTERS} in one request")
    filters = [parse(t) for t in distinct]
    if not filters or any(f is ALWAYS for f in filters):
        return ALWAYS
    return filters[0] if len(filters) == 1 else AnyOf(tuple(filters))


def adaptor_from(fields: Mapping[str, str | Mapping[str, str]]) -> Adaptor:
    """An adaptor over plain data: `{"name": "x", "labels": {...}, "target": {...}}`.

    A string field is present when non-empty (containerd's `len(x) > 0`) and has no subfields.
    A map field (labels, annotations, a nested message flattened to strings) is looked up with
    the rest of the path joined by "." — so `labels.a.b` and `labels."a.b"` both find key `a.b`,
    as in containerd — and a key is present when it is in the map, even with an empty value
    (containerd's label semantics; leave empty struct fields out to get `len(x) > 0`).
    """

    def lookup(fieldpath: list[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        found = fields.get(fieldpath[0])
        if found is None:
            return "", False
        if isinstance(found, str):
            return (found, found != "") if len(fieldpath) == 1 else ("", False)
        key = ".".join(fieldpath[1:])
        if key in found:
            return found[key], True
        return "", False

    return lookup


# ---------------------------------------------------------------------------------------------
# Scanner

# Go's unicode.IsSpace: not quite Python's str.isspace (which adds \x1c-\x1f).
_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                   + "".join(chr(c) for c in range(0x2000, 0x200B)))
_QUOTES = frozenset('"/|')
_OPERATOR_CHARS = frozenset("=!~")
_FIELD_CHARS = frozenset("_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SIMPLE_ESCAPES = frozenset("abfnrtv\\")
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}


def _is_value_char(ch: str) -> bool:
    # Go: letters, digits, numbers, graphic or punctuation — i.e. categories L, M, N, P, S —
    # except "," and white space (Z is not among them).
    return ch != "," and unicodedata.category(ch)[0] in "LMNPS"


class _Kind(enum.Enum):
    EOF = "EOF"
    QUOTED = "Quoted"
    VALUE = "Value"
    FIELD = "Field"
    SEPARATOR = "Separator"
    OPERATOR = "Operator"
    ILLEGAL = "Illegal"
    CHAR = "Char"  # any other single character, for the parser to complain about


class _Token(NamedTuple):
    kind: _Kind
    pos: int
    text: str
    error: str = ""


class _Scanner:
    """Cuts a filter string into tokens. `offset` is the index of the next unread character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0

    def peek(self) -> str:
        """The next raw character (white space included, nothing skipped); "" at the end."""
        return self.text[self.offset] if self.offset < len(self.text) else ""

    def scan(self, value: bool = False) -> _Token:
        """The next token. With `value`, an unquoted run reads as a value (right after an
        operator), which admits punctuation a field may not have."""
        text, n = self.text, len(self.text)
        i = self.offset
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            self.offset = n
            return _Token(_Kind.EOF, n, "")
        ch = text[i]
        if ch == "\0":
            self.offset = i + 1
            return _Token(_Kind.ILLEGAL, i, "", "unexpected null")
        if ch in _QUOTES:
            return self._quoted(i)
        if ch in ",.":
            self.offset = i + 1
            return _Token(_Kind.SEPARATOR, i, ch)
        if ch in _OPERATOR_CHARS:
            return self._run(i, _Kind.OPERATOR, _OPERATOR_CHARS.__contains__)
        if value:
            # The first character is taken whatever it is; the rest must be value characters.
            return self._run(i, _Kind.VALUE, _is_value_char, first=True)
        if ch in _FIELD_CHARS:
            return self._run(i, _Kind.FIELD, _FIELD_CHARS.__contains__)
        self.offset = i + 1
        return _Token(_Kind.CHAR, i, ch)

    def _run(self, start: int, kind: _Kind, accept: Callable[[str], bool], first: bool = False
             ) -> _Token:
        text, n = self.text, len(self.text)
        j = start + 1 if first else start
        while j < n and accept(text[j]):
            j += 1
        self.offset = j
        return _Token(kind, start, text[start:j])

    def _quoted(self, start: int) -> _Token:
        """Scan a quoted literal, checking its escapes; the first problem found is reported
        (a NUL counts as soon as it is read, as in containerd's scanner)."""
        text, n = self.text, len(self.text)
        quote = text[start]
        problems: list[str] = []

        def char(i: int) -> str:
            ch = text[i] if i < n else ""
            if ch == "\0":
                problems.append("unexpected null")
            return ch

        def digits(i: int, accept: frozenset[str], count: int) -> int:
            for _ in range(count):
                if not (ch := char(i)) or ch not in accept:
                    problems.append("illegal numeric escape sequence")
                    break  # the offending character is looked at again by the main loop
                i += 1
            return i

        i = start + 1
        while True:
            ch = char(i)
            if ch in ("", "\n", "\0"):
                problems.append("quoted literal not terminated")
                i = min(i + 1, n)
                break
            if ch == quote:
                i += 1
                break
            if ch != "\\":
                i += 1
                continue
            esc = char(i + 1)
            if esc and (esc in _SIMPLE_ESCAPES or esc == quote):
                i += 2
            elif esc and esc in _OCTAL:
                i = digits(i + 1, _OCTAL, 3)
            elif esc and esc in _HEX_WIDTH:
                i = digits(i + 2, _HEX, _HEX_WIDTH[esc])
            else:
                problems.append("illegal escape sequence")
                i += 1  # the escaped character is looked at again by the main loop
        self.offset = i
        if problems:
            return _Token(_Kind.ILLEGAL, start, text[start:i], problems[0])
        return _Token(_Kind.QUOTED, start, text[start:i])


_CHAR_ESCAPES = {"a": 0x07, "b": 0x08, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B,
                 "\\": 0x5C}


def _unquote(literal: str) -> str:
    """The string a scanned quoted literal stands for; ValueError on bad syntax.

    `\\xNN` and octal escapes are bytes (as in Go), so `"\\xc3\\xa9"` is "é"; bytes that do not
    form UTF-8 come back as surrogate escapes, which equal no real string.
    """
    quote, body = literal[0], literal[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("trailing backslash")
        esc = body[i + 1]
        i += 2
        if esc in _CHAR_ESCAPES:
            out.append(_CHAR_ESCAPES[esc])
        elif esc in "'\"|/":
            if esc != quote:
                raise ValueError(f"\\{esc} outside {quote}-quotes")
            out.append(ord(esc))
        elif esc in _HEX_WIDTH:
            width = _HEX_WIDTH[esc]
            digits = body[i:i + width]
            if len(digits) < width or not set(digits) <= _HEX:
                raise ValueError("bad hex escape")
            i += width
            value = int(digits, 16)
            if esc == "x":
                out.append(value)
                continue
            if value > 0x10FFFF:
                raise ValueError("escape beyond Unicode")
            if 0xD800 <= value <= 0xDFFF:
                value = 0xFFFD  # Go encodes a surrogate as the replacement character
            out += chr(value).encode("utf-8")
        elif esc in _OCTAL:
            digits = body[i - 1:i + 2]
            if len(digits) < 3 or not set(digits) <= _OCTAL or int(digits, 8) > 255:
                raise ValueError("bad octal escape")
            i += 2
            out.append(int(digits, 8))
        else:
            raise ValueError(f"unknown escape \\{esc}")
    return out.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = _Scanner(text)

    def error(self, pos: int, reason: str) -> FilterSyntaxError:
        return FilterSyntaxError(self.text, pos, reason)

    def parse(self) -> Filter:
        selectors = [self.selector()]
        while True:
            ch = self.scanner.peek()
            if ch == "":
                return All(tuple(selectors))
            if ch != ",":
                # containerd prints the rune it peeked; a NUL peeks as its "illegal" token.
                shown = "\ufffd" if ch == "\0" else ch
                raise self.error(self.scanner.offset, f"unexpected input: {shown}")
            self.scanner.scan()
            selectors.append(self.selector())

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (",", ""):
            return Selector(fieldpath)
        op = self.operator()
        # Only a regexp may use the / and | quotes, so it need not escape its " characters.
        return Selector(fieldpath, op, self.value(alt_quotes=op is Operator.MATCHES))

    def fieldpath(self) -> tuple[str, ...]:
        fields = [self.field()]
        while self.scanner.peek() == ".":
            self.scanner.scan()
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> str:
        tok = self.scanner.scan()
        if tok.kind is _Kind.FIELD:
            return tok.text
        if tok.kind is _Kind.QUOTED:
            return self.unquote(tok, alt_quotes=False)
        if tok.kind is _Kind.ILLEGAL:
            raise self.error(tok.pos, tok.error)
        raise self.error(tok.pos, "expected field or quoted")

    def operator(self) -> Operator:
        tok = self.scanner.scan()
        if tok.kind is _Kind.OPERATOR:
            if tok.text not in _OPERATORS:
                raise self.error(tok.pos, f"unsupported operator {go_quote(tok.text)}")
            return _OPERATORS[tok.text]
        if tok.kind is _Kind.ILLEGAL:
            raise self.error(tok.pos, tok.error)
        raise self.error(tok.pos, 'expected an operator ("=="|"!="|"~=")')

    def value(self, alt_quotes: bool) -> str:
        tok = self.scanner.scan(value=True)
        if tok.kind in (_Kind.VALUE, _Kind.FIELD):
            return tok.text
        if tok.kind is _Kind.QUOTED:
            return self.unquote(tok, alt_quotes)
        if tok.kind is _Kind.ILLEGAL:
            raise self.error(tok.pos, tok.error)
        raise self.error(tok.pos, "expected value or quoted")

    def unquote(self, tok: _Token, alt_quotes: bool) -> str:
        if not alt_quotes and tok.text[0] != '"':
            raise self.error(tok.pos, "invalid quote encountered")
        try:
            return _unquote(tok.text)
        except ValueError:
            raise self.error(tok.pos, "unquoting failed: quote syntax error") from None
