"""What a build asks for and tells: the contract between the build executor (builder.py) and
its callers (the dockyard.build.v1 service, tests).

    result = await builder.build("default", context_dir, BuildRequest(dockerfile=b"FROM busybox\\n",
                                                                      tags=["app:1"]), progress)

`progress` is awaited for every event, in order; a slow consumer slows the build rather than
growing a buffer. Errors: InvalidArgument (Dockerfile, options, context), NotFound (a base image
that cannot be had), FailedPrecondition (a RUN step that exited non-zero: the message names the
step, its line and the exit code), and what the stores raise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

NETWORK_MODES = ("default", "none", "host")  # default: the daemon's default network, if it has one


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: bytes
    tags: tuple[str, ...] = ()  # image names to create or update; none: the image only by digest
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""  # a stage name or index; "" the last stage
    no_cache: bool = False
    pull: bool = False  # fetch base images again even when present
    platform: str = ""  # "os/arch[/variant]"; "" the host's
    labels: tuple[tuple[str, str], ...] = ()  # added to the image config's labels
    network: str = "default"  # for RUN steps: one of NETWORK_MODES


@dataclass(frozen=True)
class BuildEvent:
    """One thing to tell: `kind` is "step" (step `step` of `total` starts: `text` is the
    instruction as written, `stage` its stage name or index), "cached" (that step's result came
    from the cache), "output" (bytes a RUN step wrote, `stream` "stdout"/"stderr"), "done" (the
    step finished, `text` a short summary), or "warning" (e.g. an unused --build-arg)."""

    kind: str
    step: int = 0
    total: int = 0
    stage: str = ""
    text: str = ""
    data: bytes = b""
    stream: str = ""


@dataclass(frozen=True)
class BuildResult:
    manifest_digest: str
    config_digest: str
    tags: tuple[str, ...] = field(default_factory=tuple)  # as stored (normalized names)


Progress = Callable[[BuildEvent], Awaitable[None]]
