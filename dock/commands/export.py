"""dock export: a container's whole filesystem (its image and its changes) as a tar (docker export).

    dock export web > web.tar
    dock export -o web.tar web

The container's snapshot is mounted read-only here (dock/rootfs.py; it needs root) and written
with Python's tarfile: owners (numeric; the host's user names mean nothing in the container),
modes, symlinks, device nodes and hard links as they are; sockets are left out. A tar is never
written to a terminal, as Docker refuses to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tarfile
from pathlib import Path
from typing import IO, Any

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import resolve
from dock.rootfs import container_mounts_of, mounted_readonly
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import Mount


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="write a container's filesystem as a tar archive")
    p.add_argument("--output", "-o", default="", metavar="FILE", help="write to FILE instead of stdout")
    containers_arg(p, "container", help="container name, id or unique id prefix")
    p.set_defaults(handler=export)


def _entry(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # numeric owners only: the host's names are not the container's
    info.mtime = int(info.mtime)  # whole seconds, as Docker's (no PAX record for every entry)
    return info


def write_tree(root: Path, out: IO[bytes]) -> None:
    """Every name under `root` (not the root itself), sorted, as a tar stream on `out`."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name, recursive=True, filter=_entry)


def export_to(mounts: list[Mount], out: IO[bytes]) -> None:
    """The tree `mounts` make, as a tar on `out`. Blocking: run it in a thread."""
    with mounted_readonly(mounts) as root:
        write_tree(root, out)


def export_file(mounts: list[Mount], path: str) -> None:
    """export_to a new file at `path`: written beside it (mode 0666 less the umask, as a shell's
    redirect), renamed into place once complete, so a failure leaves no half archive."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            export_to(mounts, f)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def export(client: Client, args: argparse.Namespace) -> int:
    if not args.output and sys.stdout.isatty():  # before asking anything: a terminal gets no binary
        raise InvalidArgument("refusing to write a tar archive to a terminal: redirect the output or use -o FILE")
    c = await resolve(client, args.container)
    mounts = await container_mounts_of(client, c)
    if args.output:
        await asyncio.to_thread(export_file, mounts, args.output)
    else:
        sys.stdout.flush()
        await asyncio.to_thread(export_to, mounts, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0
