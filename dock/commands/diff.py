"""dock diff: what changed in a container's filesystem against its image (docker diff).

    dock diff web
    C /etc
    A /etc/app.conf
    D /etc/motd

The daemon's differ (the one `dock commit` uses) writes the container's changes as an
uncompressed layer tar; its entries are the added or changed names, its `.wh.` whiteouts the
deleted ones. A name the image (the snapshot's parent) has is a change (C), else an add (A).
The mount points the runtime made for the spec's mounts (/run, a volume's directory) are not the
container's changes and are left out, as Docker's init layer hides its own.
Sorted by path as Docker sorts them; `--format json`: a list of {"path", "kind"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import posixpath
import tempfile
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import IO, Any

from dock.args import containers_arg
from dock.client import Client
from dock.lookup import resolve
from dock.output import emit_json
from dock.rootfs import container_layers, in_tree, mounted_readonly
from dock.tarfiles import Unkept
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import MEDIA_TYPE_OCI_LAYER
from dockyard_common.jsonutil import json_value
from dockyard_common.types import Mount

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"  # a layer's "the lower directory's contents are gone" marker
ADDED, CHANGED, DELETED = "A", "C", "D"


def register(sub: Any) -> None:
    p = sub.add_parser("diff", help="list what changed in a container's filesystem (A added, C changed, D deleted)")
    containers_arg(p, "container", help="container name, id or unique id prefix")
    p.set_defaults(handler=diff)


@dataclass(frozen=True)
class Change:
    path: str  # absolute, as in the container
    kind: str  # A, C or D


def entry_change(name: str, in_image: bool) -> Change | None:
    """The change one layer tar entry `name` says: a whiteout is a deletion, anything else an
    add or (when the image has the name) a change; None for an opaque marker (a directory's
    lower contents hidden: the directory itself has its own entry)."""
    rel = name.removeprefix("./").strip("/")
    parent, base = posixpath.split(rel)
    if base == OPAQUE:
        return None
    if base.startswith(WHITEOUT):
        return Change("/" + posixpath.join(parent, base.removeprefix(WHITEOUT)), DELETED)
    return Change("/" + rel, CHANGED if in_image else ADDED)


def mount_points(spec: object) -> set[str]:
    """The destinations of an OCI spec's mounts and the directories above them (made by the
    runtime when the image lacks them), "/" itself aside."""
    points: set[str] = set()
    mounts = spec.get("mounts") if isinstance(spec, dict) else None
    for m in mounts if isinstance(mounts, list) else []:
        dest = m.get("destination") if isinstance(m, dict) else None
        if isinstance(dest, str):
            path = posixpath.normpath("/" + dest.lstrip("/"))  # "//x" would stay "//x" (POSIX)
            while path.strip("/"):
                points.add(path)
                path = posixpath.dirname(path)
    return points


def sort_changes(changes: list[Change]) -> list[Change]:
    """By path, bytewise (Go's string order, as Docker sorts them)."""
    return sorted(changes, key=lambda c: c.path.encode("utf-8", "surrogateescape"))


def layer_changes(layer: IO[bytes], lower: list[Mount], hidden: AbstractSet[str] = frozenset()) -> list[Change]:
    """The changes of an uncompressed layer tar, the image read from `lower` (no mounts: the
    container has no image, everything is added); the adds of `hidden` paths left out.
    Blocking: run it in a thread."""
    found: list[Change] = []
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(mounted_readonly(lower)) if lower else None
        for member in stack.enter_context(Unkept.open(fileobj=layer, mode="r:")):
            base = posixpath.basename(member.name.rstrip("/"))
            in_image = image is not None and not base.startswith(WHITEOUT) and in_tree(image, member.name)
            change = entry_change(member.name, in_image)
            if change is not None and not (change.kind == ADDED and change.path in hidden):
                found.append(change)
    return sort_changes(found)


async def diff(client: Client, args: argparse.Namespace) -> int:
    c = await resolve(client, args.container)
    spec = json_value(c.spec.value, f"container {c.id}'s spec", InvalidArgument) if c.spec is not None else None
    async with container_layers(client, c) as layers:
        desc = await client.diff.diff(layers.lower, layers.upper, media_type=MEDIA_TYPE_OCI_LAYER)
        with tempfile.TemporaryFile(prefix="dock-diff-") as blob:  # unlinked at once: nothing left behind
            async for chunk in client.content.read(desc.digest):
                await asyncio.to_thread(blob.write, chunk)
            blob.seek(0)
            changes = await asyncio.to_thread(layer_changes, blob, layers.lower, mount_points(spec))
    if args.format == "json":
        emit_json([{"path": ch.path, "kind": ch.kind} for ch in changes])
    else:
        print("".join(f"{ch.kind} {_printable(ch.path)}\n" for ch in changes), end="")
    return 0


def _printable(path: str) -> str:
    """A path whose bytes are not UTF-8 (kept as surrogates), with those bytes as \\x escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
