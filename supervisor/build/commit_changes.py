"""`docker commit --change`: Dockerfile instructions applied to an image's run config.

Docker joins the changes with newlines, parses them as a Dockerfile and dispatches each
instruction onto a copy of the config (moby's `BuildFromConfig`); this does the same for the
instructions commit accepts:

    CMD, ENTRYPOINT   JSON form (`["a", "b"]`: a JSON array of strings) or shell form (the rest
                      of the line, run by the config's Shell, default `/bin/sh -c`). No
                      variable expansion. ENTRYPOINT clears CMD unless a CMD came before it.
    ENV, LABEL        `k=v k2="v 2"` pairs, or the old `k v...` form (one pair, the value the
                      rest of the line). ENV replaces a variable of the same name in place.
    EXPOSE            ports `80`, `80/udp`, `8000-8002`, `[ip:][hostport:]port[/proto]`: "<port>/<proto>".
    USER, STOPSIGNAL  the rest of the line; a stop signal must name a signal (`SIGTERM`, `TERM`, `9`).
    WORKDIR           the rest of the line, relative to the current working directory.
    VOLUME            a JSON array or whitespace-separated paths.

Values of ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME and STOPSIGNAL go through the Dockerfile
word rules first (`supervisor.build.expand`: quotes removed, escapes applied, `$VAR`,
`${VAR:-word}`, ... expanded) with the config's Env as it stands before the instruction.
Lines ending in a backslash continue; empty lines and `#` comments are skipped; leading
`--flag`s are refused as Docker refuses them (no commit instruction takes one).

Anything else (RUN, COPY, FROM, a typo) is InvalidArgument naming the instruction, as are
a value Docker would refuse (`STOPSIGNAL SIGNOPE`, `EXPOSE 99999`, `ENV =x`, `VOLUME ""`), a
change holding a NUL byte (it would reach a path, execve or the environment, which cannot take
one: the image would be made, then refused by every run), and a VOLUME no container can have
(`/`, /proc, a relative path: `dockyard_common.rundefaults`, the rule `dock run` applies).

    config = apply_changes(["ENV A=1", "CMD [\"sh\"]"], image_config.config)
"""

from __future__ import annotations

import copy
import posixpath
import re
import signal
from collections.abc import Callable, Sequence
from typing import Any

from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.rundefaults import volume_paths
from supervisor.build.expand import expand_word

COMMIT_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "WORKDIR", "VOLUME", "STOPSIGNAL")
DEFAULT_SHELL = ["/bin/sh", "-c"]
ESCAPE = "\\"
_PROTOCOLS = ("tcp", "udp", "sctp")
_CONTINUATION = re.compile(r"\\[ \t]*$")  # an escape at the end of a line joins the next


class _State:
    """The run config being changed, and whether a CMD was given (ENTRYPOINT keeps it then)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.cmd_set = False

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out


def apply_changes(changes: Sequence[str], config: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the run config `config` (the image config's `config` object) with `changes`
    applied in order; InvalidArgument for a change commit does not accept or cannot read."""
    state = _State(copy.deepcopy(config or {}))
    for i, change in enumerate(changes):
        if "\0" in change:
            raise InvalidArgument(f"change {i + 1} contains a NUL byte")
    for instruction, rest in logical_lines("\n".join(changes)):
        handler = _HANDLERS.get(instruction.upper())
        if handler is None:
            raise InvalidArgument(f"{instruction.upper()} is not a valid change command: commit accepts "
                                  f"{', '.join(COMMIT_INSTRUCTIONS)}")
        name = instruction.upper()
        rest = _refuse_flags(name, rest)
        handler(state, name, rest)
    return state.config


def logical_lines(text: str) -> list[tuple[str, str]]:
    """(instruction, rest of the line) for each instruction of a Dockerfile fragment."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped, as Docker does
        continued = _CONTINUATION.search(line)
        if continued is not None:
            pending += line[:continued.start()]
            continue
        pending += line
        _take(pending, out)
        pending = ""
    if pending.strip():
        _take(pending, out)
    return out


def _take(line: str, out: list[tuple[str, str]]) -> None:
    parts = line.strip().split(None, 1)
    if parts:
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))


def _refuse_flags(name: str, rest: str) -> str:
    """Docker reads leading `--name[=value]` words as flags; no commit instruction has any."""
    if rest.startswith("--"):
        flag = rest.split(None, 1)[0][2:].split("=", 1)[0]
        raise InvalidArgument(f"{name}: unknown flag: {flag}")
    return rest


# -- words -------------------------------------------------------------------------------------


def split_words(text: str) -> list[str]:
    """Whitespace-separated words, quotes and escapes kept (buildkit's parseWords)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            word.append(ch)
            escaped = False
            continue
        if ch == ESCAPE:
            word.append(ch)
            escaped = True
            continue
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
            word.append(ch)
            continue
        if ch.isspace():
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(ch)
    if word:
        words.append("".join(word))
    return words


def expand(word: str, env: dict[str, str], where: str) -> str:
    """One word after the Dockerfile word rules (`expand.expand_word`), errors naming the change."""
    try:
        return expand_word(word, env)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from None


def _json_strings(rest: str, name: str) -> list[str] | None:
    """The JSON form's arguments, or None when `rest` is not a JSON array (the shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json_value(rest, name)
    except JsonError:  # (nested past the limit too: the shell form, as any text that is not JSON)
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{name}: when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _one_argument(name: str, rest: str) -> str:
    if not rest:
        raise InvalidArgument(f"{name} requires exactly one argument")
    return rest


# -- instructions ----------------------------------------------------------------------------------


def _command_line(state: _State, name: str, rest: str) -> list[str]:
    if not rest:
        raise InvalidArgument(f"{name} requires at least one argument")
    exec_form = _json_strings(rest, name)
    if exec_form is not None:
        return exec_form
    shell = state.config.get("Shell") or DEFAULT_SHELL
    return [*shell, rest]


def _cmd(state: _State, name: str, rest: str) -> None:
    state.config["Cmd"] = _command_line(state, name, rest)
    state.cmd_set = True


def _entrypoint(state: _State, name: str, rest: str) -> None:
    state.config["Entrypoint"] = _command_line(state, name, rest)
    if not state.cmd_set:
        state.config["Cmd"] = None  # Docker: a new entrypoint drops the old default arguments


def _pairs(name: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """`k=v ...` or the old `k v...` form, expanded (buildkit's parseNameVal, then Expand)."""
    words = split_words(rest)
    if not words:
        raise InvalidArgument(f"{name} requires at least one argument")
    where = f"{name} {rest}"
    if "=" not in words[0]:
        # The old form: one name, the value is the rest of the line.
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise InvalidArgument(f"{name} must have two arguments")
        return [(expand(parts[0], env, where), expand(parts[1].strip(), env, where))]
    pairs = []
    for word in words:
        if "=" not in word:
            raise InvalidArgument(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        key, _, value = word.partition("=")
        key = expand(key, env, where)
        if not key:
            raise InvalidArgument(f"{name} names can not be blank")
        pairs.append((key, expand(value, env, where)))
    return pairs


def _env(state: _State, name: str, rest: str) -> None:
    pairs = _pairs(name, rest, state.env())
    current = list(state.config.get("Env") or [])
    for key, value in pairs:
        entry = f"{key}={value}"
        for i, item in enumerate(current):
            if item.partition("=")[0] == key:
                current[i] = entry
                break
        else:
            current.append(entry)
    state.config["Env"] = current


def _label(state: _State, name: str, rest: str) -> None:
    labels = dict(state.config.get("Labels") or {})
    for key, value in _pairs(name, rest, state.env()):
        labels[key] = value
    state.config["Labels"] = labels


def _port_number(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise InvalidArgument(f"EXPOSE: invalid containerPort: {spec}")
    return int(text)


def parse_port_spec(spec: str) -> list[str]:
    """`[ip:][hostport:]port[-end][/proto]` -> ["port/proto", ...] (Docker's nat.ParsePortSpecs)."""
    rest, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in _PROTOCOLS:
        raise InvalidArgument(f"EXPOSE: invalid proto: {proto}")
    if rest.startswith("["):  # [ipv6]:host:port
        close = rest.find("]")
        rest = rest[close + 1:].lstrip(":") if close >= 0 else rest
    container = rest.rsplit(":", 1)[-1]
    if not container:
        raise InvalidArgument(f"EXPOSE: no port specified: {spec}")
    start_text, dash, end_text = container.partition("-")
    start = _port_number(start_text, spec)
    end = _port_number(end_text, spec) if dash else start
    if end < start:
        raise InvalidArgument(f"EXPOSE: invalid range specified for containerPort: {spec}")
    return [f"{p}/{proto}" for p in range(start, end + 1)]


def _expose(state: _State, name: str, rest: str) -> None:
    words = split_words(rest)
    if not words:
        raise InvalidArgument(f"{name} requires at least one argument")
    env = state.env()
    ports = dict(state.config.get("ExposedPorts") or {})
    for word in words:
        for port in parse_port_spec(expand(word, env, f"{name} {rest}")):
            ports[port] = {}
    state.config["ExposedPorts"] = ports


def _user(state: _State, name: str, rest: str) -> None:
    state.config["User"] = expand(_one_argument(name, rest), state.env(), f"{name} {rest}")


def _workdir(state: _State, name: str, rest: str) -> None:
    path = expand(_one_argument(name, rest), state.env(), f"{name} {rest}")
    if not path:
        raise InvalidArgument(f"{name}: cannot normalize nothing")
    if not path.startswith("/"):
        path = posixpath.normpath(posixpath.join("/", state.config.get("WorkingDir") or "", path))
    state.config["WorkingDir"] = path


def _volume(state: _State, name: str, rest: str) -> None:
    if not rest:
        raise InvalidArgument(f"{name} requires at least one argument")
    listed = _json_strings(rest, name)
    env = state.env()
    paths = listed if listed is not None else [expand(w, env, f"{name} {rest}") for w in split_words(rest)]
    volumes = dict(state.config.get("Volumes") or {})
    for path in paths:
        if not path.strip():
            raise InvalidArgument(f"{name} specified can not be an empty string")
        volume_paths({path: {}}, where="change")  # what `dock run` would refuse, refused now
        volumes[path] = {}
    state.config["Volumes"] = volumes


def check_signal(text: str) -> str:
    """`text` if it names a signal as Docker's signal.ParseSignal reads it; else InvalidArgument."""
    if text.isdigit():
        if int(text) == 0 or int(text) > signal.SIGRTMAX:
            raise InvalidArgument(f"STOPSIGNAL: invalid signal: {text}")
        return text
    name = text.upper().removeprefix("SIG")
    m = re.fullmatch(r"RT(MIN|MAX)([+-]\d+)?", name)
    if m is not None:
        base = signal.SIGRTMIN if m.group(1) == "MIN" else signal.SIGRTMAX
        if signal.SIGRTMIN <= base + int(m.group(2) or 0) <= signal.SIGRTMAX:
            return text
    elif name and f"SIG{name}" in signal.Signals.__members__:
        return text
    raise InvalidArgument(f"STOPSIGNAL: invalid signal: {text}")


def _stopsignal(state: _State, name: str, rest: str) -> None:
    state.config["StopSignal"] = check_signal(expand(_one_argument(name, rest), state.env(), f"{name} {rest}"))


_HANDLERS: dict[str, Callable[[_State, str, str], None]] = {
    "CMD": _cmd, "ENTRYPOINT": _entrypoint, "ENV": _env, "EXPOSE": _expose, "LABEL": _label,
    "USER": _user, "WORKDIR": _workdir, "VOLUME": _volume, "STOPSIGNAL": _stopsignal,
}
