"""Tokens into a parse tree, as text/template/parse: actions, pipelines and commands, `if`/`range`/
`with` blocks with `else`, `break`/`continue` only inside a range; variables checked where they
are used, functions known at parse time. Nesting is bounded (MAX_DEPTH).

The tree's nodes (parse/node.go's) keep their offset and source text, for errors; the evaluator
walks them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from dock.gotemplate.errors import MAX_DEPTH, fail
from dock.gotemplate.lexer import Tok

# -- the parse tree --------------------------------------------------------------------------------


@dataclass
class Node:
    pos: int
    src: str


@dataclass
class Text(Node):
    text: str


@dataclass
class Literal(Node):  # string, number, char, bool
    value: Any


@dataclass
class Nil(Node):
    pass


@dataclass
class Dot(Node):
    pass


@dataclass
class Field(Node):
    names: list[str]


@dataclass
class Variable(Node):
    name: str
    names: list[str]  # fields after it: $x.A.B


@dataclass
class Ident(Node):
    name: str


@dataclass
class Chain(Node):
    node: Node
    names: list[str]


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str]
    assign: bool
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class List(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Block(Node):  # if, range, with
    kind: str
    pipe: Pipe
    body: List
    orelse: List | None


@dataclass
class Jump(Node):  # break, continue
    kind: str


# -- the parser ----------------------------------------------------------------------------------


class Parser:
    def __init__(self, source: str, toks: list[Tok], funcs: Mapping[str, Any]) -> None:
        self.src = source
        self.toks = toks
        self.i = 0
        self.funcs = funcs
        self.scopes: list[list[str]] = [["$"]]
        self.depth = 0
        self.loops = 0

    def fail(self, tok: Tok, message: str) -> NoReturn:
        fail(self.src, tok.pos, message)

    def peek(self) -> Tok:
        return self.toks[self.i]

    def next(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def next_nonspace(self) -> Tok:
        while self.peek().kind == "space":
            self.i += 1
        return self.next()

    def peek_nonspace(self) -> Tok:
        return self.toks[self.skip_space(self.i)]

    def skip_space(self, j: int) -> int:
        """The index of the first token from j on that is not space."""
        while self.toks[j].kind == "space":
            j += 1
        return j

    def enter(self, tok: Tok, what: str) -> None:
        """One level deeper (a block, parentheses): refused past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(tok, f"{what} nested deeper than {MAX_DEPTH}")

    def parse(self) -> List:
        body, end = self.list_until()
        if end is not None:
            self.fail(end, f"unexpected {{{{{end.val}}}}}")
        return body

    def list_until(self) -> tuple[List, Tok | None]:
        """Nodes up to `{{end}}` or `{{else}}` (returned, the `{{` and keyword consumed) or EOF (None)."""
        out = List(self.peek().pos, "")
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return out, None
            if tok.kind == "text":
                out.nodes.append(Text(tok.pos, tok.val, tok.val))
                continue
            word = self.peek_nonspace()
            if word.kind == "keyword":
                self.next_nonspace()
                if word.val in ("end", "else"):
                    return out, word
                out.nodes.append(self.keyword(tok, word))
            else:
                pipe = self.pipeline("command", "right")
                out.nodes.append(Action(tok.pos, self.src[tok.pos:self.toks[self.i - 1].pos + 2], pipe))

    def expect_right(self, context: str) -> None:
        tok = self.next_nonspace()
        if tok.kind != "right":
            self.fail(tok, f"unexpected {tok.src or tok.kind!r} in {context}")

    def keyword(self, left: Tok, word: Tok) -> Node:
        if word.val in ("break", "continue"):
            if not self.loops:
                self.fail(word, f"{{{{{word.val}}}}} outside {{{{range}}}}")
            self.expect_right(word.val)
            return Jump(left.pos, word.val, word.val)
        if word.val in ("define", "template", "block"):
            self.fail(word, f"{{{{{word.val}}}}} is not supported")
        return self.block(left, word.val)

    def block(self, left: Tok, kind: str) -> Block:
        self.enter(left, "blocks")
        self.scopes.append([])
        pipe = self.pipeline(kind, "right")
        if kind == "range":
            self.loops += 1
        body, end = self.list_until()
        if kind == "range":
            self.loops -= 1
        orelse: List | None = None
        if end is None:
            self.fail(self.toks[self.i - 1], f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        nxt = self.peek_nonspace()
        if end.val == "else" and nxt.kind == "keyword" and nxt.val == kind and kind in ("if", "with"):
            self.next_nonspace()  # else if / else with
            orelse = List(nxt.pos, "", [self.block(nxt, nxt.val)])  # it ends at our {{end}}
        else:
            if end.val == "else":
                self.expect_right("else")
                orelse, end = self.list_until()
                if end is None or end.val != "end":
                    self.fail(end or self.toks[self.i - 1], f"expected {{{{end}}}} for {{{{{kind}}}}}")
            self.expect_right("end")
        self.scopes.pop()
        self.depth -= 1
        return Block(left.pos, f"{kind} {pipe.src}", kind, pipe, body, orelse)

    def declared(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    def pipeline(self, context: str, end: str) -> Pipe:
        start = self.peek_nonspace()
        decl, assign = self.declarations(context)
        cmds: list[Command] = []
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
            if cmds and isinstance(cmd.args[0], Literal | Nil | Dot):
                self.fail(tok, f"non executable command in pipeline stage {len(cmds) + 1}")
            cmds.append(cmd)
        if not cmds:
            self.fail(start, f"missing value for {context}")
        if not assign:
            self.scopes[-1].extend(decl)
        return Pipe(start.pos, self.src[start.pos:self.toks[self.i - 1].pos], decl, assign, cmds)

    def declarations(self, context: str) -> tuple[list[str], bool]:
        """A pipeline's leading `$x :=`, `$x =` or (in a range) `$i, $v :=`, consumed: the names, and
        whether they are assigned (`=`) rather than declared. None there: nothing is consumed."""
        j = self.skip_space(self.i)
        if self.toks[j].kind != "var":
            return [], False
        k = self.skip_space(j + 1)
        if self.toks[k].kind not in (":=", "=", ","):
            return [], False
        names = [self.toks[j]]
        if self.toks[k].kind == ",":
            if context != "range":
                self.fail(self.toks[k], f"too many declarations in {context}")
            k = self.skip_space(k + 1)
            if self.toks[k].kind != "var":
                self.fail(self.toks[k], "range can only initialize variables")
            names.append(self.toks[k])
            k = self.skip_space(k + 1)
            if self.toks[k].kind not in (":=", "="):
                self.fail(self.toks[k], "expected := after range variables")
        assign = self.toks[k].kind == "="
        for tok in names:
            if tok.val == "$":
                self.fail(tok, "cannot declare or assign $")
            if assign and not self.declared(tok.val):
                self.fail(tok, f"undefined variable {tok.val!r}")
        self.i = k + 1
        return [t.val for t in names], assign

    def command(self, end: str) -> Command:
        start = self.peek_nonspace()
        args: list[Node] = []
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
        return Command(start.pos, self.src[start.pos:self.peek().pos], args)

    def operand(self, tok: Tok, end: str) -> Node:
        node = self.term(tok)
        names: list[str] = []
        while self.peek().kind == "field":
            names.append(self.next().val)
        if not names:
            return node
        src = self.src[tok.pos:self.toks[self.i - 1].pos + len(self.toks[self.i - 1].src)]
        if isinstance(node, Field):
            return Field(node.pos, src, node.names + names)
        if isinstance(node, Variable):
            return Variable(node.pos, src, node.name, node.names + names)
        if isinstance(node, Literal | Dot):
            self.fail(tok, f"unexpected . after term {node.src!r}")
        return Chain(node.pos, src, node, names)

    def term(self, tok: Tok) -> Node:
        kind = tok.kind
        if kind == "ident":
            if tok.val not in self.funcs:
                self.fail(tok, f"function {tok.val!r} not defined")
            return Ident(tok.pos, tok.src, tok.val)
        if kind == "dot":
            return Dot(tok.pos, ".")
        if kind == "nil":
            return Nil(tok.pos, "nil")
        if kind == "var":
            if not self.declared(tok.val):
                self.fail(tok, f"undefined variable {tok.val!r}")
            return Variable(tok.pos, tok.src, tok.val, [])
        if kind == "field":
            return Field(tok.pos, tok.src, [tok.val])
        if kind in ("bool", "number", "string", "char"):
            return Literal(tok.pos, tok.src, tok.val)
        if kind == "(":
            self.enter(tok, "parentheses")
            pipe = self.pipeline("parenthesized pipeline", ")")
            self.depth -= 1
            return pipe
        self.fail(tok, f"unexpected {tok.src or kind!r} in operand")

