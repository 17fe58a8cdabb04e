"""Executing a parse tree over data, as text/template's exec.go: dot and variables, field chains on
maps (a missing key is `<no value>`) and dataclasses (a missing field is an error), methods (a
callable value), functions (`and`/`or` lazily), pipelines, if/with/range with break/continue.
Work is bounded: MAX_STEPS nodes and MAX_OUTPUT characters per execution."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

from dock.gotemplate.errors import MAX_OUTPUT, MAX_STEPS, fail
from dock.gotemplate.gofuncs import AND, OR
from dock.gotemplate.parser import (
    Action,
    Block,
    Chain,
    Command,
    Dot,
    Field,
    Ident,
    Jump,
    List,
    Literal,
    Nil,
    Node,
    Pipe,
    Text,
    Variable,
)
from dock.gotemplate.values import MISSING, NO_VALUE, go_print, sorted_keys, truth, type_name


class Break(Exception):
    pass


class Continue(Exception):
    pass


class State:
    """One execution: the variables in scope, the output so far, the work done."""

    def __init__(self, source: str, funcs: Mapping[str, Any], data: Any) -> None:
        self.src = source
        self.funcs = funcs
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []
        self.size = 0
        self.steps = 0

    def fail(self, node: Node, message: str) -> NoReturn:
        at = f" at <{node.src.strip()}>" if node.src.strip() else ""
        fail(self.src, node.pos, f"executing{at}: {message}")

    def step(self, node: Node) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.fail(node, f"stopped after {MAX_STEPS} steps (a range too large?)")

    def write(self, node: Node, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            self.fail(node, f"output larger than {MAX_OUTPUT} characters")
        self.out.append(text)

    def var(self, node: Node, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        self.fail(node, f"undefined variable: {name}")

    def set_var(self, node: Node, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        self.fail(node, f"undefined variable: {name}")

    # statements

    def walk_list(self, dot: Any, nodes: List) -> None:
        for node in nodes.nodes:
            self.walk(dot, node)

    def walk(self, dot: Any, node: Node) -> None:
        self.step(node)
        if isinstance(node, Text):
            self.write(node, node.text)
        elif isinstance(node, Action):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.write(node, NO_VALUE if value is MISSING or value is None else go_print(value))
        elif isinstance(node, Block):
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
        elif isinstance(node, Jump):
            raise Break() if node.kind == "break" else Continue()
        else:  # pragma: no cover - the parser makes nothing else
            self.fail(node, f"unknown node {type(node).__name__}")

    def walk_range(self, dot: Any, node: Block) -> None:
        pipe = node.pipe
        value = self.pipeline(dot, Pipe(pipe.pos, pipe.src, [], False, pipe.cmds))
        items: Iterator[tuple[Any, Any]]
        if value is MISSING or value is None:
            items = iter(())
        elif isinstance(value, Mapping):
            items = ((k, value[k]) for k in sorted_keys(value))
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
            except Break:
                break
            except Continue:
                pass
            finally:
                del self.vars[mark:]
        if not ran and node.orelse is not None:
            self.walk_list(dot, node.orelse)

    # expressions

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = MISSING
        for i, cmd in enumerate(pipe.cmds):
            value = self.command(dot, cmd, value if i else MISSING, final_given=i > 0)
        for name in pipe.decl:
            if pipe.assign:
                self.set_var(pipe, name, value)
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, cmd: Command, final: Any, final_given: bool) -> Any:
        self.step(cmd)
        first = cmd.args[0]
        if isinstance(first, Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final, final_given)
        if isinstance(first, Chain):
            return self.chain(dot, first, cmd.args, final, final_given)
        if isinstance(first, Ident):
            return self.function(dot, first, cmd.args, final, final_given)
        if isinstance(first, Variable):
            return self.variable(dot, first, cmd.args, final, final_given)
        if len(cmd.args) > 1 or final_given:
            self.fail(first, f"can't give argument to non-function {first.src}")
        if isinstance(first, Pipe):
            return self.pipeline(dot, first)
        if isinstance(first, Dot):
            return dot
        if isinstance(first, Nil):
            self.fail(first, "nil is not a command")
        assert isinstance(first, Literal)
        return first.value

    def arg(self, dot: Any, node: Node) -> Any:
        self.step(node)
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return None
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Field):
            return self.field_chain(dot, dot, node, node.names, [node], MISSING, False)
        if isinstance(node, Variable):
            return self.variable(dot, node, [node], MISSING, False)
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, Ident):
            return self.function(dot, node, [node], MISSING, False)
        if isinstance(node, Chain):
            return self.chain(dot, node, [node], MISSING, False)
        self.fail(node, f"can't handle {node.src!r} as an argument")  # pragma: no cover

    def variable(self, dot: Any, node: Variable, args: list[Node], final: Any, final_given: bool) -> Any:
        value = self.var(node, node.name)
        if not node.names:
            if len(args) > 1 or final_given:
                self.fail(node, f"can't give argument to non-function {node.src}")
            return value
        return self.field_chain(dot, value, node, node.names, args, final, final_given)

    def chain(self, dot: Any, node: Chain, args: list[Node], final: Any, final_given: bool) -> Any:
        if isinstance(node.node, Nil):
            self.fail(node, f"indirection through explicit nil in {node.src}")
        value = self.arg(dot, node.node)
        return self.field_chain(dot, value, node, node.names, args, final, final_given)

    def field_chain(self, dot: Any, receiver: Any, node: Node, names: list[str], args: list[Node],
                    final: Any, final_given: bool) -> Any:
        for name in names[:-1]:
            receiver = self.field(dot, name, node, [], MISSING, False, receiver)
        return self.field(dot, names[-1], node, args, final, final_given, receiver)

    def field(self, dot: Any, name: str, node: Node, args: list[Node], final: Any, final_given: bool,
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
            return self.call(node, name, value, self.call_args(dot, args, final, final_given))
        if has_args:
            self.fail(node, f"{name} is not a method but has arguments")
        return value

    def function(self, dot: Any, node: Ident, args: list[Node], final: Any, final_given: bool) -> Any:
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
        return self.call(node, node.name, fn, self.call_args(dot, args, final, final_given))

    def call_args(self, dot: Any, args: list[Node], final: Any, final_given: bool) -> list[Any]:
        """A command's arguments after its first word, the previous command's value (`final`) last."""
        return [self.arg(dot, a) for a in args[1:]] + ([final] if final_given else [])

    def call(self, node: Node, name: str, fn: Callable[..., Any], args: list[Any]) -> Any:
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

