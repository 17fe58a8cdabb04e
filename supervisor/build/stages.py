"""From a parsed Dockerfile to a build plan: stages, global ARGs, the target and what it needs.

    plan = plan_build(parse_dockerfile(text), BuildOptions(build_args={"V": "2"}, target="app"))
    for index in plan.order:               # the stages the target needs, dependencies first
        stage = plan.stages[index]
        stage.base                         # "busybox:1.36", "scratch", or the stage it builds on:
        stage.base_stage                   # its index (None for an image or scratch)
        stage.instructions                 # everything after its FROM
    plan.target                            # index of the stage whose image the build produces
    plan.unused_build_args                 # --build-arg names no ARG consumed (a warning, as docker's)

Rules (buildkit's Dockerfile frontend):
- ARGs before the first FROM are global: usable in FROM lines (image and `--platform`) and,
  when a stage declares `ARG NAME` without a value, as that ARG's value. `--build-arg`
  overrides their defaults. The platform ARGs (TARGETPLATFORM, TARGETOS, TARGETARCH,
  TARGETVARIANT, BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT) are predefined globals.
- `FROM image [AS name]`: the name is lower-cased and must match `[a-z][a-z0-9-_.]*`, once per
  file. An image naming an earlier stage builds on that stage; `scratch` is the empty image.
- `COPY --from=X`: X is a stage name, a stage index or an image reference (expanded with the
  global ARGs). The needed stages are the target and, transitively, the stages its FROM and
  COPY --from lines name; a cycle is an error, as are an unknown `--target` and a stage index
  past the last stage.
- An image's ONBUILD triggers run first when a stage starts FROM it; their COPY --from lines
  are only known once the base image is, so the executor resolves them (`resolve_copy_from`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Platform, default_platform, format_platform, parse_platform

from .dockerfile import Dockerfile, DockerfileError, Instruction
from .expand import ExpandError, expand_word
from .runmounts import mount_from_values

SCRATCH = "scratch"

# Build args usable without an ARG line; passed to RUN, left out of the image's history.
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
PLATFORM_ARGS = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                 "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


@dataclass(frozen=True)
class BuildOptions:
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    target_platform: Platform | None = None  # default: the host's
    build_platform: Platform | None = None  # default: the host's


@dataclass(frozen=True)
class CopySource:
    """Where a `COPY --from` reads: a stage (by index) or an image reference."""

    stage: int | None = None
    image: str | None = None


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None
    base: str  # the expanded image reference, "scratch", or the name/index of base_stage
    base_stage: int | None
    platform: str | None  # the expanded `--platform`, if given
    line: int  # of the FROM
    instructions: tuple[Instruction, ...]
    copy_from: Mapping[int, CopySource]  # instruction index -> where its --from reads
    mount_from: tuple[CopySource, ...] = ()  # where its RUN --mount from= read (dependencies)

    @property
    def label(self) -> str:
        """How progress and errors name the stage: `[build 2/3]` style names use this."""
        return self.name if self.name is not None else str(self.index)


@dataclass(frozen=True)
class BuildPlan:
    stages: tuple[Stage, ...]
    target: int
    order: tuple[int, ...]  # needed stages, every dependency before its dependants
    global_args: Mapping[str, str]  # global ARGs with a value, platform ARGs included
    declared_globals: frozenset[str]  # every name declared before the first FROM
    build_args: Mapping[str, str]
    escape: str
    unused_build_args: tuple[str, ...]

    def copy_source(self, ins: Instruction) -> CopySource:
        """Where a `COPY --from` outside the plan reads (an ONBUILD trigger's, known only once
        the base image is): a stage not in `order` must then be built first, as a dependency."""
        names = {s.name: s.index for s in self.stages if s.name is not None}
        return resolve_copy_from(ins, names, len(self.stages), self.global_args, self.escape)

    def source_of(self, ins: Instruction, value: str, what: str) -> CopySource:
        """Where a `from=` of the instruction (already expanded) reads."""
        names = {s.name: s.index for s in self.stages if s.name is not None}
        return resolve_from(ins, value, names, len(self.stages), what)

    def images(self) -> list[str]:
        """Image references the needed stages pull (FROM and COPY --from), in first-use order."""
        out: list[str] = []
        for i in self.order:
            s = self.stages[i]
            refs = [s.base] if s.base_stage is None and s.base != SCRATCH else []
            refs += [c.image for c in [*s.copy_from.values(), *s.mount_from] if c.image is not None]
            out += [r for r in refs if r not in out]
        return out


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    return {
        "TARGETPLATFORM": format_platform(target), "TARGETOS": target.os, "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": format_platform(build), "BUILDOS": build.os, "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
    }


def plan_build(df: Dockerfile, options: BuildOptions | None = None) -> BuildPlan:
    options = options or BuildOptions()
    target_p = options.target_platform or default_platform()
    build_p = options.build_platform or default_platform()
    globals_: dict[str, str] = platform_args(target_p, build_p)
    declared: set[str] = set()
    used: set[str] = set()

    body = list(df.instructions)
    while body and body[0].name == "ARG":
        ins = body.pop(0)
        for name, default in arg_pairs(ins, globals_, df.escape):
            declared.add(name)
            if name in options.build_args:
                globals_[name] = options.build_args[name]
                used.add(name)
            elif default is not None:
                globals_[name] = default
            else:
                globals_.pop(name, None)  # declared without a value: unset in FROM lines
    if not body:
        raise DockerfileError("no build stage in the Dockerfile (it has no FROM)", None)
    if body[0].name != "FROM":
        raise DockerfileError(f"{body[0].name} before the first FROM: only ARG may come before FROM", body[0].line)

    # Split into stages.
    raw: list[tuple[Instruction, list[Instruction]]] = []
    for ins in body:
        if ins.name == "FROM":
            raw.append((ins, []))
        else:
            raw[-1][1].append(ins)

    # Stage names first: COPY --from may name a later stage.
    names: dict[str, int] = {}
    for index, (from_ins, _) in enumerate(raw):
        if len(from_ins.args) == 3:
            name = from_ins.args[2].lower()
            if not _STAGE_NAME.match(name):
                raise from_ins.error(f"invalid name for build stage: {from_ins.args[2]!r}, "
                                     "name can't start with a number or contain symbols")
            if name in names:
                raise from_ins.error(f"duplicate stage name {name!r}")
            names[name] = index
    stages: list[Stage] = []
    for index, (from_ins, instructions) in enumerate(raw):
        image = _expand(from_ins, from_ins.args[0], globals_, df.escape)
        if not image:
            raise from_ins.error(f"base name ({from_ins.args[0]}) should not be blank")
        platform = from_ins.flag("platform")
        if platform is not None:
            platform = _expand(from_ins, platform, globals_, df.escape)
            try:
                parse_platform(platform)
            except InvalidArgument as e:
                raise from_ins.error(f"FROM --platform={platform}: {e.message}") from None
        # FROM names a stage only when that stage comes earlier (`FROM golang AS golang` is an image).
        base_stage = names.get(image.lower())
        if base_stage is not None and base_stage >= index:
            base_stage = None
        copy_from = {
            i: resolve_copy_from(ins, names, len(raw), globals_, df.escape)
            for i, ins in enumerate(instructions)
            if ins.name == "COPY" and ins.flag("from") is not None
        }
        mount_from = tuple(
            resolve_from(ins, _expand(ins, value, globals_, df.escape), names, len(raw), "RUN --mount from")
            for ins in instructions if ins.name == "RUN"
            for value in mount_from_values(list(ins.flag("mount") or [])))
        stage_name = from_ins.args[2].lower() if len(from_ins.args) == 3 else None
        stages.append(Stage(index, stage_name, image, base_stage, platform, from_ins.line, tuple(instructions),
                            copy_from, mount_from))

    if options.target is not None:
        target = names.get(options.target.lower())
        if target is None and options.target.isdigit() and int(options.target) < len(stages):
            target = int(options.target)  # api.BuildRequest.target: "a stage name or index"
        if target is None:
            raise DockerfileError(f"target stage {options.target!r} could not be found", None)
    else:
        target = len(stages) - 1
    order = _order(stages, target)

    # Build args consumed: by global ARGs, or by an ARG in a stage that runs.
    for i in order:
        for ins in stages[i].instructions:
            if ins.name == "ARG":
                used.update(name for name, _ in arg_pairs(ins, {}, df.escape, expand=False))
    unused = tuple(sorted(k for k in options.build_args if k not in used and not _builder_arg(k)))
    return BuildPlan(tuple(stages), target, tuple(order), dict(globals_), frozenset(declared),
                     dict(options.build_args), df.escape, unused)


def _builder_arg(name: str) -> bool:
    """Build args the builder itself reads: never reported as unused."""
    return name in PROXY_ARGS or name == "SOURCE_DATE_EPOCH" or name.startswith("BUILDKIT_")


def resolve_copy_from(ins: Instruction, names: Mapping[str, int], n_stages: int, global_args: Mapping[str, str],
                      escape: str) -> CopySource:
    return resolve_from(ins, _expand(ins, ins.flag("from"), global_args, escape), names, n_stages, "COPY --from")


def resolve_from(ins: Instruction, value: str, names: Mapping[str, int], n_stages: int, what: str) -> CopySource:
    """A `from` value (COPY --from, RUN --mount from=): a stage index or name, else an image."""
    if not value:
        raise ins.error(f"{what}: the stage or image must not be empty")
    if value.isdigit():
        index = int(value)
        if index >= n_stages:
            raise ins.error(f"{what}={value}: there is no stage {index} (the Dockerfile has {n_stages})")
        return CopySource(stage=index)
    stage = names.get(value.lower())
    if stage is not None:
        return CopySource(stage=stage)
    return CopySource(image=value)


def arg_pairs(ins: Instruction, env: Mapping[str, str], escape: str, *, expand: bool = True
              ) -> list[tuple[str, str | None]]:
    """`ARG a=1 b` -> [("a", "1"), ("b", None)]; names and defaults expanded from `env`."""
    out: list[tuple[str, str | None]] = []
    for word in ins.args:
        name, eq, default = word.partition("=")
        if expand:
            name = _expand(ins, name, env, escape)
            value = _expand(ins, default, env, escape) if eq else None
        else:
            value = default if eq else None
        out.append((name, value))
    return out


def _expand(ins: Instruction, word: str, env: Mapping[str, str], escape: str) -> str:
    try:
        return expand_word(word, env, escape=escape)
    except ExpandError as e:
        raise ins.error(f"{ins.name}: {e.message}") from None


def _dependencies(stage: Stage) -> list[int]:
    deps = [stage.base_stage] if stage.base_stage is not None else []
    deps += [c.stage for c in [*stage.copy_from.values(), *stage.mount_from] if c.stage is not None]
    return deps


def _order(stages: list[Stage], target: int) -> list[int]:
    """The stages `target` needs, dependencies first (depth-first, earliest stage first).

    A stack, not recursion: a Dockerfile of thousands of chained stages (`FROM s1 AS s2` ...)
    made Python's recursion limit an internal error."""
    order: list[int] = []
    state: dict[int, str] = {}  # "visiting" | "done"
    chain: list[int] = []  # the stages being visited, outermost first
    pending: list[Iterator[int]] = []  # per stage in `chain`: the dependencies not visited yet

    def enter(i: int) -> None:
        if state.get(i) == "visiting":
            cycle = [*chain[chain.index(i):], i]
            names = " -> ".join(stages[j].label for j in cycle)
            raise DockerfileError(f"circular dependency detected on stage: {stages[i].label} ({names})",
                                  stages[i].line)
        state[i] = "visiting"
        chain.append(i)
        pending.append(iter(sorted(set(_dependencies(stages[i])))))

    enter(target)
    while chain:
        dep = next(pending[-1], None)
        if dep is None:
            done = chain.pop()
            pending.pop()
            state[done] = "done"
            order.append(done)
        elif state.get(dep) != "done":
            enter(dep)
    return order
