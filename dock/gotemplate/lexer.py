"""A template's source as tokens: text between actions, and inside `{{ }}` Go's words, literals and
punctuation, trim markers and comments applied (text/template/parse's lexer)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dock.gotemplate.errors import MAX_DEPTH, fail

SPACE = " \t\r\n"
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?|0[oObB][0-7_]*|"
    r"[0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9_]+)?)i?")
_IDENT = re.compile(r"[^\W\d]\w*")
_ALNUM = re.compile(r"\w*")


@dataclass
class Tok:
    kind: str  # text left right space field dot var string char number bool nil ident keyword | ( ) := = , eof
    val: Any
    pos: int
    src: str = ""


_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}  # \xFF, \uFFFF, \UFFFFFFFF
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(source: str, pos: int, body: str, quote: str) -> str:
    """The value of a Go interpreted string (or character) literal's body (strconv.Unquote)."""
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        esc = body[i + 1:i + 2]
        if esc in _ESCAPES:
            out += _ESCAPES[esc].encode()
            i += 2
            continue
        if esc == quote:
            out += quote.encode()
            i += 2
            continue
        if esc in _HEX_DIGITS:
            size, base = _HEX_DIGITS[esc], 16
            digits = body[i + 2:i + 2 + size]
            i += 2 + size
        elif esc and esc in "01234567":
            size, base, digits = 3, 8, body[i + 1:i + 4]
            i += 1 + size
        else:
            fail(source, pos, f"invalid escape in quoted string: \\{esc}")
        if len(digits) != size or not all(c in "0123456789abcdefABCDEF"[:base if base == 8 else 22] for c in digits):
            fail(source, pos, f"invalid escape in quoted string: \\{esc}{digits}")
        value = int(digits, base)
        if esc in ("u", "U"):
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                fail(source, pos, f"invalid escape in quoted string: \\{esc}{digits} is not a character")
            out += chr(value).encode()
        elif value > 255:
            fail(source, pos, f"invalid escape in quoted string: octal value {digits} over 255")
        else:
            out.append(value)
    return out.decode("utf-8", "replace")


class Lexer:
    def __init__(self, source: str, text_escapes: bool) -> None:
        self.src = source
        self.text_escapes = text_escapes
        self.toks: list[Tok] = []
        self.pos = 0

    def emit(self, kind: str, val: Any, start: int) -> None:
        self.toks.append(Tok(kind, val, start, self.src[start:self.pos]))

    def run(self) -> list[Tok]:
        src = self.src
        trim_next = False
        while True:
            start = self.pos
            at = src.find("{{", self.pos)
            text = src[self.pos:] if at < 0 else src[self.pos:at]
            if trim_next:
                text = text.lstrip(SPACE)
            left_trim = at >= 0 and src.startswith("{{-", at) and src[at + 3:at + 4] in tuple(SPACE)
            if left_trim:
                text = text.rstrip(SPACE)
            if text:
                if self.text_escapes:
                    text = text.replace("\\t", "\t").replace("\\n", "\n")
                self.toks.append(Tok("text", text, start))
            if at < 0:
                self.pos = len(src)
                self.emit("eof", None, self.pos)
                return self.toks
            self.pos = at + (4 if left_trim else 2)
            if left_trim:
                while self.pos < len(src) and src[self.pos] in SPACE:
                    self.pos += 1
            if src.startswith("/*", self.pos):
                trim_next = self.comment(at)
                continue
            self.emit("left", None, at)
            trim_next = self.inside_action(at)

    def comment(self, at: int) -> bool:
        end = self.src.find("*/", self.pos + 2)
        if end < 0:
            fail(self.src, at, "unclosed comment")
        self.pos = end + 2
        rest = self.src[self.pos:]
        if rest.startswith("}}"):
            self.pos += 2
            return False
        if len(rest) >= 4 and rest[0] in SPACE and rest[1:4] == "-}}":
            self.pos += 4
            return True
        fail(self.src, at, "comment ends before closing delimiter")

    def inside_action(self, at: int) -> bool:
        """Tokens up to and including the right delimiter; whether it trims the text after it."""
        src = self.src
        parens = 0
        while True:
            start = self.pos
            if self.pos >= len(src):
                fail(src, at, "unclosed action")
            rest = src[self.pos:self.pos + 4]
            if rest.startswith("}}") or (len(rest) == 4 and rest[0] in SPACE and rest[1:] == "-}}"):
                trim = not rest.startswith("}}")
                if parens:
                    fail(src, start, "unclosed left paren")
                self.pos += 4 if trim else 2
                self.emit("right", None, start)
                return trim
            ch = src[self.pos]
            nxt = src[self.pos + 1:self.pos + 2]
            if ch in SPACE:  # a space right before "-}}" is the trim marker, met above next time
                while self.pos < len(src) and src[self.pos] in SPACE and not src.startswith("-}}", self.pos + 1):
                    self.pos += 1
                if self.pos > start:
                    self.emit("space", None, start)
                continue
            if ch == '"':
                self.emit("string", unquote(src, start, self.quoted('"', "unterminated quoted string"), '"'), start)
            elif ch == "`":
                end = src.find("`", self.pos + 1)
                if end < 0:
                    fail(src, start, "unterminated raw quoted string")
                self.pos = end + 1
                self.emit("string", src[start + 1:end].replace("\r", ""), start)
            elif ch == "'":
                value = unquote(src, start, self.quoted("'", "unterminated character constant"), "'")
                if len(value) != 1:
                    fail(src, start, f"malformed character constant: {src[start:self.pos]}")
                self.emit("char", ord(value), start)
            elif ch == "$":
                self.pos += 1 + len(_ALNUM.match(src, self.pos + 1).group())  # type: ignore[union-attr]
                self.emit("var", src[start:self.pos], start)
            elif ch == "." and not nxt.isdigit():
                name = _ALNUM.match(src, self.pos + 1).group()  # type: ignore[union-attr]
                self.pos += 1 + len(name)
                if name:
                    if name[0].isdigit():
                        fail(src, start, f"bad field name .{name}")
                    self.emit("field", name, start)
                else:
                    self.emit("dot", None, start)
            elif ch.isdigit() or ch == "." or (ch in "+-" and (nxt.isdigit() or nxt == ".")):
                self.number(start)
            elif ch.isalpha() or ch == "_":
                word = _IDENT.match(src, self.pos).group()  # type: ignore[union-attr]
                self.pos += len(word)
                if word in ("true", "false"):
                    self.emit("bool", word == "true", start)
                elif word == "nil":
                    self.emit("nil", None, start)
                elif word in _KEYWORDS:
                    self.emit("keyword", word, start)
                else:
                    self.emit("ident", word, start)
            elif ch == "|":
                self.pos += 1
                self.emit("|", None, start)
            elif ch == "(":
                self.pos += 1
                parens += 1
                if parens > MAX_DEPTH:
                    fail(src, start, f"parentheses nested deeper than {MAX_DEPTH}")
                self.emit("(", None, start)
            elif ch == ")":
                self.pos += 1
                parens -= 1
                if parens < 0:
                    fail(src, start, "unexpected right paren")
                self.emit(")", None, start)
            elif ch == ":" and nxt == "=":
                self.pos += 2
                self.emit(":=", None, start)
            elif ch in "=,":
                self.pos += 1
                self.emit(ch, None, start)
            else:
                fail(src, start, f"unexpected {ch!r} in action")

    def quoted(self, quote: str, unterminated: str) -> str:
        """The body of the literal at pos (its opening quote), backslash escapes skipped, not read;
        pos moves past its closing quote. It may not span lines."""
        src, start = self.src, self.pos
        self.pos += 1
        while self.pos < len(src) and src[self.pos] not in (quote, "\n"):
            self.pos += 2 if src[self.pos] == "\\" else 1
        if self.pos >= len(src) or src[self.pos] != quote:
            fail(src, start, unterminated)
        self.pos += 1
        return src[start + 1:self.pos - 1]

    def number(self, start: int) -> None:
        m = _NUMBER.match(self.src, self.pos)
        text = m.group() if m else ""
        end = self.pos + len(text)
        if not text or self.src[end:end + 1].isalnum() or self.src[end:end + 1] in ("_", "."):
            bad = re.match(r"[+\-.\w]+", self.src[self.pos:])
            fail(self.src, start, f"bad number syntax: {bad.group() if bad else text!r}")
        self.pos = end
        if text.endswith("i"):
            fail(self.src, start, f"complex numbers are not supported: {text}")
        self.emit("number", number_value(self.src, start, text), start)


def number_value(source: str, pos: int, text: str) -> int | float:
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    try:
        if body.startswith(("0x", "0X")) and any(c in body for c in ".pP"):
            return sign * float.fromhex(body.replace("_", ""))
        if re.fullmatch(r"0[0-7_]+", body):
            return sign * int(body, 8)
        try:
            return sign * int(body, 0)
        except ValueError:
            value = float(body)
            if not math.isfinite(value):
                raise ValueError(body) from None
            return sign * value
    except ValueError:
        fail(source, pos, f"bad number syntax: {text!r}")

