"""The state of one stage while its instructions run: the image config, ARGs, what expands.

    state = StageState.start(base_config, plan, stage)   # base_config: the base image's config JSON
    for ins in stage.instructions:
        if ins.name in CONFIG_INSTRUCTIONS:
            state.apply(ins)                   # ENV, ARG, WORKDIR, USER, CMD, ... change state.config
        else:                                  # RUN / COPY / ADD: the executor's, with
            state.expansion_env()              #   the words expanded from this,
            state.run_env()                    #   RUN's environment, ARGs included

`state.config` is the image config JSON (Docker's schema: `config.Env`, `Cmd`, `Entrypoint`,
`WorkingDir`, `User`, `ExposedPorts`, `Labels`, `Volumes`, `StopSignal`, `Healthcheck`,
`Shell`, `OnBuild`; the top-level `author`). Effects as buildkit dispatches them:
- ENV sets variables (replacing one of the same name in place); ENV beats ARG in expansion.
- ARG declares a build variable: its value is `--build-arg`, else its default, else the
  global ARG of that name. It is in RUN's environment and expands later words, but is not
  in the image config. Predefined proxy args reach RUN without an ARG line.
- WORKDIR joins a relative path to the current one; CMD/ENTRYPOINT in shell form run through
  SHELL (default `/bin/sh -c`); ENTRYPOINT clears a CMD inherited from the base image.
- HEALTHCHECK: `NONE`, or `CMD` with --interval/--timeout/--start-period/--start-interval
  (Go durations, at least 1ms, stored as nanoseconds) and --retries.
- ONBUILD appends its trigger to OnBuild; MAINTAINER sets `author`.
Values go through `expand.expand_word` where buildkit expands them (see that module).
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard_common.errors import InvalidArgument, Unimplemented

from .commit_changes import check_signal, parse_port_spec
from .copy import destination
from .dockerfile import Dockerfile, Instruction, parse_triggers
from .expand import ExpandError, expand_word
from .stages import PLATFORM_ARGS, PROXY_ARGS, BuildPlan, Stage, arg_pairs

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG_INSTRUCTIONS = frozenset({"ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL", "VOLUME",
                                 "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER"})
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
_MIN_INTERVAL = 1_000_000  # 1ms, buildkit's minimum for the healthcheck durations
_HEREDOC_WORD = re.compile(r"<<-?([\"']?)([A-Za-z0-9_]+)\1")


@dataclass(frozen=True)
class CopyArgs:
    """A COPY/ADD with its words expanded: what `copy.py` needs."""

    sources: tuple[str, ...]  # paths (in the context, or the --from root) and, for ADD, URLs
    inline: tuple[tuple[str, str], ...]  # heredoc files: (name, content after expansion)
    dest: str  # absolute (WORKDIR applied); a trailing `/` kept
    chown: str | None
    chmod: str | None
    checksum: str | None  # ADD --checksum


def empty_image_config() -> dict[str, Any]:
    """What `FROM scratch` starts from (buildkit's emptyImage: a PATH and WorkingDir `/`)."""
    return {"config": {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}, "rootfs": {"type": "layers",
                                                                                     "diff_ids": []}}


class StageState:
    def __init__(self, config: dict[str, Any], *, escape: str = "\\", build_args: Mapping[str, str] | None = None,
                 global_args: Mapping[str, str] | None = None, declared_globals: frozenset[str] = frozenset()) -> None:
        self.image = config  # the whole image config JSON
        self.image.setdefault("config", {})
        self.escape = escape
        self.build_args = dict(build_args or {})
        self.global_args = dict(global_args or {})
        self.declared_globals = declared_globals
        self.args: dict[str, str] = {}  # ARGs declared in this stage that have a value
        self.cmd_set = False

    @classmethod
    def start(cls, base_config: dict[str, Any] | None, plan: BuildPlan, stage: Stage) -> StageState:
        """The state at the top of `stage`: a copy of its base's config (scratch's when None)."""
        image = copy.deepcopy(base_config) if base_config is not None else empty_image_config()
        return cls(image, escape=plan.escape, build_args=plan.build_args, global_args=plan.global_args,
                   declared_globals=plan.declared_globals)

    @property
    def config(self) -> dict[str, Any]:
        return self.image["config"]  # type: ignore[no-any-return]

    # -- variables -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def expansion_env(self) -> dict[str, str]:
        """What `$NAME` means here: the stage's ARGs, overridden by ENV."""
        return {**self.args, **self.env()}

    def run_env(self) -> list[str]:
        """RUN's environment: the config's Env, then ARGs (and proxy build args) ENV does not set."""
        env = self.env()
        out = list(self.config.get("Env") or [])
        extra = dict(self.args)
        for name in PROXY_ARGS:
            if name in self.build_args and name not in extra:
                extra[name] = self.build_args[name]
        out += [f"{k}={v}" for k, v in extra.items() if k not in env]
        return out

    def expand(self, ins: Instruction, word: str) -> str:
        try:
            return expand_word(word, self.expansion_env(), escape=self.escape)
        except ExpandError as e:
            raise ins.error(f"{ins.name}: {e.message}") from None

    def copy_args(self, ins: Instruction) -> CopyArgs:
        """COPY/ADD words and flags expanded as buildkit expands them; heredoc sources
        (`COPY <<EOF /dest`) become inline files, their text expanded unless the delimiter
        was quoted."""
        if ins.name not in ("COPY", "ADD"):
            raise ins.error(f"{ins.name} is not COPY or ADD")
        for flag in ("parents", "exclude"):
            if ins.flag(flag):
                raise Unimplemented(f"Dockerfile:{ins.line}: {ins.name} --{flag} is not supported yet")
        heredocs = {h.name: h for h in ins.heredocs}
        *raw_sources, raw_dest = ins.args
        dest_heredoc = _HEREDOC_WORD.fullmatch(raw_dest)
        if dest_heredoc is not None and dest_heredoc.group(2) in heredocs:
            raise ins.error(f"{ins.name} cannot accept a heredoc as a destination")
        sources: list[str] = []
        inline: list[tuple[str, str]] = []
        for word in raw_sources:
            m = _HEREDOC_WORD.fullmatch(word)
            if m is not None and m.group(2) in heredocs:
                h = heredocs[m.group(2)]
                text = h.content
                if h.expand:
                    try:
                        text = expand_word(text, self.expansion_env(), escape=self.escape, raw=True)
                    except ExpandError as e:
                        raise ins.error(f"{ins.name}: {e.message}") from None
                inline.append((h.name, text))
            else:
                sources.append(self.expand(ins, word))
        if not sources and not inline:
            raise ins.error(f"{ins.name} requires at least one source")
        try:
            dest = destination(self.expand(ins, raw_dest), self.config.get("WorkingDir") or "/")
        except InvalidArgument as e:
            raise ins.error(e.message) from None
        flags = {k: (self.expand(ins, ins.flag(k)) if ins.flag(k) is not None else None)
                 for k in ("chown", "chmod", "checksum")}
        return CopyArgs(tuple(sources), tuple(inline), dest, flags["chown"], flags["chmod"], flags["checksum"])

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def command(self, ins: Instruction) -> list[str]:
        """CMD/ENTRYPOINT/RUN words: the exec form as written, the shell form through SHELL."""
        if ins.json:
            return list(ins.args)
        return [*self.shell(), " ".join(ins.args)]

    # -- instructions ----------------------------------------------------------------------

    def apply(self, ins: Instruction) -> None:
        """Apply a config instruction (CONFIG_INSTRUCTIONS); InvalidArgument naming its line."""
        handler = getattr(self, "_" + ins.name.lower(), None)
        if ins.name not in CONFIG_INSTRUCTIONS or handler is None:
            raise ins.error(f"{ins.name} does not change the image config")
        handler(ins)

    def run_triggers(self, dockerfile: Dockerfile | None, from_line: int) -> list[Instruction]:
        """The base image's OnBuild triggers as instructions (to run before the stage's own),
        and clears them: an image built FROM an image does not inherit its triggers."""
        triggers = self.config.pop("OnBuild", None) or []  # the image's: parse_triggers checks its shape
        escape = dockerfile.escape if dockerfile is not None else self.escape
        return parse_triggers(triggers, escape=escape, line=from_line)

    def _env(self, ins: Instruction) -> None:
        # Every pair is expanded before any is set: `ENV a=bye b=$a` gives b the old a (docker's rule).
        raw = zip(ins.args[0::2], ins.args[1::2], strict=True)
        pairs = [(self.expand(ins, k), self.expand(ins, v)) for k, v in raw]
        for key, value in pairs:
            if not key:
                raise ins.error("ENV names can not be blank")
            env = list(self.config.get("Env") or [])
            for i, item in enumerate(env):
                if item.partition("=")[0] == key:
                    env[i] = f"{key}={value}"
                    break
            else:
                env.append(f"{key}={value}")
            self.config["Env"] = env

    def _arg(self, ins: Instruction) -> None:
        for name, default in arg_pairs(ins, self.expansion_env(), self.escape):
            if not name:
                raise ins.error("ARG names can not be blank")
            if name in self.build_args:
                value: str | None = self.build_args[name]
            elif default is not None:
                value = default
            elif name in self.global_args and (name in self.declared_globals or name in PLATFORM_ARGS):
                value = self.global_args[name]
            else:
                value = None
            if value is None:
                self.args.pop(name, None)
            else:
                self.args[name] = value

    def _workdir(self, ins: Instruction) -> None:
        path = self.expand(ins, ins.args[0])
        if not path:
            raise ins.error("WORKDIR: cannot normalize nothing")
        current = self.config.get("WorkingDir") or "/"
        self.config["WorkingDir"] = posixpath.normpath(posixpath.join("/", current, path))

    def _user(self, ins: Instruction) -> None:
        self.config["User"] = self.expand(ins, ins.args[0])

    def _cmd(self, ins: Instruction) -> None:
        self.config["Cmd"] = self.command(ins)
        self.cmd_set = True

    def _entrypoint(self, ins: Instruction) -> None:
        self.config["Entrypoint"] = self.command(ins) if (ins.args or not ins.json) else None
        if not self.cmd_set:
            self.config["Cmd"] = None

    def _expose(self, ins: Instruction) -> None:
        ports = dict(self.config.get("ExposedPorts") or {})
        for word in ins.args:
            value = self.expand(ins, word)
            try:
                specs = parse_port_spec(value)
            except InvalidArgument as e:
                raise ins.error(e.message) from None
            for port in specs:
                ports[port] = {}
        self.config["ExposedPorts"] = ports

    def _label(self, ins: Instruction) -> None:
        labels = dict(self.config.get("Labels") or {})
        for raw_key, raw_value in zip(ins.args[0::2], ins.args[1::2], strict=True):
            key = self.expand(ins, raw_key)
            if not key:
                raise ins.error("LABEL names can not be blank")
            labels[key] = self.expand(ins, raw_value)
        self.config["Labels"] = labels

    def _volume(self, ins: Instruction) -> None:
        volumes = dict(self.config.get("Volumes") or {})
        for word in ins.args:
            path = self.expand(ins, word)
            if not path.strip():
                raise ins.error("VOLUME specified can not be an empty string")
            volumes[path] = {}
        self.config["Volumes"] = volumes

    def _stopsignal(self, ins: Instruction) -> None:
        value = self.expand(ins, ins.args[0])
        try:
            self.config["StopSignal"] = check_signal(value)
        except InvalidArgument as e:
            raise ins.error(e.message) from None

    def _healthcheck(self, ins: Instruction) -> None:
        kind = ins.args[0].upper()
        if kind == "NONE":
            if len(ins.args) != 1:
                raise ins.error("HEALTHCHECK NONE takes no arguments")
            self.config["Healthcheck"] = {"Test": ["NONE"]}
            return
        if kind != "CMD":
            raise ins.error(f"Unknown type {ins.args[0]!r} in HEALTHCHECK (try CMD)")
        rest = list(ins.args[1:])
        if not rest:
            raise ins.error("HEALTHCHECK CMD requires a command")
        test = ["CMD", *rest] if ins.json else ["CMD-SHELL", " ".join(rest)]
        check: dict[str, Any] = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                          ("start-interval", "StartInterval")):
            raw = ins.flag(flag)
            if raw is not None:
                ns = go_duration(raw, ins, flag)
                if 0 < ns < _MIN_INTERVAL or ns < 0:
                    raise ins.error(f"HEALTHCHECK: --{flag} cannot be less than 1ms")
                if ns:
                    check[key] = ns
        retries = ins.flag("retries")
        if retries is not None:
            try:
                n = int(retries)
            except ValueError:
                raise ins.error(f"HEALTHCHECK: --retries: invalid number {retries!r}") from None
            if n < 0:
                raise ins.error("HEALTHCHECK: --retries cannot be negative")
            if n:
                check["Retries"] = n
        self.config["Healthcheck"] = check

    def _shell(self, ins: Instruction) -> None:
        self.config["Shell"] = list(ins.args)

    def _onbuild(self, ins: Instruction) -> None:
        self.config["OnBuild"] = [*(self.config.get("OnBuild") or []), ins.args[0]]

    def _maintainer(self, ins: Instruction) -> None:
        self.image["author"] = ins.args[0]


def go_duration(text: str, ins: Instruction, flag: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (`1m30s`, `1.5h`, `300ms`, `0`)."""
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION.match(body, pos)
        if m is None:
            raise ins.error(f"HEALTHCHECK: --{flag}: invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ins.error(f"HEALTHCHECK: --{flag}: invalid duration {text!r}")
    return sign * round(total)
