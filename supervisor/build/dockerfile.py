"""A Dockerfile read into instructions: the official parser's AST, checked and typed.

    df = parse_dockerfile(text)
    df.escape                      # "\\" or "`" (the escape directive)
    for ins in df.instructions:    # Instruction(name="COPY", args=("a", "/b/"), flags={...}, line=3)
        ...

Parsing is buildkit's own parser (the `dockerfile` package wraps moby/buildkit's
`frontend/dockerfile/parser`, see docs/design-notes.md "Dockerfile parsing"): line
continuation, comments, the `escape` and `syntax` directives, JSON versus shell form,
heredocs and line numbers come from it. This module adds what buildkit's `instructions`
package does on top: instruction names checked, flags read as buildkit's BFlags reads them
(`--name=value`, booleans `--name`/`--name=true|false`, repeatable flags), the argument count
of every instruction, ONBUILD triggers parsed as instructions of their own.

Every error is a `DockerfileError` (InvalidArgument) whose message names the line:
`Dockerfile:3: unknown instruction: FOO`.

ONBUILD triggers come from a base image's config, which anyone may have written: each must be
text (no NUL, valid Unicode), parse as exactly one instruction (buildkit: "onbuild trigger
should be a single expression"; a heredoc's body belongs to its instruction) that may be a
trigger (not ONBUILD, FROM or MAINTAINER), and an image has at most MAX_TRIGGERS of them.
Errors quote a trigger shortened to QUOTE_LIMIT characters.

The parser is a Go shared library: importing it starts a Go runtime in this process (five
threads, ~4 MiB, handlers for synchronous signals, SIGPIPE and SIGURG that pass other threads'
signals on). It is imported on first use, so a daemon that never builds never loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dockyard_common.errors import DockyardError, InvalidArgument

DEFAULT_ESCAPE = "\\"

INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)

# Flag kinds as buildkit declares them per instruction (BFlags): "string" takes `=value` once,
# "strings" may repeat, "bool" is `--x`, `--x=true` or `--x=false`.
FLAGS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "FROM": {"platform": "string"},
    "COPY": {"from": "string", "chown": "string", "chmod": "string", "link": "bool", "parents": "bool",
             "exclude": "strings"},
    "ADD": {"chown": "string", "chmod": "string", "link": "bool", "checksum": "string", "keep-git-dir": "bool",
            "exclude": "strings"},
    "RUN": {"mount": "strings", "network": "string", "security": "string"},
    "HEALTHCHECK": {"interval": "string", "timeout": "string", "start-period": "string", "start-interval": "string",
                    "retries": "string"},
})

# Not allowed after ONBUILD (buildkit's ParseOnBuild).
_NOT_TRIGGERS = ("ONBUILD", "FROM", "MAINTAINER")
# Triggers of one base image: each is a step of every build FROM it, so thousands of them would
# hold the daemon for minutes (20 000 LABEL triggers took 3.5 min); real images have a handful.
MAX_TRIGGERS = 256
QUOTE_LIMIT = 80  # characters of a trigger quoted in an error (a trigger may be megabytes long)
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")


class DockerfileError(InvalidArgument):
    """A Dockerfile the builder refuses; the message starts with `Dockerfile:<line>: `."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"Dockerfile:{line}: {message}" if line else f"Dockerfile: {message}")
        self.line = line
        self.detail = message  # without the position


@dataclass(frozen=True)
class Heredoc:
    """`<<NAME` ... `NAME`: `content` as written (leading tabs removed for `<<-NAME`);
    `expand` when NAME was not quoted."""

    name: str
    content: str
    fd: int = 0
    expand: bool = True


@dataclass(frozen=True)
class Instruction:
    """One instruction. `args` are the parser's words (quotes kept in the shell form of the
    key/value instructions: expansion removes them), `json` tells the exec (JSON) form,
    `flags` maps a flag to its value (a list for repeatable flags, a bool for booleans)."""

    name: str
    args: tuple[str, ...]
    line: int
    end_line: int = 0
    json: bool = False
    flags: Mapping[str, Any] = field(default_factory=dict)
    original: str = ""
    heredocs: tuple[Heredoc, ...] = ()
    trigger: Instruction | None = None  # ONBUILD's instruction

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(message, self.line)

    def flag(self, name: str, default: Any = None) -> Any:
        return self.flags.get(name, default)


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str = DEFAULT_ESCAPE
    directives: Mapping[str, str] = field(default_factory=dict)  # lower-cased names: "syntax", "escape", ...


@contextmanager
def at_instruction(ins: Instruction) -> Iterator[None]:
    """Errors of the work an instruction does (a missing COPY source, a bad --chown) name its
    line, and keep their kind (NotFound stays NotFound)."""
    try:
        yield
    except DockerfileError:
        raise
    except DockyardError as e:
        raise type(e)(f"Dockerfile:{ins.line}: {e.message}") from None


def parse_dockerfile(source: str | bytes) -> Dockerfile:
    """Parse and check a Dockerfile; DockerfileError naming the line for what is wrong."""
    text = _decode(source)
    directives = read_directives(text)
    escape = directives.get("escape", DEFAULT_ESCAPE)
    commands = _parse(text)
    return Dockerfile(tuple(_instruction(c, escape) for c in commands), escape, directives)


def parse_triggers(triggers: Any, *, escape: str = DEFAULT_ESCAPE, line: int = 0,
                   source: str = " of the base image") -> list[Instruction]:
    """An image's OnBuild expressions as instructions, run first when a stage starts FROM it
    (the rules in the module docstring).

    `line` is the FROM line that pulled them in: errors in a trigger name it (and `source`)."""
    if not isinstance(triggers, list | tuple):
        raise DockerfileError("the base image's OnBuild must be an array of strings", line)
    if len(triggers) > MAX_TRIGGERS:
        raise DockerfileError(f"the base image has {len(triggers)} ONBUILD triggers, more than the "
                              f"{MAX_TRIGGERS} a build runs", line)
    out: list[Instruction] = []
    for i, expression in enumerate(triggers):
        if not isinstance(expression, str):
            raise DockerfileError(f"ONBUILD trigger {i} of the base image is not a string", line)
        where = f"ONBUILD trigger {quote(expression)}{source}"
        prefix = "" if escape == DEFAULT_ESCAPE else f"# escape={escape}\n"
        try:
            parsed = [_instruction(c, escape) for c in _parse(prefix + expression)]
        except DockerfileError as e:
            detail = e.detail if len(e.detail) <= 4 * QUOTE_LIMIT else e.detail[:4 * QUOTE_LIMIT] + "..."
            raise DockerfileError(f"{where}: {detail}", line) from None
        if len(parsed) != 1:
            raise DockerfileError(f"{where}: a trigger must be one instruction, not {len(parsed)}", line)
        ins = parsed[0]
        if ins.name in _NOT_TRIGGERS:
            raise DockerfileError(f"{ins.name} isn't allowed as an ONBUILD trigger", line)
        out.append(Instruction(ins.name, ins.args, line, line, ins.json, ins.flags, ins.original, ins.heredocs, None))
    return out


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` quoted for an error message, shortened to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def read_directives(text: str) -> dict[str, str]:
    """The parser directives at the top (`# escape=\\``, `# syntax=...`): buildkit reads them
    until the first line that is not one (a blank line or another comment ends them)."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = _DIRECTIVE.match(line)
        if m is None:
            break
        name, value = m.group(1).lower(), m.group(2)
        if name in out:
            raise DockerfileError(f"only one {name} parser directive can be used", number)
        out[name] = value
    escape = out.get("escape")
    if escape is not None and escape not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\", 1)
    return out


def _decode(source: str | bytes) -> str:
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DockerfileError(f"not UTF-8 text (byte {e.start})") from None
    if "\x00" in source:
        raise DockerfileError("contains a NUL byte")
    return source.removeprefix("\ufeff")


def _parse(text: str) -> tuple[Any, ...]:
    import dockerfile  # the Go parser: loaded on first use (module docstring)

    # The Go side reads a C string: it stops at a NUL (the rest silently dropped), and a str
    # that is not valid Unicode (a lone surrogate, which JSON's \udcff gives) crashed the
    # whole process (the wrapper dereferences the NULL its UTF-8 conversion returns).
    if "\0" in text:
        raise DockerfileError("contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DockerfileError(f"not valid Unicode text (character {e.start} is a lone surrogate)") from None
    try:
        return tuple(dockerfile.parse_string(text))
    except dockerfile.GoParseError as e:
        raise DockerfileError(str(e), _error_line(text, str(e))) from None


def _error_line(text: str, message: str) -> int | None:
    """The line a parse error belongs to (the Go error text carries no position): the shortest
    prefix of the file that fails the same way ends there. The parser stops at the first bad
    instruction, so failing is monotonic in the prefix length and a bisection finds it."""
    import dockerfile

    lines = text.splitlines(keepends=True)

    def fails(n: int) -> bool:
        try:
            dockerfile.parse_string("".join(lines[:n]))
        except dockerfile.GoParseError as e:
            return str(e) == message
        return False

    lo, hi = 1, len(lines)
    if not lines or not fails(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _instruction(c: Any, escape: str) -> Instruction:
    name = c.cmd.upper()
    line = c.start_line
    if name not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {c.cmd}", line)
    if name == "ONBUILD":
        return _onbuild(c, escape)
    flags = _flags(name, c.flags, line)
    heredocs = tuple(_heredoc(h, c.original) for h in c.heredocs)
    ins = Instruction(name, tuple(c.value), line, c.end_line, bool(c.json), MappingProxyType(flags), c.original,
                      heredocs)
    _check_arguments(ins)
    return ins


def _onbuild(c: Any, escape: str) -> Instruction:
    expression = _ONBUILD_PREFIX.sub("", c.original, count=1).strip()
    if not expression:
        raise DockerfileError("ONBUILD requires at least one argument", c.start_line)
    trigger = parse_triggers([expression], escape=escape, line=c.start_line, source="")
    return Instruction("ONBUILD", (expression,), c.start_line, c.end_line, False, MappingProxyType({}), c.original,
                       (), trigger[0])


def _heredoc(h: Any, original: str) -> Heredoc:
    # `<<"EOF"` and `<<'EOF'` switch expansion off; `<<-EOF` strips leading tabs (buildkit's
    # heredoc rules; the wrapper hands the content over unchomped).
    name = re.escape(h.name)
    quoted = re.search(r"<<-?\s*([\"'])" + name + r"\1", original) is not None
    chomp = re.search(r"<<-\s*([\"']?)" + name + r"\1", original) is not None
    content = re.sub(r"(?m)^\t+", "", h.content) if chomp else h.content
    return Heredoc(h.name, content, h.file_descriptor, expand=not quoted)


def _flags(name: str, raw: tuple[str, ...], line: int) -> dict[str, Any]:
    """buildkit's BFlags.Parse over the flags the parser split off."""
    known = FLAGS.get(name, {})
    out: dict[str, Any] = {}
    for arg in raw:
        if not arg.startswith("--"):
            raise DockerfileError(f"{name}: arg should start with -- : {arg}", line)
        if arg == "--":
            break
        key, eq, value = arg[2:].partition("=")
        kind = known.get(key)
        if kind is None:
            raise DockerfileError(f"{name}: unknown flag: {key}", line)
        if key in out and kind != "strings":
            raise DockerfileError(f"{name}: duplicate flag specified: {key}", line)
        if kind == "bool":
            if eq and value == "":
                raise DockerfileError(f"{name}: missing a value on flag: {key}", line)
            if value.lower() not in ("", "true", "false"):
                raise DockerfileError(f"{name}: expecting boolean value for flag {key}, not: {value}", line)
            out[key] = value.lower() != "false"
        elif not eq:
            raise DockerfileError(f"{name}: missing a value on flag: {key}", line)
        elif kind == "strings":
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


def _check_arguments(ins: Instruction) -> None:
    """Argument counts and forms, with buildkit's wording."""
    name, args = ins.name, ins.args
    if name == "FROM":
        if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
            raise ins.error("FROM requires either one or three arguments")
    elif name in ("COPY", "ADD"):
        if len(args) < 2 and not (ins.heredocs and len(args) == 1):
            raise ins.error(f"{name} requires at least two arguments, but only one was provided. "
                            "Destination could not be determined")
    elif name in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if len(args) != 1 or not args[0]:
            raise ins.error(f"{name} requires exactly one argument")
    elif name in ("RUN", "CMD", "ENTRYPOINT") and not ins.json:
        if not args or not "".join(args).strip():
            raise ins.error(f"{name} requires at least one argument")
    elif name in ("ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "HEALTHCHECK", "SHELL"):
        if not args:
            raise ins.error(f"{name} requires at least one argument")
    if name == "SHELL" and not ins.json:
        raise ins.error("SHELL requires the arguments to be in JSON form")
    if name in ("ENV", "LABEL"):
        for key in args[0::2]:
            if not key:
                raise ins.error(f"{name} names must not be empty")
    if name == "ARG":
        for word in args:
            if not word.partition("=")[0]:
                raise ins.error("ARG names can not be blank")

