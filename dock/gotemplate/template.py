"""A template: parsed once (lexer, parser), executed again and again (evaluator), with Go's and
Docker's functions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from dock.gotemplate.dockerfuncs import DOCKER_FUNCS
from dock.gotemplate.errors import TemplateError
from dock.gotemplate.evaluator import Break, Continue, State
from dock.gotemplate.gofuncs import GO_FUNCS
from dock.gotemplate.lexer import Lexer
from dock.gotemplate.parser import Dot, Field, Node, Parser, Variable

BUILTINS: dict[str, Any] = {**GO_FUNCS, **DOCKER_FUNCS}


@contextlib.contextmanager
def _bounded_recursion() -> Iterator[None]:
    """Python's own stack, should a template reach it before our bounds: one template error."""
    try:
        yield
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None


class Template:
    """A parsed template; `execute(data)` renders it (again and again, for every row).

    `text_escapes`: the two characters `\\t` and `\\n` in the text between actions become a tab
    and a newline, as Docker's list formats (`docker ps --format '{{.ID}}\\t{{.Names}}'`) do.
    `funcs`: more functions (or replacements) by name; they must be known when parsing."""

    def __init__(self, source: str, *, text_escapes: bool = False, funcs: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.funcs = {**BUILTINS, **(funcs or {})}
        with _bounded_recursion():
            toks = Lexer(source, text_escapes).run()
            self.root = Parser(source, toks, self.funcs).parse()

    def execute(self, data: Any, funcs: Mapping[str, Any] | None = None) -> str:
        """The text for `data`; `funcs` replaces functions for this run (HEADER_FUNCS)."""
        state = State(self.source, {**self.funcs, **(funcs or {})}, data)
        with _bounded_recursion(), contextlib.suppress(Break, Continue):  # the parser keeps those inside range
            state.walk_list(data, self.root)
        return "".join(state.out)

    def fields(self) -> set[str] | None:
        """The top-level names the template may read (`.Names`, `$.Ports`; an over-estimate), so a
        caller can leave out what costs to compute. None: it may read them all (`{{json .}}`, `$`)."""
        names: set[str] = set()
        todo: list[Any] = [self.root]
        while todo:
            node = todo.pop()
            if isinstance(node, Dot) or (isinstance(node, Variable) and node.name == "$" and not node.names):
                return None
            if isinstance(node, Field):
                names.add(node.names[0])
            elif isinstance(node, Variable) and node.name == "$":
                names.add(node.names[0])
            for value in vars(node).values():
                todo.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, Node))
        return names


def render(source: str, data: Any) -> str:
    """Parse and execute once."""
    return Template(source).execute(data)
