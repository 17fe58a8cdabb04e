"""Go RE2 regexps in Python's `re`, for the filter language's `~=` operator.

`translate_go_regexp` rewrites one into a Python `re` pattern with the same meaning, and refuses
what Go refuses:
- `$` is end of text (Python's `$` also matches before a final newline); `\\z` is `\\Z`;
- `\\d \\s \\w \\b` and POSIX classes `[[:alpha:]]` are ASCII, as in Go (Python's are Unicode);
- flags `(?imsU)` may appear mid-pattern and apply to the end of the enclosing group; `U`
  (ungreedy) swaps `*`/`*?` and friends; each atom carries its flags as a scoped `(?i:...)`;
- case-insensitive negated classes are folded before negation, as Go does;
- octal `\\123`, `\\x{10FFFF}`, `\\Q...\\E` literals, `(?P<n>...)`/`(?<n>...)` groups work;
- `{` that does not start a valid `{n}`, `{n,}`, `{n,m}` is a literal; counts above 1000 fail;
- Go rejects backreferences, lookaround, possessive and nested repetition (`a**`), `\\C`, and
  unknown escapes; so does the translation (Python would accept several of them);
- `\\pL`, `\\p{Lu}`, `\\P{N}`, `\\p{^L}` work for general categories and `Any` (from Python's
  Unicode tables, which may be a version apart from Go's); script classes (`\\p{Greek}`) are not
  translated and make the regexp fail to compile.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable


class GoRegexpError(ValueError):
    """A regexp Go would refuse, or one whose meaning the translation cannot carry over."""


MAX_RUNE = 0x10FFFF
_Ranges = list[tuple[int, int]]

_PERL_CLASSES: dict[str, _Ranges] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX_CLASSES: dict[str, _Ranges] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_OCTAL = frozenset(string.octdigits)
_HEX = frozenset(string.hexdigits)
_C_ESCAPES = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}


def _normalize(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    merged: _Ranges = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _negate(ranges: Iterable[tuple[int, int]]) -> _Ranges:
    out: _Ranges = []
    nxt = 0
    for lo, hi in _normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_RUNE:
        out.append((nxt, MAX_RUNE))
    return out


@functools.cache
def _categories() -> dict[str, _Ranges]:
    """Code point ranges of every two-letter Unicode general category (built once, on demand)."""
    table: dict[str, _Ranges] = {}
    start, current = 0, unicodedata.category("\0")
    for cp in range(1, MAX_RUNE + 2):
        cat = unicodedata.category(chr(cp)) if cp <= MAX_RUNE else ""
        if cat != current:
            table.setdefault(current, []).append((start, cp - 1))
            start, current = cp, cat
    return table


def _unicode_class(name: str) -> _Ranges:
    if name == "Any":
        return [(0, MAX_RUNE)]
    table = _categories()
    if len(name) == 1 and name in "CLMNPSZ":
        # Go's one-letter classes; its C holds Cc, Cf, Co, Cs but not unassigned (Cn).
        return _normalize(r for cat, rs in table.items() if cat[0] == name and cat != "Cn" for r in rs)
    if len(name) == 2 and name != "Cn" and name in table:
        return list(table[name])
    raise GoRegexpError(f"Unicode class not supported by the translation: `{name}`")


def _lit(cp: int) -> str:
    """One code point as a Python pattern literal, safe inside and outside classes."""
    if cp < 0x80 and chr(cp).isalnum():
        return chr(cp)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _class_text(ranges: _Ranges) -> str:
    if not ranges:
        return "(?!)"  # an empty class matches nothing
    parts = [_lit(lo) if lo == hi else f"{_lit(lo)}-{_lit(hi)}" for lo, hi in ranges]
    return "[" + "".join(parts) + "]"


class _RegexpTranslator:
    """One pass over a Go pattern, emitting Python pattern text atom by atom.

    Every atom is emitted as one Python unit (a char, a class or a group) carrying its own flags,
    so a repetition can follow any of them and no global Python flag is ever needed.
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.flags: frozenset[str] = frozenset()  # of "i", "m", "s", "U"
        self.groups: list[tuple[frozenset[str], int]] = []  # (flags to restore, index in out)
        self.names: set[str] = set()
        self.unit: int | None = None  # where in `out` the last repeatable unit starts
        self.quantified = False  # that unit already ends with a repetition
        self.last_repeat: int | None = None  # where the repetition just read starts in src

    def fail(self, code: str, expr: str) -> GoRegexpError:
        return GoRegexpError(f"error parsing regexp: {code}: `{expr}`")

    def translate(self) -> str:
        src = self.src
        while self.pos < len(src):
            ch = src[self.pos]
            previous_repeat, self.last_repeat = self.last_repeat, None
            if ch == "(":
                if src.startswith("(?", self.pos):
                    self.perl_group()
                else:
                    self.pos += 1
                    self.open("(")
            elif ch == "|":
                self.pos += 1
                self.out.append("|")
                self.unit = None
            elif ch == ")":
                self.close()
            elif ch == "^":
                self.pos += 1
                self.atom("(?m:^)" if "m" in self.flags else r"(?:\A)")
            elif ch == "$":
                self.pos += 1
                self.atom("(?m:$)" if "m" in self.flags else r"(?:\Z)")
            elif ch == ".":
                self.pos += 1
                self.atom("(?s:.)" if "s" in self.flags else ".")
            elif ch == "[":
                ranges, negated = self.char_class()
                self.atom(self.class_pattern(ranges, negated))
            elif ch in "*+?":
                self.repeat(ch, self.pos + 1, previous_repeat)
            elif ch == "{":
                braces = self.braces()
                if braces is None:  # not a repetition: a literal brace
                    self.pos += 1
                    self.literal(ord("{"))
                else:
                    self.repeat(*braces, previous_repeat)
            elif ch == "\\":
                self.escape()
            else:
                self.pos += 1
                self.literal(ord(ch))
        if self.groups:
            raise self.fail("missing closing )", src)
        return "".join(self.out)

    # -- structure

    def atom(self, text: str) -> None:
        self.unit = len(self.out)
        self.quantified = False
        self.out.append(text)

    def literal(self, cp: int) -> None:
        text = _lit(cp)
        ch = chr(cp)
        if "i" in self.flags and ch.lower() != ch.upper():
            text = f"(?i:{text})"
        self.atom(text)

    def open(self, text: str, flags: frozenset[str] | None = None) -> None:
        self.groups.append((self.flags, len(self.out)))
        self.out.append(text)
        if flags is not None:
            self.flags = flags
        self.unit = None

    def close(self) -> None:
        if not self.groups:
            raise self.fail("unexpected )", self.src)
        self.pos += 1
        self.flags, start = self.groups.pop()
        self.out.append(")")
        self.unit = start
        self.quantified = False

    def perl_group(self) -> None:
        """`(?flags)`, `(?flags:...)`, `(?P<name>...)`, `(?<name>...)`; Go has nothing else."""
        src, start = self.src, self.pos
        for opener in ("(?P<", "(?<"):
            if src.startswith(opener, start):
                end = src.find(">", start)
                if end < 0:
                    raise self.fail("invalid named capture", src[start:])
                name = src[start + len(opener):end]
                if not name or not all(c == "_" or (c.isascii() and c.isalnum()) for c in name):
                    raise self.fail("invalid named capture", src[start:end + 1])
                if name in self.names:
                    raise self.fail("duplicate capture group name", name)
                self.names.add(name)
                self.pos = end + 1
                self.open("(")  # names are not needed by a matcher: a plain group
                return
        flags = set(self.flags)
        negative = saw_flag = False
        i = start + 2
        while i < len(src):
            c = src[i]
            i += 1
            if c in "imsU":
                (flags.discard if negative else flags.add)(c)
                saw_flag = True
            elif c == "-" and not negative:
                negative, saw_flag = True, False
            elif c in ":)" and not (negative and not saw_flag):
                self.pos = i
                if c == ":":
                    self.open("(?:", frozenset(flags))
                else:
                    self.flags = frozenset(flags)  # to the end of the enclosing group
                return
            else:
                break
        raise self.fail("invalid or unsupported Perl syntax", src[start:i])

    # -- repetition

    def braces(self) -> tuple[str, int] | None:
        """A `{n}`, `{n,}` or `{n,m}` at pos as (Python quantifier, end), or None if the brace
        does not start one. Counts are validated as Go does."""
        src, start = self.src, self.pos
        m = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}").match(src, start)
        if m is None:
            return None
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (-1 if m.group(3) is None else int(m.group(3)))
        if lo > 1000 or hi > 1000 or (hi >= 0 and lo > hi):
            raise self.fail("invalid repeat count", m.group(0))
        text = f"{{{lo}}}" if hi == lo else (f"{{{lo},}}" if hi < 0 else f"{{{lo},{hi}}}")
        return text, m.end()

    def repeat(self, op: str, after: int, previous_repeat: int | None) -> None:
        src, start = self.src, self.pos
        lazy = after < len(src) and src[after] == "?"
        end = after + 1 if lazy else after
        if previous_repeat is not None:  # Go refuses a** and a*+ (Python would take a*+)
            raise self.fail("invalid nested repetition operator", src[previous_repeat:end])
        if self.unit is None:
            raise self.fail("missing argument to repetition operator", src[start:end])
        if self.quantified:  # e.g. a*(?i)* : repeat the repeated unit as a whole
            body = "".join(self.out[self.unit:])
            del self.out[self.unit:]
            self.out.append(f"(?:{body})")
        greedy = lazy == ("U" in self.flags)
        self.out.append(op if greedy else op + "?")
        self.quantified = True
        self.pos = end
        self.last_repeat = start

    # -- escapes and classes

    def escape(self) -> None:
        src, i = self.src, self.pos
        if i + 1 >= len(src):
            raise self.fail("trailing backslash at end of expression", "")
        c = src[i + 1]
        simple = {"A": r"(?:\A)", "z": r"(?:\Z)", "b": r"(?a:\b)", "B": r"(?a:\B)"}
        if c in simple:
            self.pos = i + 2
            self.atom(simple[c])
        elif c == "Q":  # literal text up to \E (or the end)
            end = src.find("\\E", i + 2)
            text = src[i + 2:] if end < 0 else src[i + 2:end]
            self.pos = len(src) if end < 0 else end + 2
            for ch in text:
                self.literal(ord(ch))
        elif c in "pP":
            ranges, self.pos = self.unicode_class(i)
            self.atom(self.class_pattern(ranges, False))
        elif c in "dDsSwW":
            self.pos = i + 2
            self.atom(self.class_pattern(_PERL_CLASSES[c.lower()], c.isupper()))
        else:
            cp, self.pos = self.escaped_char(i)
            self.literal(cp)

    def escaped_char(self, i: int) -> tuple[int, int]:
        """The code point of the escape at i (a backslash) and the index after it."""
        src, n = self.src, len(self.src)
        if i + 1 >= n:
            raise self.fail("trailing backslash at end of expression", "")
        c = src[i + 1]
        j = i + 2
        if c.isascii() and not c.isalnum():
            return ord(c), j  # escaped punctuation is itself
        if c in _OCTAL and (c == "0" or (j < n and src[j] in _OCTAL)):
            # \0.. or \[1-7] followed by an octal digit; a lone \1 would be a backreference.
            value = int(c)
            for _ in range(2):
                if j < n and src[j] in _OCTAL:
                    value = value * 8 + int(src[j])
                    j += 1
            return value, j
        if c == "x" and j < n:
            if src[j] == "{":
                end = src.find("}", j)
                digits = src[j + 1:end] if end > 0 else ""
                if digits and set(digits) <= _HEX and int(digits, 16) <= MAX_RUNE:
                    return int(digits, 16), end + 1
                raise self.fail("invalid escape sequence", src[i:end + 1 if end > 0 else n])
            digits = src[j:j + 2]
            if len(digits) == 2 and set(digits) <= _HEX:
                return int(digits, 16), j + 2
        if c in _C_ESCAPES:
            return _C_ESCAPES[c], j
        raise self.fail("invalid escape sequence", src[i:j])

    def unicode_class(self, i: int) -> tuple[_Ranges, int]:
        """`\\pL`, `\\p{Lu}`, `\\P{N}`, `\\p{^N}` at i: (ranges, index after)."""
        src = self.src
        negate = src[i + 1] == "P"
        j = i + 2
        if j >= len(src):
            raise self.fail("invalid character class range", src[i:])
        if src[j] == "{":
            end = src.find("}", j)
            if end < 0:
                raise self.fail("invalid character class range", src[i:])
            name, after = src[j + 1:end], end + 1
        else:
            name, after = src[j], j + 1
        if name.startswith("^"):
            negate, name = not negate, name[1:]
        ranges = _unicode_class(name)
        return (_negate(ranges) if negate else ranges), after

    def char_class(self) -> tuple[_Ranges, bool]:
        """The bracketed class at pos: (ranges, negated). `]` first is a literal, as in Go."""
        src, n, start = self.src, len(self.src), self.pos
        i = start + 1
        negated = i < n and src[i] == "^"
        if negated:
            i += 1
        ranges: _Ranges = []
        first = True
        while True:
            if i >= n:
                raise self.fail("missing closing ]", src[start:])
            if src[i] == "]" and not first:
                self.pos = i + 1
                return ranges, negated
            first = False
            if src.startswith("[:", i) and (end := src.find(":]", i + 2)) >= 0:
                name = src[i + 2:end]
                posix = _POSIX_CLASSES.get(name.removeprefix("^"))
                if posix is None:
                    raise self.fail("invalid character class range", src[i:end + 2])
                ranges += _negate(posix) if name.startswith("^") else posix
                i = end + 2
                continue
            if src.startswith(("\\p", "\\P"), i):
                cls, i = self.unicode_class(i)
                ranges += cls
                continue
            if src[i] == "\\" and i + 1 < n and src[i + 1] in "dDsSwW":
                perl = _PERL_CLASSES[src[i + 1].lower()]
                ranges += _negate(perl) if src[i + 1].isupper() else perl
                i += 2
                continue
            range_start = i
            lo, i = self.class_char(i, start)
            hi = lo
            if i + 1 < n and src[i] == "-" and src[i + 1] != "]":  # [a-] is a and -
                hi, i = self.class_char(i + 1, start)
                if hi < lo:
                    raise self.fail("invalid character class range", src[range_start:i])
            ranges.append((lo, hi))

    def class_char(self, i: int, class_start: int) -> tuple[int, int]:
        if i >= len(self.src):
            raise self.fail("missing closing ]", self.src[class_start:])
        if self.src[i] == "\\":
            return self.escaped_char(i)
        return ord(self.src[i]), i + 1

    def class_pattern(self, ranges: _Ranges, negated: bool) -> str:
        ranges = _normalize(ranges)
        if "i" not in self.flags:
            return _class_text(_negate(ranges) if negated else ranges)
        if not negated:
            return f"(?i:{_class_text(ranges)})" if ranges else "(?!)"
        # Go folds case before negating: (?i)[^k] refuses k, K and the Kelvin sign. Python's
        # IGNORECASE over the complement would accept them, so refuse the folded set instead.
        if not ranges:
            return "(?s:.)"
        return f"(?:(?!(?i:{_class_text(ranges)}))(?s:.))"


def translate_go_regexp(pattern: str) -> str:
    """The Python `re` pattern with the meaning of Go RE2 `pattern`; GoRegexpError if Go would
    refuse it (message in Go's words) or the translation cannot carry it (see module doc)."""
    return _RegexpTranslator(pattern).translate()


@functools.lru_cache(maxsize=256)
def compile_go_regexp(pattern: str) -> re.Pattern[str]:
    """Compile a Go RE2 regexp for Python's re (cached: filters recur across requests)."""
    translated = translate_go_regexp(pattern)
    try:
        return re.compile(translated)
    except (re.error, RecursionError, OverflowError) as e:  # something the translation let by
        raise GoRegexpError(f"error parsing regexp: {e}: `{pattern}`") from None
