"""Docker's `-a/--attach STDIN|STDOUT|STDERR` of `dock run` (and `dock create`): which of the
container's streams the foreground run connects to ours.

Docker's rules (docker/cli's run options): without -a, stdout and stderr are attached; with -a,
only the streams named (case-insensitive, repeatable); -i always attaches stdin (and without -i
there is no open stdin to attach, so `-a stdin` alone changes nothing); -a with -d is refused.
A stream not attached is still the container's (its log keeps it): only this client does not
show it.

The choice is kept on the container (labels_for): `dock start -a` shows the streams create's -a
named, and Docker's StdinOnce (`create -i`, a foreground `run -i`) makes the end of an attached
client's input (`dock start -ai`, `dock attach`) close the container's stdin; without it an
attach's EOF leaves the stdin open for the next one.

    streams = parse_attach(["stdout"])        # {"stdout"}
    out_fd, err_fd = shown_fds(streams, devnull)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

from dockyard_common.errors import InvalidArgument

STREAMS = ("stdin", "stdout", "stderr")
# What create/run chose, kept on the container record (labels survive any client or daemon restart):
# Docker's AttachStdin/AttachStdout/AttachStderr, as the streams joined by commas ("stdin,stdout"),
# set when -a was given (none: stdout and stderr, Docker's default); and Docker's StdinOnce ("true"):
# the attached client's end of input closes the container's stdin.
ATTACH_LABEL = "dockyard.attach"
STDIN_ONCE_LABEL = "dockyard.stdin-once"


def add_attach_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attach", "-a", action="append", default=[], metavar="STDIN|STDOUT|STDERR",
                   help="attach only these streams in the foreground (repeatable; default: STDOUT and STDERR, "
                        "and STDIN with -i)")


def parse_attach(values: Sequence[str]) -> frozenset[str]:
    """The streams `-a` names (empty: none given, Docker's default applies); InvalidArgument in
    Docker's words for another one."""
    found: set[str] = set()
    for value in values:
        stream = value.strip().lower()
        if stream not in STREAMS:
            raise InvalidArgument(f'invalid argument "{value}" for "-a, --attach" flag: '
                                  "valid streams are STDIN, STDOUT, STDERR")
        found.add(stream)
    return frozenset(found)


def check_attach(streams: frozenset[str], *, detach: bool) -> None:
    if streams and detach:
        raise InvalidArgument("conflicting options: -a and -d")


@contextlib.contextmanager
def shown_fds(streams: frozenset[str], out_fd: int = 1, err_fd: int = 2) -> Iterator[tuple[int, int]]:
    """(stdout fd, stderr fd) for the run: ours for the attached streams, /dev/null for the others."""
    if not streams or {"stdout", "stderr"} <= streams:
        yield out_fd, err_fd
        return
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        yield (out_fd if "stdout" in streams else null), (err_fd if "stderr" in streams else null)
    finally:
        os.close(null)


def labels_for(streams: frozenset[str], *, interactive: bool, detach: bool) -> dict[str, str]:
    """The labels that keep create's (or run's) choice for `dock start -a` and `dock attach`, as
    docker/cli sets Config: -i attaches stdin whatever -a says, and StdinOnce is OpenStdin with
    stdin attached (`run -i`, `create -i`), never with -d."""
    labels: dict[str, str] = {}
    if streams:
        chosen = streams | ({"stdin"} if interactive else set())
        labels[ATTACH_LABEL] = ",".join(s for s in STREAMS if s in chosen)
    if interactive and not detach:
        labels[STDIN_ONCE_LABEL] = "true"
    return labels


def attached_streams(labels: Mapping[str, str]) -> frozenset[str]:
    """The streams create's -a chose (empty: the default, stdout and stderr). A word we do not know
    (another client's label) is ignored."""
    words = (w.strip() for w in labels.get(ATTACH_LABEL, "").lower().split(","))
    return frozenset(w for w in words if w in STREAMS)


def stdin_once(labels: Mapping[str, str]) -> bool:
    """Docker's StdinOnce: an attached client's end of input closes the container's stdin."""
    return labels.get(STDIN_ONCE_LABEL, "").lower() == "true"
