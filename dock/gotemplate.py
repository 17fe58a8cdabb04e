"""Go's text/template, the part Docker users write in `--format`, evaluated in Python.

    Template('{{range .Mounts}}{{.Source}} {{end}}').execute({"Mounts": [{"Source": "/a"}]})  # "/a "

Written by hand: PyPI has no maintained pure-Python implementation (the packages there wrap Go
through cgo and need a Go toolchain at install). What is here, with Go's semantics:

- text and actions `{{ }}`, trim markers `{{- ` and ` -}}`, comments `{{/* */}}`;
- field chains `.A.B` on dicts (a missing key is `<no value>` and stays so down the chain) and on
  dataclasses (a missing field is an error); names are case-sensitive; a callable value is a
  method (`.Label "key"`); `$`, `$x := p`, `$x = p`, `range $i, $v := p`;
- pipelines `a | b` (the value goes last into the next command), parenthesised pipelines,
  literals (Go strings with escapes, raw strings, characters, numbers, true, false, nil);
- `if`/`else if`/`else`/`end`, `range` (lists, dicts in sorted key order, integers; `else`,
  `break`, `continue`), `with`/`else with`;
- Go's functions `and or not len index slice print printf println eq ne lt le gt ge html js
  urlquery call`, Docker's `json join split lower upper title truncate pad`.

Not here: `define`/`template`/`block`, complex numbers. Strings are indexed, sliced, measured
(`len`) and truncated by character, not by UTF-8 byte as Go does. Errors are `TemplateError`
("template: LINE:COL: ..."). Work is bounded: nesting depth, evaluation steps and output size.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote

MAX_DEPTH = 100  # nested blocks and parentheses
MAX_STEPS = 1_000_000  # nodes evaluated in one execution
MAX_OUTPUT = 16 * 1024 * 1024  # characters one execution (or one function's result) may produce
NO_VALUE = "<no value>"


class TemplateError(InvalidArgument):
    """A template that does not parse or fails to execute: one line, `template: ...`."""

    def __str__(self) -> str:
        return self.message


class _Missing:
    """Go's invalid reflect.Value: a missing map key, or no value at all (`final` of a first command)."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING: Any = _Missing()

# -- lexer ------------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?|0[oObB][0-7_]*|"
    r"[0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9_]+)?)i?")
_IDENT = re.compile(r"[^\W\d]\w*")
_ALNUM = re.compile(r"\w*")


@dataclass
class _Tok:
    kind: str  # text left right space field dot var string char number bool nil ident keyword | ( ) := = , eof
    val: Any
    pos: int
    src: str = ""


def _position(source: str, pos: int) -> str:
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}"


def _fail(source: str, pos: int, message: str) -> NoReturn:
    raise TemplateError(f"template: {_position(source, pos)}: {message}")


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(source: str, pos: int, body: str, quote: str) -> str:
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
        if esc in ("x", "u", "U"):
            size, base, digits = {"x": 2, "u": 4, "U": 8}[esc], 16, body[i + 2:i + 2 + {"x": 2, "u": 4, "U": 8}[esc]]
            i += 2 + size
        elif esc and esc in "01234567":
            size, base, digits = 3, 8, body[i + 1:i + 4]
            i += 1 + size
        else:
            _fail(source, pos, f"invalid escape in quoted string: \\{esc}")
        if len(digits) != size or not all(c in "0123456789abcdefABCDEF"[:base if base == 8 else 22] for c in digits):
            _fail(source, pos, f"invalid escape in quoted string: \\{esc}{digits}")
        value = int(digits, base)
        if esc in ("u", "U"):
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                _fail(source, pos, f"invalid escape in quoted string: \\{esc}{digits} is not a character")
            out += chr(value).encode()
        elif value > 255:
            _fail(source, pos, f"invalid escape in quoted string: octal value {digits} over 255")
        else:
            out.append(value)
    return out.decode("utf-8", "replace")


class _Lexer:
    def __init__(self, source: str, text_escapes: bool) -> None:
        self.src = source
        self.text_escapes = text_escapes
        self.toks: list[_Tok] = []
        self.pos = 0

    def emit(self, kind: str, val: Any, start: int) -> None:
        self.toks.append(_Tok(kind, val, start, self.src[start:self.pos]))

    def run(self) -> list[_Tok]:
        src = self.src
        trim_next = False
        while True:
            start = self.pos
            at = src.find("{{", self.pos)
            text = src[self.pos:] if at < 0 else src[self.pos:at]
            if trim_next:
                text = text.lstrip(_SPACE)
            left_trim = at >= 0 and src.startswith("{{-", at) and src[at + 3:at + 4] in tuple(_SPACE)
            if left_trim:
                text = text.rstrip(_SPACE)
            if text:
                if self.text_escapes:
                    text = text.replace("\\t", "\t").replace("\\n", "\n")
                self.toks.append(_Tok("text", text, start))
            if at < 0:
                self.pos = len(src)
                self.emit("eof", None, self.pos)
                return self.toks
            self.pos = at + (4 if left_trim else 2)
            if left_trim:
                while self.pos < len(src) and src[self.pos] in _SPACE:
                    self.pos += 1
            if src.startswith("/*", self.pos):
                trim_next = self.comment(at)
                continue
            self.emit("left", None, at)
            trim_next = self.inside_action(at)

    def comment(self, at: int) -> bool:
        end = self.src.find("*/", self.pos + 2)
        if end < 0:
            _fail(self.src, at, "unclosed comment")
        self.pos = end + 2
        rest = self.src[self.pos:]
        if rest.startswith("}}"):
            self.pos += 2
            return False
        if len(rest) >= 4 and rest[0] in _SPACE and rest[1:4] == "-}}":
            self.pos += 4
            return True
        _fail(self.src, at, "comment ends before closing delimiter")

    def inside_action(self, at: int) -> bool:
        """Tokens up to and including the right delimiter; whether it trims the text after it."""
        src = self.src
        parens = 0
        while True:
            start = self.pos
            if self.pos >= len(src):
                _fail(src, at, "unclosed action")
            rest = src[self.pos:self.pos + 4]
            if rest.startswith("}}") or (len(rest) == 4 and rest[0] in _SPACE and rest[1:] == "-}}"):
                trim = not rest.startswith("}}")
                if parens:
                    _fail(src, start, "unclosed left paren")
                self.pos += 4 if trim else 2
                self.emit("right", None, start)
                return trim
            ch = src[self.pos]
            nxt = src[self.pos + 1:self.pos + 2]
            if ch in _SPACE:  # a space right before "-}}" is the trim marker, met above next time
                while self.pos < len(src) and src[self.pos] in _SPACE and not src.startswith("-}}", self.pos + 1):
                    self.pos += 1
                if self.pos > start:
                    self.emit("space", None, start)
                continue
            if ch == '"':
                self.pos += 1
                while self.pos < len(src) and src[self.pos] != '"':
                    if src[self.pos] == "\n":
                        break
                    self.pos += 2 if src[self.pos] == "\\" else 1
                if self.pos >= len(src) or src[self.pos] != '"':
                    _fail(src, start, "unterminated quoted string")
                self.pos += 1
                self.emit("string", _unquote(src, start, src[start + 1:self.pos - 1], '"'), start)
            elif ch == "`":
                end = src.find("`", self.pos + 1)
                if end < 0:
                    _fail(src, start, "unterminated raw quoted string")
                self.pos = end + 1
                self.emit("string", src[start + 1:end].replace("\r", ""), start)
            elif ch == "'":
                self.pos += 1
                while self.pos < len(src) and src[self.pos] not in "'\n":
                    self.pos += 2 if src[self.pos] == "\\" else 1
                if self.pos >= len(src) or src[self.pos] != "'":
                    _fail(src, start, "unterminated character constant")
                self.pos += 1
                value = _unquote(src, start, src[start + 1:self.pos - 1], "'")
                if len(value) != 1:
                    _fail(src, start, f"malformed character constant: {src[start:self.pos]}")
                self.emit("char", ord(value), start)
            elif ch == "$":
                self.pos += 1 + len(_ALNUM.match(src, self.pos + 1).group())  # type: ignore[union-attr]
                self.emit("var", src[start:self.pos], start)
            elif ch == "." and not nxt.isdigit():
                name = _ALNUM.match(src, self.pos + 1).group()  # type: ignore[union-attr]
                self.pos += 1 + len(name)
                if name:
                    if name[0].isdigit():
                        _fail(src, start, f"bad field name .{name}")
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
                    _fail(src, start, f"parentheses nested deeper than {MAX_DEPTH}")
                self.emit("(", None, start)
            elif ch == ")":
                self.pos += 1
                parens -= 1
                if parens < 0:
                    _fail(src, start, "unexpected right paren")
                self.emit(")", None, start)
            elif ch == ":" and nxt == "=":
                self.pos += 2
                self.emit(":=", None, start)
            elif ch in "=,":
                self.pos += 1
                self.emit(ch, None, start)
            else:
                _fail(src, start, f"unexpected {ch!r} in action")

    def number(self, start: int) -> None:
        m = _NUMBER.match(self.src, self.pos)
        text = m.group() if m else ""
        end = self.pos + len(text)
        if not text or self.src[end:end + 1].isalnum() or self.src[end:end + 1] in ("_", "."):
            bad = re.match(r"[+\-.\w]+", self.src[self.pos:])
            _fail(self.src, start, f"bad number syntax: {bad.group() if bad else text!r}")
        self.pos = end
        if text.endswith("i"):
            _fail(self.src, start, f"complex numbers are not supported: {text}")
        self.emit("number", _number_value(self.src, start, text), start)


def _number_value(source: str, pos: int, text: str) -> int | float:
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
        _fail(source, pos, f"bad number syntax: {text!r}")


# -- parse tree ---------------------------------------------------------------------------------------


@dataclass
class _Node:
    pos: int
    src: str


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Literal(_Node):  # string, number, char, bool
    value: Any


@dataclass
class _Nil(_Node):
    pass


@dataclass
class _Dot(_Node):
    pass


@dataclass
class _Field(_Node):
    names: list[str]


@dataclass
class _Variable(_Node):
    name: str
    names: list[str]  # fields after it: $x.A.B


@dataclass
class _Ident(_Node):
    name: str


@dataclass
class _Chain(_Node):
    node: _Node
    names: list[str]


@dataclass
class _Command(_Node):
    args: list[_Node]


@dataclass
class _Pipe(_Node):
    decl: list[str]
    assign: bool
    cmds: list[_Command]


@dataclass
class _Action(_Node):
    pipe: _Pipe


@dataclass
class _List(_Node):
    nodes: list[_Node] = field(default_factory=list)


@dataclass
class _Block(_Node):  # if, range, with
    kind: str
    pipe: _Pipe
    body: _List
    orelse: _List | None


@dataclass
class _Jump(_Node):  # break, continue
    kind: str


class _Parser:
    def __init__(self, source: str, toks: list[_Tok], funcs: Mapping[str, Any]) -> None:
        self.src = source
        self.toks = toks
        self.i = 0
        self.funcs = funcs
        self.scopes: list[list[str]] = [["$"]]
        self.depth = 0
        self.loops = 0

    def fail(self, tok: _Tok, message: str) -> NoReturn:
        _fail(self.src, tok.pos, message)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def next_nonspace(self) -> _Tok:
        while self.peek().kind == "space":
            self.i += 1
        return self.next()

    def peek_nonspace(self) -> _Tok:
        j = self.i
        while self.toks[j].kind == "space":
            j += 1
        return self.toks[j]

    def parse(self) -> _List:
        body, end = self.list_until()
        if end is not None:
            self.fail(end, f"unexpected {{{{{end.val}}}}}")
        return body

    def list_until(self) -> tuple[_List, _Tok | None]:
        """Nodes up to `{{end}}` or `{{else}}` (returned, the `{{` and keyword consumed) or EOF (None)."""
        out = _List(self.peek().pos, "")
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return out, None
            if tok.kind == "text":
                out.nodes.append(_Text(tok.pos, tok.val, tok.val))
                continue
            word = self.peek_nonspace()
            if word.kind == "keyword":
                self.next_nonspace()
                if word.val in ("end", "else"):
                    return out, word
                out.nodes.append(self.keyword(tok, word))
            else:
                pipe = self.pipeline("command", "right")
                out.nodes.append(_Action(tok.pos, self.src[tok.pos:self.toks[self.i - 1].pos + 2], pipe))

    def expect_right(self, context: str) -> None:
        tok = self.next_nonspace()
        if tok.kind != "right":
            self.fail(tok, f"unexpected {tok.src or tok.kind!r} in {context}")

    def keyword(self, left: _Tok, word: _Tok) -> _Node:
        if word.val in ("break", "continue"):
            if not self.loops:
                self.fail(word, f"{{{{{word.val}}}}} outside {{{{range}}}}")
            self.expect_right(word.val)
            return _Jump(left.pos, word.val, word.val)
        if word.val in ("define", "template", "block"):
            self.fail(word, f"{{{{{word.val}}}}} is not supported")
        return self.block(left, word.val)

    def block(self, left: _Tok, kind: str) -> _Block:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(left, f"blocks nested deeper than {MAX_DEPTH}")
        self.scopes.append([])
        pipe = self.pipeline(kind, "right")
        if kind == "range":
            self.loops += 1
        body, end = self.list_until()
        if kind == "range":
            self.loops -= 1
        orelse: _List | None = None
        if end is None:
            self.fail(self.toks[self.i - 1], f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        if end.val == "else":
            nxt = self.peek_nonspace()
            if nxt.kind == "keyword" and nxt.val == kind and kind in ("if", "with"):  # else if / else with
                self.next_nonspace()
                orelse = _List(nxt.pos, "", [self.block(nxt, nxt.val)])  # it ends at our {{end}}
                self.scopes.pop()
                self.depth -= 1
                return _Block(left.pos, f"{kind} {pipe.src}", kind, pipe, body, orelse)
            self.expect_right("else")
            orelse, end = self.list_until()
            if end is None or end.val != "end":
                self.fail(end or self.toks[self.i - 1], f"expected {{{{end}}}} for {{{{{kind}}}}}")
        self.expect_right("end")
        self.scopes.pop()
        self.depth -= 1
        return _Block(left.pos, f"{kind} {pipe.src}", kind, pipe, body, orelse)

    def declared(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    def pipeline(self, context: str, end: str) -> _Pipe:
        start = self.peek_nonspace()
        decl: list[str] = []
        assign = False
        j = self.i
        while self.toks[j].kind == "space":
            j += 1
        if self.toks[j].kind == "var":  # $x := ..., $x = ..., $i, $v := ...
            k = j + 1
            while self.toks[k].kind == "space":
                k += 1
            if self.toks[k].kind in (":=", "=", ","):
                names = [self.toks[j]]
                if self.toks[k].kind == ",":
                    if context != "range":
                        self.fail(self.toks[k], f"too many declarations in {context}")
                    k += 1
                    while self.toks[k].kind == "space":
                        k += 1
                    if self.toks[k].kind != "var":
                        self.fail(self.toks[k], "range can only initialize variables")
                    names.append(self.toks[k])
                    k += 1
                    while self.toks[k].kind == "space":
                        k += 1
                    if self.toks[k].kind not in (":=", "="):
                        self.fail(self.toks[k], "expected := after range variables")
                assign = self.toks[k].kind == "="
                for tok in names:
                    if tok.val == "$":
                        self.fail(tok, "cannot declare or assign $")
                    if assign and not self.declared(tok.val):
                        self.fail(tok, f"undefined variable {tok.val!r}")
                self.i = k + 1
                decl = [t.val for t in names]
        cmds: list[_Command] = []
        while True:
            tok = self.peek_nonspace()
            if tok.kind == end:
                self.next_nonspace()
                break
            if cmds and tok.kind != "|":
                self.fail(tok, f"unexpected {tok.src!r} in {context}")
            if cmds:
                self.next_nonspace()
            cmd = self.command(end)
            if cmds and isinstance(cmd.args[0], _Literal | _Nil | _Dot):
                self.fail(tok, f"non executable command in pipeline stage {len(cmds) + 1}")
            cmds.append(cmd)
        if not cmds:
            self.fail(start, f"missing value for {context}")
        if not assign:
            self.scopes[-1].extend(decl)
        return _Pipe(start.pos, self.src[start.pos:self.toks[self.i - 1].pos], decl, assign, cmds)

    def command(self, end: str) -> _Command:
        start = self.peek_nonspace()
        args: list[_Node] = []
        while True:
            tok = self.peek_nonspace()
            if tok.kind in ("|", end):
                break
            if args and self.peek().kind != "space":
                self.fail(tok, f"unexpected {tok.src!r} in operand")
            if tok.kind in ("right", ")", "eof", ":=", "=", ","):
                self.fail(tok, f"unexpected {tok.src or tok.kind!r} in command")
            self.next_nonspace()
            args.append(self.operand(tok, end))
        if not args:
            self.fail(start, "missing value for command")
        return _Command(start.pos, self.src[start.pos:self.peek().pos], args)

    def operand(self, tok: _Tok, end: str) -> _Node:
        node = self.term(tok)
        names: list[str] = []
        while self.peek().kind == "field":
            names.append(self.next().val)
        if not names:
            return node
        src = self.src[tok.pos:self.toks[self.i - 1].pos + len(self.toks[self.i - 1].src)]
        if isinstance(node, _Field):
            return _Field(node.pos, src, node.names + names)
        if isinstance(node, _Variable):
            return _Variable(node.pos, src, node.name, node.names + names)
        if isinstance(node, _Literal | _Dot):
            self.fail(tok, f"unexpected . after term {node.src!r}")
        return _Chain(node.pos, src, node, names)

    def term(self, tok: _Tok) -> _Node:
        kind = tok.kind
        if kind == "ident":
            if tok.val not in self.funcs:
                self.fail(tok, f"function {tok.val!r} not defined")
            return _Ident(tok.pos, tok.src, tok.val)
        if kind == "dot":
            return _Dot(tok.pos, ".")
        if kind == "nil":
            return _Nil(tok.pos, "nil")
        if kind == "var":
            if not self.declared(tok.val):
                self.fail(tok, f"undefined variable {tok.val!r}")
            return _Variable(tok.pos, tok.src, tok.val, [])
        if kind == "field":
            return _Field(tok.pos, tok.src, [tok.val])
        if kind in ("bool", "number", "string", "char"):
            return _Literal(tok.pos, tok.src, tok.val)
        if kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(tok, f"parentheses nested deeper than {MAX_DEPTH}")
            pipe = self.pipeline("parenthesized pipeline", ")")
            self.depth -= 1
            return pipe
        self.fail(tok, f"unexpected {tok.src or kind!r} in operand")


# -- values ---------------------------------------------------------------------------------------------


def type_name(v: Any) -> str:
    """The Go type a value stands for, as Go's errors name it."""
    if v is MISSING or v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if isinstance(v, list | tuple):
        return "[]interface {}"
    return type(v).__name__


def truth(v: Any) -> bool:
    """Go's truth: false, 0, nil, and empty strings, lists and maps are false."""
    if v is MISSING or v is None:
        return False
    if isinstance(v, bool | int | float | str | Mapping | list | tuple):
        return bool(v)
    return True


def go_float(v: float, verb: str = "g", prec: int = -1) -> str:
    """A float64 as Go's fmt prints it: %v (strconv's shortest 'g': an exponent below 1e-4 and from
    1e+06 up), %e, %f, %g with a precision."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if verb == "f":
        return f"{v:.{6 if prec < 0 else prec}f}"
    if verb == "e":
        return _go_exponent(f"{v:.{6 if prec < 0 else prec}e}")
    if prec >= 0:
        return _go_exponent(f"{v:.{max(prec, 1)}g}")
    d = Decimal(repr(v)).normalize()
    if d == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    exp = d.adjusted()
    sign, digits, _ = d.as_tuple()
    text = "".join(map(str, digits))
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return minus + format(abs(d), "f")


def _go_exponent(text: str) -> str:
    """Python writes e+6 / e-07; Go writes at least two exponent digits: e+06, e-07."""
    m = re.search(r"e([+-])(\d+)$", text)
    if not m:
        return text
    return f"{text[:m.start()]}e{m.group(1)}{int(m.group(2)):02d}"


def go_print(v: Any, depth: int = 0) -> str:
    """A value as Go's fmt %v prints it: maps as map[k:v] (sorted), lists as [a b], nil as <nil>."""
    if depth > MAX_DEPTH:
        return "..."
    if v is MISSING:
        return NO_VALUE
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{go_print(k, depth + 1)}:{go_print(v[k], depth + 1)}"
                                 for k in _sorted_keys(v) if not callable(v[k])) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_print(x, depth + 1) for x in v) + "]"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return "{" + " ".join(go_print(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)) + "}"
    return str(v)


def _sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(m)
    except TypeError:
        return sorted(m, key=lambda k: (type(k).__name__, str(k)))


def _jsonable(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply for json")
    if v is MISSING:
        return None
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return int(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items() if not callable(x)}
    if isinstance(v, list | tuple):
        return [_jsonable(x, depth + 1) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def to_json(v: Any) -> str:
    """Docker's `json`: compact, keys sorted (its contexts marshal maps), no HTML escaping."""
    text = json.dumps(_jsonable(v), ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# -- printf -----------------------------------------------------------------------------------------------

_VERB = re.compile(r"%([-+# 0]*)(?:\[(\d+)\])?(\*|\d+)?(?:\.(?:\[(\d+)\])?(\*|\d*))?(?:\[(\d+)\])?(.?)", re.S)


def _bad(verb: str, v: Any) -> str:
    if v is None or v is MISSING:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(v)}={go_print(v)})"


def _pad(text: str, width: int | None, flags: str, numeric: bool = False) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text + " " * (width - len(text))
    if "0" in flags and numeric:
        sign = text[0] if text[:1] in "+- " and text[:1] else ""
        body = text[len(sign):]
        return sign + "0" * (width - len(text)) + body
    return " " * (width - len(text)) + text


def _format_one(verb: str, flags: str, width: int | None, prec: int | None, v: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        return "..."
    if isinstance(v, list | tuple) and verb in "vdsqxXfegtoc" and verb:
        return "[" + " ".join(_format_one(verb, flags, None, prec, x, depth + 1) for x in v) + "]"
    if isinstance(v, Mapping) and verb in "vdsqxXfegtoc" and verb:
        return "map[" + " ".join(f"{_format_one(verb, flags, None, prec, k, depth + 1)}:"
                                 f"{_format_one(verb, flags, None, prec, v[k], depth + 1)}"
                                 for k in _sorted_keys(v) if not callable(v[k])) + "]"
    numeric = False
    if verb == "v":
        if isinstance(v, float) and not isinstance(v, bool):
            text, numeric = go_float(v, "g", -1 if prec is None else prec), True
        else:
            text = go_print(v, depth)
            numeric = isinstance(v, int) and not isinstance(v, bool)
            if "+" in flags and numeric and v >= 0:
                text = "+" + text
    elif verb == "s":
        if isinstance(v, str):
            text = v if prec is None else v[:prec]
        elif v is None or isinstance(v, bool | int | float):
            return _bad(verb, v)
        else:
            text = go_print(v, depth)
    elif verb == "q":
        if isinstance(v, str):
            text = go_quote(v)
        elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0x10FFFF:
            text = "'" + go_quote(chr(v))[1:-1].replace("'", "\\'").replace('\\"', '"') + "'"
        else:
            return _bad(verb, v)
    elif verb == "T":
        text = "<nil>" if v is None or v is MISSING else type_name(v)
    elif verb == "t":
        if not isinstance(v, bool):
            return _bad(verb, v)
        text = "true" if v else "false"
    elif verb in "dboxXc":
        if isinstance(v, str) and verb in "xX":
            data = v.encode("utf-8", "surrogateescape")
            text = data.hex() if verb == "x" else data.hex().upper()
        elif isinstance(v, float) and not isinstance(v, bool) and verb in "xX":
            text = float.hex(v)
        elif not isinstance(v, int) or isinstance(v, bool):
            return _bad(verb, v)
        elif verb == "c":
            text = chr(v) if 0 <= v <= 0x10FFFF else "\ufffd"
        else:
            spec = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb]
            text = format(abs(v), spec)
            if "#" in flags and verb in "boxX":
                text = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}[verb] + text
            if prec is not None:
                text = text.rjust(prec, "0")
            text = ("-" if v < 0 else "+" if "+" in flags else " " if " " in flags else "") + text
            numeric = True
    elif verb in "efgEFG":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return _bad(verb, v)
        text = go_float(float(v), verb.lower(), -1 if prec is None else prec)
        if verb.isupper():
            text = text.upper()
        if "+" in flags and not text.startswith("-"):
            text = "+" + text
        numeric = True
    else:
        return _bad(verb, v) if verb else "%!(NOVERB)"
    return _pad(text, width, flags, numeric)


def go_sprintf(fmt: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf for the verbs people use: %v %s %q %d %t %x %X %o %b %c %e %f %g, with flags,
    widths, precisions (also `*`) and %[n] argument indexes; Go's %!verb(...) for what does not fit."""
    out: list[str] = []
    argi = 0
    used_index = False
    pos = 0
    while True:
        at = fmt.find("%", pos)
        if at < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:at])
        m = _VERB.match(fmt, at)
        assert m is not None
        pos = m.end()
        flags, idx1, width_text, idx2, prec_text, idx3, verb = m.groups()
        if verb == "%" and not (flags or width_text or prec_text):
            out.append("%")
            continue
        for idx in (idx1,):
            if idx is not None:
                argi, used_index = int(idx) - 1, True

        def star(text: str | None) -> int | None:
            nonlocal argi
            if text is None or text == "":
                return None if text is None else 0
            if text != "*":
                return int(text)
            if argi >= len(args) or not isinstance(args[argi], int) or isinstance(args[argi], bool):
                argi += 1
                return None
            argi += 1
            return int(args[argi - 1])

        width = star(width_text)
        if idx2 is not None:
            argi, used_index = int(idx2) - 1, True
        prec = star(prec_text) if m.group(0).find(".") >= 0 and prec_text is not None else None
        if width is not None and width < 0:
            flags, width = flags + "-", -width
        if (width or 0) > MAX_OUTPUT or (prec or 0) > MAX_OUTPUT:
            raise ValueError(f"width or precision {max(width or 0, prec or 0)} is too large")
        if idx3 is not None:
            argi, used_index = int(idx3) - 1, True
        if verb == "":
            out.append("%!(NOVERB)")
            continue
        if argi >= len(args) or argi < 0:
            out.append(f"%!{verb}(MISSING)" if argi >= 0 else f"%!{verb}(BADINDEX)")
            continue
        out.append(_format_one(verb, flags, width, prec, args[argi]))
        argi += 1
    if not used_index and argi < len(args):
        extra = ", ".join(f"{type_name(a)}={go_print(a)}" if a is not None else "<nil>" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


# -- functions -------------------------------------------------------------------------------------------


def _go_sprint(args: list[Any]) -> str:
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_print(None if a is MISSING else a))
    return "".join(out)


def _go_sprintln(args: list[Any]) -> str:
    return " ".join(go_print(None if a is MISSING else a) for a in args) + "\n"


def _length(v: Any) -> int:
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise ValueError(f"len of type {type_name(v)}")


def _int_arg(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ValueError(f"cannot index slice/array with type {type_name(v)}" if what == "index"
                         else f"{what} must be an integer, not {type_name(v)}")
    return v


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is MISSING or item is None:
            raise ValueError("index of untyped nil")
        if isinstance(item, Mapping):
            if key in item:
                item = item[key]
            else:  # Go: the zero value of the element type; a map of strings gives ""
                item = "" if all(isinstance(x, str) for x in item.values()) and item else MISSING
        elif isinstance(item, list | tuple | str):
            i = _int_arg(key, "index")
            if not 0 <= i < len(item):
                raise ValueError(f"index out of range: {i}")
            item = ord(item[i]) if isinstance(item, str) else item[i]
        else:
            raise ValueError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *idx: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise ValueError(f"can't slice item of type {type_name(item)}")
    if len(idx) > 3 or (len(idx) == 3 and isinstance(item, str)):
        raise ValueError(f"too many slice indexes: {len(idx)}")
    n = len(item)
    bounds = [_int_arg(i, "index") for i in idx]
    lo = bounds[0] if bounds else 0
    hi = bounds[1] if len(bounds) > 1 else n
    if len(bounds) == 3 and not hi <= bounds[2] <= n:
        raise ValueError(f"index out of range: {bounds[2]}")
    if not 0 <= lo <= n or not lo <= hi <= n:
        raise ValueError(f"invalid slice index: {lo} > {hi}" if lo > hi else f"index out of range: {max(lo, hi)}")
    out = item[lo:hi]
    return list(out) if isinstance(out, tuple) else out


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return True
    return type(a) is type(b) or (isinstance(a, str) and isinstance(b, str))


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("missing argument for comparison")
    a = None if a is MISSING else a
    for b in others:
        b = None if b is MISSING else b
        if a is None or b is None:
            if a is b:
                return True
            continue
        if isinstance(a, Mapping | list | tuple) or isinstance(b, Mapping | list | tuple):
            raise ValueError(f"non-comparable type {type_name(a if isinstance(a, Mapping | list | tuple) else b)}")
        if not _comparable(a, b):
            raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
        if a == b:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    for v in (a, b):
        if v is None or v is MISSING or isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"invalid type for comparison: {type_name(v)}")
    if not _comparable(a, b):
        raise ValueError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
    return a, b


def _lt(a: Any, b: Any) -> bool:
    x, y = _ordered(a, b)
    return bool(x < y)


def _le(a: Any, b: Any) -> bool:
    x, y = _ordered(a, b)
    return bool(x <= y)


def _gt(a: Any, b: Any) -> bool:
    x, y = _ordered(a, b)
    return bool(x > y)


def _ge(a: Any, b: Any) -> bool:
    x, y = _ordered(a, b)
    return bool(x >= y)


def _string(v: Any, fn: str) -> str:
    if isinstance(v, str):
        return v
    if v is MISSING or v is None:
        raise ValueError(f"{fn}: want a string, got nil")
    return go_print(v)


def _format_string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"wrong type for value; expected string; got {type_name(v)}")
    return v


def _join(items: Any, sep: Any) -> str:
    if not isinstance(items, list | tuple):
        raise ValueError(f"join: want a list, got {type_name(items)}")
    return _string(sep, "join").join(_string(x, "join") for x in items)


def _split(text: Any, sep: Any) -> list[str]:
    text, sep = _string(text, "split"), _string(sep, "split")
    return list(text) if sep == "" else text.split(sep)


def _title(text: Any) -> str:
    """Go's strings.Title: the first letter of every word upper case, the rest as it was."""
    out: list[str] = []
    prev = " "
    for ch in _string(text, "title"):
        out.append(ch.upper() if not (prev.isalnum() or prev == "_" or prev == "'") else ch)
        prev = ch
    return "".join(out)


def _truncate(text: Any, length: Any) -> str:
    text = _string(text, "truncate")
    n = _int_arg(length, "truncate length")
    return text if len(text) < n else text[:max(n, 0)]


def _pad_func(text: Any, prefix: Any, suffix: Any) -> str:
    text = _string(text, "pad")
    before, after = _int_arg(prefix, "pad"), _int_arg(suffix, "pad")
    if before + after > MAX_OUTPUT:
        raise ValueError("pad: too much padding")
    return "" if text == "" else " " * max(before, 0) + text + " " * max(after, 0)


def _js(*args: Any) -> str:
    text = _go_sprint(list(args))
    table = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
             "=": "\\u003D", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(table.get(c, c if c.isprintable() else f"\\u{ord(c):04X}") for c in text)


def _call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise ValueError(f"non-function of type {type_name(fn)}")
    return fn(*args)


class _Lazy:
    """Marks `and`/`or`: their arguments are evaluated one by one, as Go does."""


AND, OR = _Lazy(), _Lazy()

BUILTINS: dict[str, Any] = {
    "and": AND, "or": OR, "not": lambda v: not truth(v), "len": _length, "index": _index, "slice": _slice,
    "print": lambda *a: _go_sprint(list(a)), "println": lambda *a: _go_sprintln(list(a)),
    "printf": lambda fmt, *a: go_sprintf(_format_string(fmt), list(a)),
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge,
    "html": lambda *a: html.escape(_go_sprint(list(a))).replace("&#x27;", "&#39;"),
    "urlquery": lambda *a: urllib.parse.quote_plus(_go_sprint(list(a))), "js": _js, "call": _call,
    # Docker's (cli/templates/templates.go)
    "json": to_json, "join": _join, "split": _split, "lower": lambda s: _string(s, "lower").lower(),
    "upper": lambda s: _string(s, "upper").upper(), "title": _title, "truncate": _truncate, "pad": _pad_func,
}

# Docker's HeaderFunctions: rendering a table's header row, its functions leave the header as it is.
HEADER_FUNCS: dict[str, Any] = {
    "json": lambda v: v, "split": lambda v, _s: v, "join": lambda v, _s: v, "title": lambda v: v,
    "lower": lambda v: v, "upper": lambda v: v, "truncate": lambda v, _n: v, "pad": lambda v, _a, _b: v,
}


# -- execution -----------------------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _State:
    def __init__(self, source: str, funcs: Mapping[str, Any], data: Any) -> None:
        self.src = source
        self.funcs = funcs
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []
        self.size = 0
        self.steps = 0

    def fail(self, node: _Node, message: str) -> NoReturn:
        at = f" at <{node.src.strip()}>" if node.src.strip() else ""
        _fail(self.src, node.pos, f"executing{at}: {message}")

    def step(self, node: _Node) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.fail(node, f"stopped after {MAX_STEPS} steps (a range too large?)")

    def write(self, node: _Node, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            self.fail(node, f"output larger than {MAX_OUTPUT} characters")
        self.out.append(text)

    def var(self, node: _Node, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        self.fail(node, f"undefined variable: {name}")

    def set_var(self, node: _Node, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        self.fail(node, f"undefined variable: {name}")

    # statements

    def walk_list(self, dot: Any, nodes: _List) -> None:
        for node in nodes.nodes:
            self.walk(dot, node)

    def walk(self, dot: Any, node: _Node) -> None:
        self.step(node)
        if isinstance(node, _Text):
            self.write(node, node.text)
        elif isinstance(node, _Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.write(node, NO_VALUE if value is MISSING or value is None else go_print(value))
        elif isinstance(node, _Block):
            mark = len(self.vars)
            try:
                if node.kind == "range":
                    self.walk_range(dot, node)
                else:
                    value = self.pipeline(dot, node.pipe)
                    if truth(value):
                        self.walk_list(value if node.kind == "with" else dot, node.body)
                    elif node.orelse is not None:
                        self.walk_list(dot, node.orelse)
            finally:
                del self.vars[mark:]
        elif isinstance(node, _Jump):
            raise _Break() if node.kind == "break" else _Continue()
        else:  # pragma: no cover - the parser makes nothing else
            self.fail(node, f"unknown node {type(node).__name__}")

    def walk_range(self, dot: Any, node: _Block) -> None:
        pipe = node.pipe
        value = self.pipeline(dot, _Pipe(pipe.pos, pipe.src, [], False, pipe.cmds))
        items: Iterator[tuple[Any, Any]]
        if value is MISSING or value is None:
            items = iter(())
        elif isinstance(value, Mapping):
            items = ((k, value[k]) for k in _sorted_keys(value))
        elif isinstance(value, list | tuple):
            items = iter(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if pipe.decl and len(pipe.decl) > 1:
                self.fail(node, "can't use range over int with two variables")
            items = ((i, i) for i in range(value))
        else:
            self.fail(node, f"range can't iterate over {go_print(value)}")
        ran = False
        mark = len(self.vars)
        for key, elem in items:
            ran = True
            self.step(node)
            if pipe.decl:
                if pipe.assign:
                    if len(pipe.decl) == 2:
                        self.set_var(node, pipe.decl[0], key)
                    self.set_var(node, pipe.decl[-1], elem)
                elif len(pipe.decl) == 2:
                    self.vars.append((pipe.decl[0], key))
                    self.vars.append((pipe.decl[1], elem))
                else:
                    self.vars.append((pipe.decl[0], elem))
            try:
                self.walk_list(elem, node.body)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]
        if not ran and node.orelse is not None:
            self.walk_list(dot, node.orelse)

    # expressions

    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        value: Any = MISSING
        for i, cmd in enumerate(pipe.cmds):
            value = self.command(dot, cmd, value if i else MISSING, final_given=i > 0)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(pipe, name, value)
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, cmd: _Command, final: Any, final_given: bool) -> Any:
        self.step(cmd)
        first = cmd.args[0]
        if isinstance(first, _Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final, final_given)
        if isinstance(first, _Chain):
            return self.chain(dot, first, cmd.args, final, final_given)
        if isinstance(first, _Ident):
            return self.function(dot, first, cmd.args, final, final_given)
        if isinstance(first, _Variable):
            return self.variable(dot, first, cmd.args, final, final_given)
        if len(cmd.args) > 1 or final_given:
            self.fail(first, f"can't give argument to non-function {first.src}")
        if isinstance(first, _Pipe):
            return self.pipeline(dot, first)
        if isinstance(first, _Dot):
            return dot
        if isinstance(first, _Nil):
            self.fail(first, "nil is not a command")
        assert isinstance(first, _Literal)
        return first.value

    def arg(self, dot: Any, node: _Node) -> Any:
        self.step(node)
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Field):
            return self.field_chain(dot, dot, node, node.names, [node], MISSING, False)
        if isinstance(node, _Variable):
            return self.variable(dot, node, [node], MISSING, False)
        if isinstance(node, _Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, _Ident):
            return self.function(dot, node, [node], MISSING, False)
        if isinstance(node, _Chain):
            return self.chain(dot, node, [node], MISSING, False)
        self.fail(node, f"can't handle {node.src!r} as an argument")  # pragma: no cover

    def variable(self, dot: Any, node: _Variable, args: list[_Node], final: Any, final_given: bool) -> Any:
        value = self.var(node, node.name)
        if not node.names:
            if len(args) > 1 or final_given:
                self.fail(node, f"can't give argument to non-function {node.src}")
            return value
        return self.field_chain(dot, value, node, node.names, args, final, final_given)

    def chain(self, dot: Any, node: _Chain, args: list[_Node], final: Any, final_given: bool) -> Any:
        if isinstance(node.node, _Nil):
            self.fail(node, f"indirection through explicit nil in {node.src}")
        value = self.arg(dot, node.node)
        return self.field_chain(dot, value, node, node.names, args, final, final_given)

    def field_chain(self, dot: Any, receiver: Any, node: _Node, names: list[str], args: list[_Node],
                    final: Any, final_given: bool) -> Any:
        for name in names[:-1]:
            receiver = self.field(dot, name, node, [], MISSING, False, receiver)
        return self.field(dot, names[-1], node, args, final, final_given, receiver)

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any, final_given: bool,
              receiver: Any) -> Any:
        has_args = len(args) > 1 or final_given
        if receiver is MISSING or receiver is None:
            return MISSING
        if isinstance(receiver, Mapping):
            if name not in receiver:
                if has_args:
                    self.fail(node, f"{name} is not a method but has arguments")
                return MISSING
            value = receiver[name]
        elif (dataclasses.is_dataclass(receiver) and not isinstance(receiver, type)
              and not name.startswith("_") and hasattr(receiver, name)):
            value = getattr(receiver, name)
        else:
            self.fail(node, f"can't evaluate field {name} in type {type_name(receiver)}")
        if callable(value):  # a method: .Label "key"
            call_args = [self.arg(dot, a) for a in args[1:]] + ([final] if final_given else [])
            return self.call(node, name, value, call_args)
        if has_args:
            self.fail(node, f"{name} is not a method but has arguments")
        return value

    def function(self, dot: Any, node: _Ident, args: list[_Node], final: Any, final_given: bool) -> Any:
        fn = self.funcs[node.name]
        if fn is AND or fn is OR:
            operands: list[Any] = [lambda a=a: self.arg(dot, a) for a in args[1:]]
            if final_given:
                operands.append(lambda: final)
            if not operands:
                self.fail(node, f"wrong number of args for {node.name}: want at least 1 got 0")
            value: Any = MISSING
            for get in operands:
                value = get()
                if truth(value) != (fn is AND):
                    return value
            return value
        call_args = [self.arg(dot, a) for a in args[1:]] + ([final] if final_given else [])
        return self.call(node, node.name, fn, call_args)

    def call(self, node: _Node, name: str, fn: Callable[..., Any], args: list[Any]) -> Any:
        try:
            result = fn(*args)
        except TypeError as exc:
            if "positional argument" in str(exc) or "argument" in str(exc):
                self.fail(node, f"wrong number of args for {name}: got {len(args)}")
            self.fail(node, f"error calling {name}: {exc}")
        except (ValueError, KeyError, IndexError, OverflowError) as exc:
            self.fail(node, f"error calling {name}: {exc}")
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            self.fail(node, f"error calling {name}: result larger than {MAX_OUTPUT} characters")
        return result


class Template:
    """A parsed template; `execute(data)` renders it (again and again, for every row).

    `text_escapes`: the two characters `\\t` and `\\n` in the text between actions become a tab
    and a newline, as Docker's list formats (`docker ps --format '{{.ID}}\\t{{.Names}}'`) do.
    `funcs`: more functions (or replacements) by name; they must be known when parsing."""

    def __init__(self, source: str, *, text_escapes: bool = False, funcs: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.funcs = {**BUILTINS, **(funcs or {})}
        try:
            toks = _Lexer(source, text_escapes).run()
            self.root = _Parser(source, toks, self.funcs).parse()
        except RecursionError:
            raise TemplateError("template: nested too deeply") from None

    def execute(self, data: Any, funcs: Mapping[str, Any] | None = None) -> str:
        """The text for `data`; `funcs` replaces functions for this run (HEADER_FUNCS)."""
        state = _State(self.source, {**self.funcs, **(funcs or {})}, data)
        try:
            state.walk_list(data, self.root)
        except RecursionError:
            raise TemplateError("template: nested too deeply") from None
        except (_Break, _Continue):  # pragma: no cover - the parser keeps them inside range
            pass
        return "".join(state.out)

    def fields(self) -> set[str] | None:
        """The top-level names the template may read (`.Names`, `$.Ports`; an over-estimate), so a
        caller can leave out what costs to compute. None: it may read them all (`{{json .}}`, `$`)."""
        names: set[str] = set()
        todo: list[Any] = [self.root]
        while todo:
            node = todo.pop()
            if isinstance(node, _Dot) or (isinstance(node, _Variable) and node.name == "$" and not node.names):
                return None
            if isinstance(node, _Field):
                names.add(node.names[0])
            elif isinstance(node, _Variable) and node.name == "$":
                names.add(node.names[0])
            for value in vars(node).values():
                todo.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, _Node))
        return names


def render(source: str, data: Any) -> str:
    """Parse and execute once."""
    return Template(source).execute(data)
