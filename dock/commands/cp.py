"""dock cp: copy files between a container and the host, as `docker cp` does.

    dock cp CONTAINER:SRC DEST|-        dock cp SRC|- CONTAINER:DEST

A file source goes to DEST when DEST is a file or does not exist (its parent must; a DEST
ending in `/` must be an existing directory), into DEST when DEST is a directory. A directory
source becomes DEST when DEST does not exist, else goes into it; with SRC ending in `/.` its
contents are copied into DEST instead. `-` is a tar on stdin or stdout (a stdin tar is
extracted into the directory DEST). `-a` keeps the owners of the source (else files in the
container belong to its root, and files on the host to the user running dock); `-L` follows
a symlink SRC. Container paths resolve inside the container, symlinks included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import posixpath
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dock.client import Client
from dock.copy import CopyAPI, PathStat
from dock.localtar import extract, tar_of
from dock.lookup import resolve_id
from dock.stdio import write_all
from dockyard_common.errors import InvalidArgument, NotFound


def register(sub: Any) -> None:
    p = sub.add_parser("cp", help="copy files between a container and the host (docker cp)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", "-a", action="store_true", help="keep the owners (uid:gid) of the source")
    p.add_argument("--follow-link", "-L", action="store_true", help="follow a symlink SRC")
    p.add_argument("src", metavar="SRC", help="CONTAINER:PATH, a host path, or - (a tar on stdin)")
    p.add_argument("dest", metavar="DEST", help="CONTAINER:PATH, a host path, or - (a tar on stdout)")
    p.set_defaults(handler=cp)


def split_ref(arg: str) -> tuple[str, str] | None:
    """(container, path) of `CONTAINER:PATH`; None for a host path (one with a `/` before any
    `:`, or none at all, as docker reads it)."""
    if arg == "-" or ":" not in arg:
        return None
    head, _, tail = arg.partition(":")
    if not head or "/" in head or head.startswith("."):
        return None
    return head, tail


def _contents(path: str) -> bool:
    return path.endswith("/.") or path == "."


async def cp(client: Client, args: argparse.Namespace) -> int:
    src, dest = split_ref(args.src), split_ref(args.dest)
    if src is not None and dest is not None:
        raise InvalidArgument("copying between containers is not supported: one side must be the host")
    if src is None and dest is None:
        raise InvalidArgument("one of SRC and DEST must be CONTAINER:PATH")
    files = CopyAPI(client)
    if src is not None:
        cid = await resolve_id(client, src[0])
        await copy_out(files, cid, src[1] or "/", args.dest, archive=args.archive, follow=args.follow_link)
    else:
        assert dest is not None
        cid = await resolve_id(client, dest[0])
        await copy_in(files, cid, args.src, dest[1] or "/", archive=args.archive, follow=args.follow_link)
    return 0


# -- out of the container --------------------------------------------------------------------------


async def copy_out(files: CopyAPI, cid: str, src: str, dest: str, *, archive: bool, follow: bool) -> None:
    async with files.copy_from(cid, src, follow=follow) as (st, chunks):
        if dest == "-":
            async for piece in chunks:
                write_all(sys.stdout.fileno(), piece)
            return
        top = "." if _contents(src) else st.name
        where, rename = _local_target(Path(dest), dest.endswith("/"), st.is_dir, src)
        await extract(chunks, where, (top, rename) if rename is not None else None, keep_owner=archive)


def _local_target(dest: Path, dir_wanted: bool, src_is_dir: bool, src: str) -> tuple[Path, str | None]:
    """(the local directory to extract into, the name the archive's top entry takes there or
    None to keep it) for docker cp's rules."""
    if dest.is_dir():
        return dest, None
    if dest.exists() or dest.is_symlink():
        if src_is_dir:
            raise InvalidArgument(f"cannot copy directory {src!r} to file {str(dest)!r}")
        return dest.parent, dest.name
    if dir_wanted and not src_is_dir:
        raise NotFound(f"destination directory {str(dest)!r} does not exist")
    if not dest.parent.is_dir():
        raise NotFound(f"destination directory {str(dest.parent)!r} does not exist")
    return dest.parent, dest.name


# -- into the container ----------------------------------------------------------------------------


async def copy_in(files: CopyAPI, cid: str, src: str, dest: str, *, archive: bool, follow: bool) -> None:
    try:
        dest_st = await files.stat(cid, dest, follow=True)
    except NotFound:
        dest_st = None
    if src == "-":
        if dest_st is None or not dest_st.is_dir:
            raise InvalidArgument(f"destination {dest!r} must be a directory in the container to extract a tar into")
        await files.copy_to(cid, dest, _stdin_chunks(), copy_uid_gid=archive)
        return
    local, into, top = _plan_in(src, dest, dest_st, follow)
    await files.copy_to(cid, into, tar_of(local, top), copy_uid_gid=archive)


def _plan_in(src: str, dest: str, dest_st: PathStat | None, follow: bool) -> tuple[Path, str, str]:
    """(the local path to send, the container directory to extract into, the name of the
    archive's top entry, "." for a directory's contents) for docker cp's rules."""
    path = Path(src)
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {src}") from None
    except OSError as exc:
        raise InvalidArgument(f"{src}: {exc.strerror}") from None
    src_is_dir = stat.S_ISDIR(st.st_mode)
    if (src.endswith("/") or _contents(src)) and not src_is_dir:
        raise InvalidArgument(f"{src}: not a directory")
    local = Path(os.path.realpath(path)) if follow else path
    name = os.path.basename(os.path.normpath(os.path.abspath(src))) or "."
    if dest_st is not None and dest_st.is_dir:
        into, top = dest, "." if _contents(src) else name
    elif dest_st is not None:
        if src_is_dir:
            raise InvalidArgument(f"cannot copy directory {src!r} to file {dest!r} in the container")
        into, top = posixpath.dirname(dest.rstrip("/")) or "/", posixpath.basename(dest.rstrip("/"))
    else:
        if dest.endswith("/") and not src_is_dir:
            raise NotFound(f"destination directory {dest!r} does not exist in the container")
        # a directory (or its contents) takes the new name
        into, top = posixpath.dirname(dest.rstrip("/")) or "/", posixpath.basename(dest.rstrip("/"))
    if top in ("", ".", "..") and not (dest_st is not None and dest_st.is_dir):
        raise InvalidArgument(f"destination {dest!r}: not a name to copy to")
    return local, into, top


async def _stdin_chunks() -> AsyncIterator[bytes]:
    fd = sys.stdin.fileno()
    while piece := await asyncio.to_thread(os.read, fd, 256 << 10):
        yield piece
