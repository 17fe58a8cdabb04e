"""dock images ls|rm|tag|label.

Each subcommand is an `add_<name>(cmds)` function that declares its parser and handler;
`SUBCOMMANDS` lists them in help order. To add one (inspect, import, export, unpack ...),
write its `add_` function and handler — here or in a module of its own — and append it.

Image arguments are looked up as given first, then in Docker's normalized form, so `busybox`
finds `docker.io/library/busybox:latest`; new names (tag targets) are stored normalized.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from dock.args import add_prune_options, parse_labels
from dock.client import Client
from dock.commands.image_transfer import TRANSFER_SUBCOMMANDS
from dock.dockerview import image_row
from dock.formatting import IMAGES_HEADERS, add_format_option, emit_rows, is_template
from dock.images import ImageInfo, ImageSize
from dock.output import emit_json, emit_table, human_size, labels_text, say, to_jsonable
from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition
from dockyard_common.reference import normalize
from dockyard_common.types import Container

_SHORT_TYPES = {
    "application/vnd.oci.image.index.v1+json": "oci-index",
    "application/vnd.oci.image.manifest.v1+json": "oci-manifest",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-list",
    "application/vnd.docker.distribution.manifest.v2+json": "docker-manifest",
}


def short_type(media_type: str) -> str:
    return _SHORT_TYPES.get(media_type, media_type or "-")


SIZE_CONCURRENCY = 8  # images whose sizes are asked for at once


def image_json(img: ImageInfo, size: ImageSize | None = None) -> dict[str, Any]:
    """An image as `--format json` prints it (times in ISO 8601; sizes in bytes when known)."""
    out: dict[str, Any] = to_jsonable(img)
    for key in ("created_at", "updated_at"):
        value = getattr(img, key)
        out[key] = value.isoformat() if value is not None else None
    if size is not None:
        out["size"] = size.content
        out["unpacked"] = dict(size.unpacked)
    return out


def unpacked_text(size: ImageSize) -> str:
    """`overlayfs=1.2 MiB,native=3.4 MiB`, or `-` when no snapshotter has it unpacked."""
    return ",".join(f"{sn}={human_size(n)}" for sn, n in sorted(size.unpacked.items())) or "-"


async def image_sizes(client: Client, images: list[ImageInfo]) -> list[ImageSize]:
    gate = asyncio.Semaphore(SIZE_CONCURRENCY)

    async def one(img: ImageInfo) -> ImageSize:
        async with gate:
            return await client.images.size(img)

    return list(await asyncio.gather(*(one(i) for i in images)))


def add_ls(cmds: Any) -> None:
    p = cmds.add_parser("prune", help="remove dangling images no container uses (-a: every image no container uses)")
    p.add_argument("--all", "-a", action="store_true", help="every image no container uses, not only dangling ones")
    add_prune_options(p)
    p.set_defaults(handler=prune_unused)
    p = cmds.add_parser("ls", aliases=["list"], help="list images")
    p.add_argument("--quiet", "-q", action="store_true", help="print only names")
    p.add_argument("filters", nargs="*",
                   help="containerd filters, e.g. name~=busybox, labels.team==red, target.mediatype~=index")
    add_format_option(p)
    p.set_defaults(handler=ls)


def add_rm(cmds: Any) -> None:
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove images")
    p.add_argument("--sync", action="store_true", help="collect garbage before returning")
    p.add_argument("names", nargs="+")
    p.set_defaults(handler=rm)


def add_tag(cmds: Any) -> None:
    p = cmds.add_parser("tag", help="give an image more names")
    p.add_argument("--force", "-f", action="store_true", help="replace an image that has the new name")
    p.add_argument("source")
    p.add_argument("targets", nargs="+", metavar="target")
    p.set_defaults(handler=tag)


def add_label(cmds: Any) -> None:
    p = cmds.add_parser("label", help="set (KEY=VALUE) or remove (KEY=) labels of an image")
    p.add_argument("name")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=label)


SUBCOMMANDS: list[Callable[[Any], None]] = [add_ls, add_rm, add_tag, add_label, *TRANSFER_SUBCOMMANDS]


def register(sub: Any) -> None:
    group = sub.add_parser("images", aliases=["image", "i"], help="manage images")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    for add in SUBCOMMANDS:
        add(cmds)
    p = sub.add_parser("rmi", help="remove images, refusing one a container uses (Docker's; -f: even so)")
    p.add_argument("--force", "-f", action="store_true", help="remove it even when a container uses it")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=rmi, sync=False)


async def ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.images.list(*args.filters)
    if args.quiet:
        for img in found:
            print(img.name)
        return 0
    sizes = await image_sizes(client, found)
    if args.format == "json":
        emit_json([image_json(i, s) for i, s in zip(found, sizes, strict=True)])
        return 0
    rows = list(zip(found, sizes, strict=True))
    if is_template(args.format):  # Docker's --format '{{.Repository}}:{{.Tag}}'
        now = datetime.now(UTC)
        emit_rows(args.format, [image_row(i.name, i.target.digest, i.labels, i.created_at, now,
                                          max(s.unpacked.values()) if s.unpacked else s.content)
                                for i, s in rows], IMAGES_HEADERS)
        return 0
    emit_table(rows, [
        ("REF", lambda r: r[0].name),
        ("TYPE", lambda r: short_type(r[0].target.media_type)),
        ("DIGEST", lambda r: r[0].target.digest),
        ("SIZE", lambda r: human_size(r[1].content)),  # as ctr images ls: this platform's blobs
        ("UNPACKED", lambda r: unpacked_text(r[1])),  # as docker images: the snapshots' disk usage
        ("LABELS", lambda r: labels_text(r[0].labels)),
    ])
    return 0


async def rmi(client: Client, args: argparse.Namespace) -> int:
    """Docker's rmi: as `images rm`, but an image a container was made from stays unless -f (with
    containerd the container keeps its snapshot either way; Docker's rule keeps the name it shows)."""
    return await rm(client, args, users=None if args.force else await image_users(client))


async def image_users(client: Client) -> dict[str, list[str]]:
    """Image name → the ids of the containers made from it."""
    return users_by_image(await client.containers.list())


def users_by_image(containers: Iterable[Container]) -> dict[str, list[str]]:
    """Image name → the ids of those of `containers` made from it (what makes an image in use)."""
    users: dict[str, list[str]] = {}
    for c in containers:
        if c.image:
            users.setdefault(c.image, []).append(c.id)
    return users


async def rm(client: Client, args: argparse.Namespace, users: dict[str, list[str]] | None = None) -> int:
    failed = 0
    for name in args.names:
        try:
            img = await client.images.find(name)
            if users and img.name in users:
                raise FailedPrecondition(f"unable to remove image {img.name}: container {users[img.name][0]} uses "
                                         "it (remove the container, or use -f)")
            await client.images.delete(img.name, sync=args.sync)
        except DockyardError as exc:
            say(str(exc))
            failed = 1
            continue
        print(img.name)
    return failed


async def tag(client: Client, args: argparse.Namespace) -> int:
    src = await client.images.find(args.source)
    made: list[ImageInfo] = []
    for target in args.targets:
        try:
            made.append(await client.images.tag(src.name, target))
        except AlreadyExists:
            if not args.force:
                raise
            # ctr's --force: the old record goes, the name now points at the source's target.
            await client.images.delete(normalize(target))
            made.append(await client.images.tag(src.name, target))
    if args.format == "json":
        emit_json([image_json(i) for i in made])
    else:
        for img in made:
            print(img.name)
    return 0


async def label(client: Client, args: argparse.Namespace) -> int:
    img = await client.images.find(args.name)
    img = await client.images.set_labels(img.name, parse_labels(args.labels))
    if args.format == "json":
        emit_json(image_json(img))
    else:
        print(labels_text(img.labels))
    return 0


async def prune_unused(client: Client, args: argparse.Namespace) -> int:
    from dock.commands import prune  # the prune module pulls in verbs and runner: only for this command

    return await prune.image_prune(client, args)
