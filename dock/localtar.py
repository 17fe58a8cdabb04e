"""The host side of `dock cp`: a tar of local files to send, and a received tar written locally.

    async for piece in tar_of(Path("site"), top="www"): ...     # entries www/, www/index.html, ...
    await extract(chunks, Path("/tmp/out"), rename=("etc", "etc-copy"), keep_owner=False)

`tar_of` adds `src` under the name `top` (its contents at the archive's root when `top` is
"."), owners and modes as they are (the daemon decides the owners in the container), symlinks
as symlinks, hard links kept, sockets left out.

`extract` writes the entries below `dest` with Python's tarfile, renaming the archive's top
entry (`rename`: (old, new)). It writes nothing outside `dest`: a name climbing out of it, an
entry whose parent resolves outside `dest` (through a symlink that came before in the archive
or was there already), or a hard link to outside is refused (InvalidArgument), and an existing
symlink in an entry's place is replaced, never written through. Owners are the archive's with
`keep_owner` (docker cp -a), else the user running dock.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import tarfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, cast

from dock.tarfiles import Unkept
from dock.upload import local_error
from dockyard_common.aio import BlockingReader, piped
from dockyard_common.errors import DockyardError, InvalidArgument

CHUNK = 256 << 10


# -- sending -----------------------------------------------------------------------------------


def write_tar(src: Path, top: str, out: IO[bytes]) -> None:
    """The tar of `src` named `top` (or its contents, for top "."), written to `out`."""
    with Unkept.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if top == "." and src.is_dir():
            for name in sorted(os.listdir(src)):
                tar.add(src / name, arcname=name, recursive=True)
        else:
            tar.add(src, arcname=top, recursive=True)


async def tar_of(src: Path, top: str) -> AsyncIterator[bytes]:
    async for piece in piped(lambda out: write_tar(src, top, out), pipe_size=CHUNK, error=local_error):
        yield piece


# -- receiving ----------------------------------------------------------------------------------


def renamed(name: str, rename: tuple[str, str] | None) -> str:
    """`name` with its top component `rename[0]` replaced by `rename[1]` (both may be ".")."""
    name = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if rename is None:
        return name
    old, new = rename
    if old == ".":
        return new if name == "." else posixpath.normpath(posixpath.join(new, name))
    if name == old:
        return new
    if name.startswith(old + "/"):
        return posixpath.normpath(posixpath.join(new, name[len(old) + 1:]))
    raise InvalidArgument(f"archive entry {name!r}: not below the copied path {old!r}")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _extract_all(reader: BlockingReader, dest: Path, rename: tuple[str, str] | None, keep_owner: bool) -> None:
    real_dest = os.path.realpath(dest)
    uid, gid = os.getuid(), os.getgid()
    with Unkept.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
        for member in tar:
            name = renamed(member.name, rename)
            if name == ".":
                continue  # the destination directory itself keeps its own attributes
            if name.startswith("../") or name == ".." or posixpath.isabs(name):
                raise InvalidArgument(f"archive entry {member.name!r}: leaves the destination")
            full = os.path.join(real_dest, name)
            if not _inside(os.path.realpath(os.path.dirname(full)), real_dest):
                raise InvalidArgument(f"archive entry {member.name!r}: its directory resolves outside {dest}")
            if member.islnk():
                link = renamed(member.linkname, rename)
                if not _inside(os.path.realpath(os.path.join(real_dest, link)), real_dest):
                    raise InvalidArgument(f"archive entry {member.name!r}: hard link to outside {dest}")
                member.linkname = link
            if os.path.islink(full):
                os.unlink(full)  # replace a symlink, never write through it
            member.name = name
            if not keep_owner:
                member.uid, member.gid = uid, gid
            # Every check above is ours; tarfile's own filters refuse absolute symlinks, which
            # containers are full of (docker cp keeps them).
            tar.extract(member, real_dest, numeric_owner=True, filter="fully_trusted")


async def extract(chunks: AsyncIterable[bytes], dest: Path, rename: tuple[str, str] | None,
                  keep_owner: bool) -> None:
    reader = BlockingReader(chunks, asyncio.get_running_loop())
    try:
        await asyncio.to_thread(_extract_all, reader, dest, rename, keep_owner)
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"the archive from the container: {exc}") from None
    except DockyardError:
        raise
    except OSError as exc:
        raise local_error(exc) from None

