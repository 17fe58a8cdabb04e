"""dock history: how an image was made, from its config's history (docker history).

    dock history busybox
    IMAGE          CREATED        CREATED BY                                      SIZE       COMMENT
    a416a98b71e2   2 months ago   CMD ["sh"]                                      0 B
    <missing>      2 months ago   ADD busybox.tar.xz / # buildkit                 4.3 MiB    buildkit.dockerfile.v0

Newest first. Each entry that made a layer (not `empty_layer`) is matched, in order, with the
image's layers: SIZE is that layer's unpacked size when the namespace's snapshotter has it, else
its blob's size. CREATED BY is cut to 45 characters unless --no-trunc; `--format json` gives
every field in full; `--format TEMPLATE` Docker's fields (dock/dockerview.py).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dock.args import images_arg
from dock.client import Client
from dock.dockerview import history_row
from dock.formatting import HISTORY_HEADERS, add_format_option, emit_rows, is_template
from dock.lookup import SHORT_ID
from dock.output import emit_json, emit_table, human_size
from dock.ps import ago
from dock.runner import ResolvedImage, default_snapshotter, resolve_image
from dockyard_common.errors import DockyardError

MISSING = "<missing>"  # Docker's IMAGE for the entries below the top: no image of their own here
CREATED_BY_WIDTH = 45  # Docker's cut


def register(sub: Any) -> None:
    p = sub.add_parser("history", help="show how an image was made: its history entries, newest first")
    p.add_argument("--no-trunc", action="store_true", help="show CREATED BY in full")
    p.add_argument("--platform", default="", help="the platform's manifest of a multi-platform image")
    images_arg(p, "image", help="image name, e.g. busybox")
    add_format_option(p)
    p.set_defaults(handler=history)


@dataclass(frozen=True)
class Entry:
    id: str  # the image's config digest on the newest entry, else "<missing>"
    created: datetime | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool


def _created(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)  # RFC 3339, nanoseconds and "Z" too (Python 3.11)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def history_entries(config: dict[str, Any], config_digest: str, layer_sizes: list[int]) -> list[Entry]:
    """The config's history, newest first; the entries that made a layer take the sizes of
    `layer_sizes` (the layers, oldest first) in order, the others 0."""
    entries: list[Entry] = []
    sizes = iter(layer_sizes)
    for raw in config.get("history") or []:
        item = raw if isinstance(raw, dict) else {}
        empty = bool(item.get("empty_layer"))
        entries.append(Entry(MISSING, _created(item.get("created")), str(item.get("created_by") or ""),
                             0 if empty else next(sizes, 0), str(item.get("comment") or ""), empty))
    entries.reverse()
    if entries:
        top = entries[0]
        entries[0] = Entry(config_digest, top.created, top.created_by, top.size, top.comment, top.empty_layer)
    return entries


def created_by_text(text: str, truncate: bool) -> str:
    """As Docker shows it: tabs as spaces, cut to 45 characters with an ellipsis."""
    text = text.replace("\t", " ").replace("\n", " ")
    if truncate and len(text) > CREATED_BY_WIDTH:
        return text[:CREATED_BY_WIDTH - 1] + "…"
    return text


def short_image_id(digest: str) -> str:
    return digest if digest == MISSING else digest.removeprefix("sha256:")[:SHORT_ID]


async def layer_sizes(client: Client, image: ResolvedImage) -> list[int]:
    """Each layer's unpacked size in the namespace's snapshotter, else its blob's size."""
    snaps = client.snapshots.using(await default_snapshotter(client))

    async def size(i: int) -> int:
        try:
            return (await snaps.usage(image.chain_ids[i])).size
        except DockyardError:  # not unpacked there
            return image.manifest.layers[i].size
    return list(await asyncio.gather(*(size(i) for i in range(len(image.manifest.layers)))))


async def history(client: Client, args: argparse.Namespace) -> int:
    image = await resolve_image(client, args.image, args.platform)
    entries = history_entries(image.config.raw, image.manifest.config.digest, await layer_sizes(client, image))
    if args.format == "json":
        emit_json([{"id": e.id, "created": e.created.isoformat() if e.created else None,
                    "created_by": e.created_by, "size": e.size, "comment": e.comment,
                    "empty_layer": e.empty_layer} for e in entries])
        return 0
    now = datetime.now(UTC)

    def shown_id(e: Entry) -> str:
        return e.id if args.no_trunc else short_image_id(e.id)

    def created_by(e: Entry) -> str:
        return created_by_text(e.created_by, truncate=not args.no_trunc)

    if is_template(args.format):
        emit_rows(args.format, [history_row(shown_id(e), e.created, created_by(e), e.size, e.comment, now)
                                for e in entries], HISTORY_HEADERS)
        return 0
    emit_table(entries, [
        ("IMAGE", shown_id),
        ("CREATED", lambda e: ago(e.created, now)),
        ("CREATED BY", created_by),
        ("SIZE", lambda e: human_size(e.size)),
        ("COMMENT", lambda e: e.comment),
    ])
    return 0
