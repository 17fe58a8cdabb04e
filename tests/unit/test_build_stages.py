"""Stages, global ARGs, --target and the stages a target needs (supervisor/build/stages.py)."""

from __future__ import annotations

import pytest

from dockyard_common.imagespec import Platform
from supervisor.build.dockerfile import DockerfileError, parse_dockerfile
from supervisor.build.stages import SCRATCH, BuildOptions, CopySource, plan_build

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def plan(text: str, **kw):  # type: ignore[no-untyped-def]
    return plan_build(parse_dockerfile(text), BuildOptions(**kw))


MULTI = """\
ARG BASE=busybox
ARG TAG
FROM ${BASE}:${TAG:-1.36} AS base
RUN echo base
FROM base AS build
RUN echo build
FROM alpine AS unused
RUN echo never
FROM scratch AS final
COPY --from=build /out /out
COPY --from=docker.io/library/debian:12 /etc/os-release /
"""


def test_global_args_in_from_and_defaults() -> None:
    p = plan(MULTI)
    assert p.stages[0].base == "busybox:1.36" and p.stages[0].base_stage is None
    assert p.stages[1].base == "base" and p.stages[1].base_stage == 0
    assert p.stages[3].base == SCRATCH
    p = plan(MULTI, build_args={"TAG": "1.37", "BASE": "registry.local/bb"})
    assert p.stages[0].base == "registry.local/bb:1.37"


def test_only_needed_stages_in_dependency_order() -> None:
    p = plan(MULTI)
    assert p.target == 3
    assert p.order == (0, 1, 3)  # "unused" never runs
    assert p.stages[3].copy_from == {0: CopySource(stage=1), 1: CopySource(image="docker.io/library/debian:12")}
    assert p.images() == ["busybox:1.36", "docker.io/library/debian:12"]


def test_target() -> None:
    p = plan(MULTI, target="BUILD")
    assert (p.target, p.order) == (1, (0, 1))
    with pytest.raises(DockerfileError, match="target stage 'nope' could not be found"):
        plan(MULTI, target="nope")


def test_copy_from_index_and_later_stage() -> None:
    p = plan("FROM a\nCOPY --from=1 /x /x\nFROM b AS later\nRUN x\n", target=None)
    assert p.order == (1,)  # the last stage is the target; stage 0 is not needed
    p = plan("FROM a AS first\nCOPY --from=later /x /x\nFROM b AS later\n", target="first")
    assert p.order == (1, 0)
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: .*there is no stage 5"):
        plan("FROM a\nCOPY --from=5 /x /x\n")


def test_cycle_is_an_error() -> None:
    text = "FROM a AS one\nCOPY --from=two /x /x\nFROM one AS two\n"
    with pytest.raises(DockerfileError, match="circular dependency detected on stage"):
        plan(text)


def test_from_names_only_earlier_stages() -> None:
    p = plan("FROM golang AS golang\nRUN x\n")
    assert p.stages[0].base == "golang" and p.stages[0].base_stage is None


def test_copy_from_expands_global_args() -> None:
    p = plan("ARG SRC=build\nFROM a AS build\nFROM b\nCOPY --from=${SRC} /x /x\n")
    assert p.stages[1].copy_from[0] == CopySource(stage=0)


def test_platform_args() -> None:
    p = plan("FROM --platform=$BUILDPLATFORM img:$TARGETARCH AS x\n", target_platform=ARM64, build_platform=AMD64)
    assert p.stages[0].platform == "linux/amd64"
    assert p.stages[0].base == "img:arm64"
    assert p.global_args["TARGETPLATFORM"] == "linux/arm64/v8"
    assert p.global_args["TARGETVARIANT"] == "v8"


@pytest.mark.parametrize(("text", "message"), [
    ("ARG A\n", "no build stage"),
    ("RUN x\nFROM a\n", "RUN before the first FROM"),
    ("FROM a AS 1bad\n", "invalid name for build stage"),
    ("FROM a AS x\nFROM b AS X\n", "duplicate stage name 'x'"),
    ("ARG E\nFROM ${E}\n", "should not be blank"),
    ("FROM ${A\n", "missing '}'"),
    ("FROM --platform=linux/x/y/z a\n", "--platform=linux/x/y/z"),
])
def test_stage_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message):
        plan(text)


def test_unused_build_args() -> None:
    p = plan("ARG G\nFROM a\nARG USED\nFROM b AS other\nARG ELSEWHERE\nFROM a\n",
             build_args={"G": "1", "USED": "2", "NOPE": "3", "ELSEWHERE": "4", "HTTP_PROXY": "p",
                         "SOURCE_DATE_EPOCH": "0"})
    # stage "other" is not needed by the last stage: its ARG consumes nothing
    assert p.unused_build_args == ("ELSEWHERE", "NOPE", "USED")


def test_copy_source_for_triggers() -> None:
    from supervisor.build.dockerfile import parse_triggers

    p = plan("FROM a AS assets\nFROM onbuild-image\n")
    trigger = parse_triggers(["COPY --from=assets /x /y"], line=2)[0]
    assert p.copy_source(trigger) == CopySource(stage=0)
    assert p.order == (1,)  # the executor adds stage 0 when the trigger shows up
