"""dock build: an image from a Dockerfile, built by the daemon (docker build).

    dock build -t app:1 .                              # ./Dockerfile, the context . (.dockerignore applied)
    dock build -t app:1 -f ci/Dockerfile --build-arg VERSION=2 --target runtime .
    dock build -f - . < Dockerfile                     # the Dockerfile from stdin
    tar -c . | dock build -t app:1 -                   # a tar context from stdin (its Dockerfile inside)
    dock build - < Dockerfile                          # no context at all
    dock builder prune -af --filter until=24h --keep-storage 1g   # the build cache (`dock gc` frees it)

Progress: `plain` prints each step and what RUN steps write, `json` one JSON object a line
(`{"type": "step"|"cached"|"output"|"done"|"warning"|"context"|"result", ...}`), `auto` is
plain. The last line (plain) names the image's manifest digest and its tags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from dock.build import (
    MAX_DOCKERFILE,
    NETWORK_MODES,
    BuildAPI,
    BuildEvent,
    BuildOptions,
    BuildResult,
    ContextReceived,
    Event,
    SyncedContext,
    read_tar_context,
    tar_context,
)
from dock.client import Client
from dock.commands.leases import parse_duration
from dock.oci import parse_bytes
from dock.output import human_size
from dockyard_common.errors import DockyardError, InvalidArgument
from dockyard_common.goquote import go_escape

PROGRESS_MODES = ("auto", "plain", "json")
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"


def register(sub: Any) -> None:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("--tag", "-t", action="append", default=[], metavar="REF",
                   help="name the image, e.g. app:1 (repeatable)")
    p.add_argument("--file", "-f", default=None, metavar="FILE",
                   help="the Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a build argument; a bare KEY takes its value from the environment (repeatable)")
    p.add_argument("--target", default="", metavar="STAGE", help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="reuse nothing from the build cache")
    p.add_argument("--pull", action="store_true", help="fetch base images again even when present")
    p.add_argument("--platform", default="", help="build for os/arch[/variant] (default: the daemon's)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="add a label to the image (repeatable)")
    p.add_argument("--network", choices=NETWORK_MODES, default="default", help="the network of RUN steps")
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto", help="how to show progress")
    p.add_argument("context", metavar="CONTEXT", help="the build context: a directory, or - for a tar on stdin")
    p.set_defaults(handler=build)

    group = sub.add_parser("builder", help="manage the daemon's build cache")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("prune", help="remove build cache (its layers are freed by the next gc)")
    p.add_argument("--all", "-a", action="store_true",
                   help="remove all build cache, not only what no image uses (dangling)")
    p.add_argument("--filter", action="append", default=[], metavar="until=DURATION",
                   help="only cache unused for DURATION, e.g. until=24h")
    p.add_argument("--keep-storage", default="", metavar="SIZE",
                   help="keep this much cache, the most recently used (e.g. 512m, 1g)")
    p.add_argument("--force", "-f", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=prune)


def parse_build_args(items: list[str], environ: dict[str, str] | os._Environ[str] = os.environ
                     ) -> list[tuple[str, str]]:
    """`KEY=VALUE`, or a bare `KEY` taking its value from the environment (left out when unset,
    as docker does)."""
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not key or key != key.strip() or "\0" in item:
            raise InvalidArgument(f"invalid --build-arg {item!r}: want KEY=VALUE")
        if not eq:
            if key not in environ:
                continue
            value = environ[key]
        out.append((key, value))
    return out


def parse_label_pairs(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid --label {item!r}: want KEY=VALUE")
        out.append((key, value))
    return out


# A Dockerfile is sent in one message (16 MiB at most, both ways): one bigger than this is refused
# before it is read whole, so `-f /dev/zero` or `dock build - < /dev/zero` ends instead of eating
# memory or disk for ever.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _read_capped(f: IO[bytes], what: str, head: bytes = b"") -> bytes:
    """`head`, then the rest of `f`: a Dockerfile, MAX_DOCKERFILE bytes at most."""
    data = head + f.read(MAX_DOCKERFILE + 1 - len(head))
    if len(data) > MAX_DOCKERFILE:
        raise InvalidArgument(f"the Dockerfile {what} is larger than {MAX_DOCKERFILE >> 20} MiB")
    return data


def _looks_like_tar(head: bytes) -> bool:
    """The first 512 bytes of stdin start a tar (or a compressed stream, which may hold one)."""
    if head.startswith(_COMPRESSED_MAGIC):
        return True
    try:
        tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def _read_stdin() -> IO[bytes] | bytes:
    """A tar context on stdin, in a temp file (it is read twice: for its Dockerfile, then to send);
    or, when stdin does not start as a tar, the Dockerfile it is (capped, never spooled)."""
    stdin = sys.stdin.buffer
    head = b""
    while len(head) < tarfile.BLOCKSIZE and (piece := stdin.read(tarfile.BLOCKSIZE - len(head))):
        head += piece
    if not _looks_like_tar(head):
        return _read_capped(stdin, "on stdin", head)
    spool = tempfile.TemporaryFile(prefix="dock-build-")
    try:
        spool.write(head)
        shutil.copyfileobj(stdin, spool, 1 << 20)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _read_dockerfile(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return _read_capped(f, path)
    except OSError as exc:
        raise InvalidArgument(f"cannot read the Dockerfile {path}: {exc.strerror or exc}") from None


def prepare(args: argparse.Namespace) -> tuple[bytes, AsyncIterator[bytes] | bytes | SyncedContext]:
    """The Dockerfile's bytes and the context to send, from the command line (see the module doc)."""
    if args.context == "-":
        if args.file == "-":
            raise InvalidArgument("cannot read both the Dockerfile and the context from stdin")
        spool = _read_stdin()
        if isinstance(spool, bytes):  # not a tar: stdin is the Dockerfile, the context is empty
            if args.file:
                raise InvalidArgument("-f names a Dockerfile inside the context, but stdin is not a tar")
            return spool, b""
        try:
            found = read_tar_context(spool, args.file or "Dockerfile")
            if found is None:  # not a tar: stdin is the Dockerfile, the context is empty
                if args.file:
                    raise InvalidArgument("-f names a Dockerfile inside the context, but stdin is not a tar")
                with spool:
                    return spool.read(), b""
        except BaseException:
            spool.close()
            raise
        dockerfile, matcher = found
        return dockerfile, tar_context(spool, matcher)  # which closes the spool
    root = Path(args.context)
    if not root.is_dir():
        raise InvalidArgument(f"build context {args.context}: not a directory")
    # A directory is synced: the daemon keeps it between builds, only changes are sent.
    if args.file == "-":
        return _read_capped(sys.stdin.buffer, "on stdin"), SyncedContext(root)
    file = Path(args.file) if args.file else root / "Dockerfile"
    return _read_dockerfile(str(file)), SyncedContext(root, file)


def with_source_date_epoch(build_args: list[tuple[str, str]],
                           environ: dict[str, str] | os._Environ[str] = os.environ) -> list[tuple[str, str]]:
    """The environment's SOURCE_DATE_EPOCH as a build arg unless the command line sets one (as
    buildx passes it on): the daemon then makes a reproducible image."""
    value = environ.get(SOURCE_DATE_EPOCH, "")
    if not value or any(key == SOURCE_DATE_EPOCH for key, _ in build_args):
        return build_args
    return [*build_args, (SOURCE_DATE_EPOCH, value)]


async def build(client: Client, args: argparse.Namespace) -> int:
    build_args = with_source_date_epoch(parse_build_args(args.build_arg))
    labels = parse_label_pairs(args.label)
    dockerfile, context = prepare(args)
    if not dockerfile.strip():
        raise InvalidArgument("the Dockerfile is empty")
    options = BuildOptions(dockerfile=dockerfile, tags=list(args.tag), build_args=build_args, target=args.target,
                           no_cache=args.no_cache, pull=args.pull, platform=args.platform, labels=labels,
                           network=args.network)
    view = JsonView() if args.progress == "json" else PlainView()
    try:
        async for event in BuildAPI(client).build(context, options):
            view.show(event)
    except DockyardError as exc:  # one line: a failed RUN's message ends with its last output lines
        exc.message = one_line(exc.message)
        exc.args = (exc.message,)
        raise
    return 0


def prune_filters(items: list[str]) -> int:
    """`until=<duration>` as seconds (docker's other filters are BuildKit's record kinds, which
    this cache does not have)."""
    seconds = 0
    for item in items:
        key, eq, value = item.partition("=")
        if key != "until" or not eq:
            raise InvalidArgument(f"invalid --filter {item!r}: only until=DURATION (e.g. until=24h) is supported")
        try:
            seconds = int(parse_duration(value).total_seconds())
        except argparse.ArgumentTypeError as exc:
            raise InvalidArgument(f"invalid --filter {item!r}: {exc}") from None
    return seconds


async def prune(client: Client, args: argparse.Namespace) -> int:
    unused_for = prune_filters(args.filter)
    keep = parse_bytes(args.keep_storage) if args.keep_storage else 0
    if not args.force:
        what = "all build cache" if args.all else "all dangling build cache"
        print(f"WARNING! This will remove {what}. Are you sure you want to continue? [y/N] ", end="",
              file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    result = await BuildAPI(client).prune(all=args.all, unused_for_seconds=unused_for, keep_storage=keep)
    if args.format == "json":
        print(json.dumps({"removed": result.removed, "reclaimed_bytes": result.reclaimed_bytes}))
        return 0
    if result.removed:
        print("Deleted build cache objects:")
        for key in result.removed:
            print(key)
        print()
    print(f"Total reclaimed space: {human_size(result.reclaimed_bytes)}")
    return 0


def one_line(message: str) -> str:
    """A multi-line message on one line: its first line, then the others joined by " | "."""
    first, *rest = message.splitlines() or [""]
    rest = [line.strip() for line in rest if line.strip()]
    return f"{first} {' | '.join(rest)}" if rest else first


class PlainView:
    """Steps and RUN output as lines, docker's classic builder's way."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def show(self, event: Event) -> None:
        out = self.out
        if isinstance(event, ContextReceived):
            kept = f" ({event.reused} unchanged, kept by the daemon)" if event.reused else ""
            print(f"build context: {human_size(event.bytes)}, {event.entries} entries{kept}", file=out)
        elif isinstance(event, BuildEvent):
            if event.kind == "step":
                # A named stage is shown; an index says little next to the step numbers.
                stage = f" [{event.stage}]" if event.stage and not event.stage.isdigit() else ""
                print(f"Step {event.step}/{event.total}{stage} : {event.text}", file=out)
            elif event.kind == "cached":
                print(" ---> Using cache", file=out)
            elif event.kind == "output":
                out.flush()
                self._write(event.data)
            elif event.kind == "done":
                print(f" ---> {event.text}" if event.text else " ---> done", file=out)
            elif event.kind == "warning":
                print(f"[warning] {go_escape(event.text)}", file=sys.stderr)
        elif isinstance(event, BuildResult):
            print(f"Successfully built {event.manifest_digest}", file=out)
            for tag in event.tags:
                print(f"Successfully tagged {tag}", file=out)
        out.flush()

    def _write(self, data: bytes) -> None:
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            self.out.write(data.decode("utf-8", errors="replace"))


class JsonView:
    """One JSON object a line per event; output bytes as text (invalid UTF-8 replaced)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def show(self, event: Event) -> None:
        record: dict[str, Any]
        if isinstance(event, ContextReceived):
            record = {"type": "context", "bytes": event.bytes, "entries": event.entries, "reused": event.reused}
        elif isinstance(event, BuildEvent):
            record = {"type": event.kind, "step": event.step, "total": event.total}
            if event.stage:
                record["stage"] = event.stage
            if event.text:
                record["text"] = event.text
            if event.kind == "output":
                record["stream"] = event.stream
                record["data"] = event.data.decode("utf-8", errors="replace")
        elif isinstance(event, BuildResult):
            record = {"type": "result", "manifest_digest": event.manifest_digest,
                      "config_digest": event.config_digest, "tags": event.tags}
        else:
            return  # ContextSent: the client's own bookkeeping
        print(json.dumps(record), file=self.out, flush=True)
