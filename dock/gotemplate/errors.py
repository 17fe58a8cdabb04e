"""A template's one error, `template: LINE:COL: message`, and the bounds on its work."""

from __future__ import annotations

from typing import NoReturn

from dockyard_common.errors import InvalidArgument

MAX_DEPTH = 100  # nested blocks and parentheses
MAX_STEPS = 1_000_000  # nodes evaluated in one execution
MAX_OUTPUT = 16 * 1024 * 1024  # characters one execution (or one function's result) may produce


class TemplateError(InvalidArgument):
    """A template that does not parse or fails to execute: one line, `template: ...`."""

    def __str__(self) -> str:
        return self.message


def position(source: str, pos: int) -> str:
    """`LINE:COL` of an offset into the template, both from 1."""
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}"


def fail(source: str, pos: int, message: str) -> NoReturn:
    raise TemplateError(f"template: {position(source, pos)}: {message}")
