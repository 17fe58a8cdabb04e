"""Images: names in a namespace that point at a target descriptor (containerd's image store).

Words
    image       a record `(namespace, name)` with a target, labels and timestamps. The name
                is stored as the client sends it (clients normalize references themselves,
                see `dockyard_common.reference`), but unlike containerd only if the reference
                grammar reads it (`check_image_name`): no `..`, `/abs`, `%2f`, blanks,
                control characters, uppercase repositories or names longer than a reference.
    target      the descriptor the name points at, usually a manifest or an index: media
                type, digest, size and annotations. Nothing checks that the content exists:
                a client may create the image before or after writing the blobs.
    labels      string pairs on the image; an empty value means "no such label".

Lifecycle and semantics (containerd's `metadata/images.go`)
    create  refuses an existing name (AlreadyExists); creates the namespace implicitly;
            timestamps are the server's (whatever the client sent is ignored).
    update  needs the image to exist (NotFound: `ctr images import` relies on it to fall back
            to create). With no field paths the target and labels are replaced as a whole;
            otherwise paths apply in order: `labels`, `labels.<key>`, `target` (as a unit,
            annotations included), `annotations`, `annotations.<key>`. Any other path is
            InvalidArgument. The result is validated like a create; created_at is kept.
    delete  removes the record; the target's content stays until the garbage collector finds
            nothing else keeps it. `sync=True` waits for a collection (`collect`); otherwise
            `on_delete` asks for one to be scheduled.

    store = ImageStore(db, collect=collector.collect, on_delete=collector.schedule)
    img = await store.create("default", Image("docker.io/library/busybox:latest",
                                              Descriptor(MEDIA_TYPE, "sha256:…", 528)))

Errors (messages in containerd's words)
    InvalidArgument  `image name must not be empty`, `image name "a/../b": invalid reference
                     format: ...` (create, and update before the lookup), `Target.Digest "x" invalid: invalid
                     checksum digest format`, `Target.Size must be greater than zero`,
                     `Target.MediaType must be set`, `image.Labels: label key …`,
                     `cannot update "x" field on image "n"`, bad filters
    NotFound         `image "n": not found`
    AlreadyExists    `image "n": already exists`

Garbage collection: images are roots (`gc.image_roots` reads the `images` and `image_labels`
tables): an image keeps its target and whatever its `containerd.io/gc.ref.*` labels name.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.goquote import go_quote
from dockyard_common.imagespec import Descriptor
from dockyard_common.reference import check_image_name, digest_problem
from supervisor import filters
from supervisor import labels as labelrules
from supervisor.fieldpaths import apply_label_paths
from supervisor.metadata import namespaces
from supervisor.metadata.db import Database, ReadCache
from supervisor.timeutil import now, parse_iso

ANNOTATIONS = "annotations"


@dataclass
class Image:
    name: str
    target: Descriptor = field(default_factory=Descriptor)
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None  # set by the store; ignored on create and update
    updated_at: datetime | None = None


async def _nothing() -> None:
    return None


def _no_op() -> None:
    return None


def validate(image: Image) -> None:
    """containerd's validateImage: name, labels, then the target's digest, size, media type."""
    if not image.name:
        raise InvalidArgument("image name must not be empty")
    # Beyond containerd, which stores any name: one no reference grammar reads is refused.
    check_image_name(image.name)
    labelrules.validate(image.labels, "image.Labels")
    target = image.target
    problem = digest_problem(target.digest)
    if problem is not None:
        raise InvalidArgument(f"Target.Digest {go_quote(target.digest)} invalid: {problem}")
    if target.size <= 0:
        raise InvalidArgument("Target.Size must be greater than zero")
    if not target.media_type:
        raise InvalidArgument("Target.MediaType must be set")


def _not_found(name: str) -> NotFound:
    return NotFound(f"image {go_quote(name)}")


def adaptor(image: Image) -> filters.Adaptor:
    """containerd's image filter fields: name, target.digest, target.mediatype, labels.*,
    annotations.* (the target's)."""
    t = image.target
    return filters.adaptor_from({
        "name": image.name,
        "target": {k: v for k, v in (("digest", t.digest), ("mediatype", t.media_type)) if v},
        "labels": image.labels,
        ANNOTATIONS: t.annotations,
    })


# --- rows ---------------------------------------------------------------------------------

_COLUMNS = "name, target_media_type, target_digest, target_size, target_annotations, created_at, updated_at"


def _labels(conn: sqlite3.Connection, ns: str, name: str) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM image_labels WHERE namespace=? AND image=?", (ns, name))
    return {r["key"]: r["value"] for r in rows}


def _from_row(row: sqlite3.Row, labels: dict[str, str]) -> Image:
    target = Descriptor(row["target_media_type"], row["target_digest"], row["target_size"],
                        json.loads(row["target_annotations"]))
    return Image(row["name"], target, labels, parse_iso(row["created_at"]), parse_iso(row["updated_at"]))


def _read(conn: sqlite3.Connection, ns: str, name: str) -> Image | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM images WHERE namespace=? AND name=?", (ns, name)).fetchone()
    return None if row is None else _from_row(row, _labels(conn, ns, name))


def _write(conn: sqlite3.Connection, ns: str, image: Image, *, insert: bool) -> None:
    assert image.created_at is not None and image.updated_at is not None
    t = image.target
    values = (t.media_type, t.digest, t.size, json.dumps(t.annotations, sort_keys=True),
              image.created_at.isoformat(), image.updated_at.isoformat(), ns, image.name)
    if insert:
        conn.execute(
            "INSERT INTO images (target_media_type, target_digest, target_size, target_annotations, "
            "created_at, updated_at, namespace, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
    else:
        conn.execute(
            "UPDATE images SET target_media_type=?, target_digest=?, target_size=?, target_annotations=?, "
            "created_at=?, updated_at=? WHERE namespace=? AND name=?", values)
    conn.execute("DELETE FROM image_labels WHERE namespace=? AND image=?", (ns, image.name))
    conn.executemany("INSERT INTO image_labels (namespace, image, key, value) VALUES (?, ?, ?, ?)",
                     [(ns, image.name, k, v) for k, v in image.labels.items()])


def _stored_form(image: Image) -> Image:
    """What a write keeps: empty label and annotation values are dropped, as containerd does."""
    target = replace(image.target, annotations={k: v for k, v in image.target.annotations.items() if v})
    return replace(image, target=target, labels={k: v for k, v in image.labels.items() if v})


def _apply_paths(stored: Image, new: Image, paths: Iterable[str]) -> Image:
    """`stored` with the masked fields taken from `new`, path by path in mask order."""
    labels = dict(stored.labels)
    target = replace(stored.target, annotations=dict(stored.target.annotations))
    for path in paths:
        head = path.split(".", 1)[0]
        if path == "labels" or (head == "labels" and path != head):
            labels = apply_label_paths(labels, new.labels, [path])
        elif path == "target":
            target = replace(new.target, annotations=dict(new.target.annotations))
        elif path == ANNOTATIONS or (head == ANNOTATIONS and path != head):
            target.annotations = apply_label_paths(target.annotations, new.target.annotations, [path],
                                                   field=ANNOTATIONS)
        else:
            raise InvalidArgument(f"cannot update {go_quote(path)} field on image {go_quote(new.name)}")
    return replace(stored, labels=labels, target=target)


# --- the store ------------------------------------------------------------------------------


class ImageStore:
    def __init__(self, db: Database, *, collect: Callable[[], Awaitable[object]] = _nothing,
                 on_delete: Callable[[], None] = _no_op) -> None:
        self.db = db
        self._collect = collect
        self._on_delete = on_delete
        self._listed: ReadCache[str, tuple[Image, ...]] = ReadCache(db, db.watch("images", "image_labels"))

    async def get(self, ns: str, name: str) -> Image:
        def tx(conn: sqlite3.Connection) -> Image:
            found = _read(conn, ns, name)
            if found is None:
                raise _not_found(name)
            return found

        return await self.db.read(tx)

    async def list(self, ns: str, filter_texts: Iterable[str] = ()) -> builtins.list[Image]:
        """Images of `ns` matching any of the filters (none: all), ordered by name. Shared with
        other callers (a cached read): do not modify them."""
        match = filters.parse_all(filter_texts)

        def tx(conn: sqlite3.Connection) -> tuple[Image, ...]:
            labels: dict[str, dict[str, str]] = {}
            for r in conn.execute("SELECT image, key, value FROM image_labels WHERE namespace=?", (ns,)):
                labels.setdefault(r["image"], {})[r["key"]] = r["value"]
            rows = conn.execute(f"SELECT {_COLUMNS} FROM images WHERE namespace=? ORDER BY name", (ns,))
            return tuple(_from_row(r, labels.get(r["name"], {})) for r in rows)

        found = await self._listed.get(ns, tx)
        if match is filters.ALWAYS:
            return builtins.list(found)
        return [img for img in found if match.match(adaptor(img))]

    async def create(self, ns: str, image: Image) -> Image:
        image = _stored_form(image)
        validate(image)

        def tx(conn: sqlite3.Connection) -> Image:
            if conn.execute("SELECT 1 FROM images WHERE namespace=? AND name=?", (ns, image.name)).fetchone():
                raise AlreadyExists(f"image {go_quote(image.name)}")
            namespaces.ensure(conn, ns)
            when = now()
            created = replace(image, created_at=when, updated_at=when)
            _write(conn, ns, created, insert=True)
            return created

        return await self.db.write(tx)

    async def update(self, ns: str, image: Image, paths: Iterable[str] = ()) -> Image:
        if not image.name:
            raise InvalidArgument("image name is required for update")
        check_image_name(image.name)
        paths = builtins.list(paths)

        def tx(conn: sqlite3.Connection) -> Image:
            stored = _read(conn, ns, image.name)
            if stored is None:
                raise _not_found(image.name)
            merged = _apply_paths(stored, image, paths) if paths else replace(image)
            merged = _stored_form(merged)
            validate(merged)
            updated = replace(merged, name=stored.name, created_at=stored.created_at, updated_at=now())
            _write(conn, ns, updated, insert=False)
            return updated

        return await self.db.write(tx)

    async def delete(self, ns: str, name: str, *, sync: bool = False) -> None:
        """Remove the image; with `sync`, return only after a garbage collection has run."""

        def tx(conn: sqlite3.Connection) -> None:
            gone = conn.execute("DELETE FROM images WHERE namespace=? AND name=?", (ns, name)).rowcount
            if not gone:
                raise _not_found(name)

        await self.db.write(tx, frees=True)
        if sync:
            await self._collect()
        else:
            self._on_delete()

