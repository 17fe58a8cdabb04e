"""Update masks, applied the way containerd's metadata stores apply them.

An Update request carries the new object and a list of field paths (a protobuf FieldMask). The
store copies only the named fields from the new object onto the stored one:

- `labels` replaces the whole label map;
- `labels.<key>` sets that one label from the new object's labels, or deletes it when the new
  object does not have it. The key is everything after the FIRST dot, because label keys
  contain dots and slashes (`labels.containerd.io/gc.ref.content.l.0`);
- any other path names a top-level field the store knows how to replace as a unit;
- an empty mask means "every updatable field" — the caller decides what that is.

A label with an empty value is never stored (containerd's stores drop them on write), so setting
a label to "" through a mask also deletes it.

Example (an images store):
    fields, label_paths = split_paths(mask, {"labels", "target", "annotations"},
                                      kind="image", name=image.name)
    if "target" in fields: stored.target = new.target
    stored.labels = apply_label_paths(stored.labels, new.labels, label_paths)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote

LABELS = "labels"


def split_paths(paths: Iterable[str], allowed: set[str] | frozenset[str], *,
                kind: str = "", name: str = "", maps: Iterable[str] = ()
                ) -> tuple[set[str], list[str]]:
    """Split a mask into (top-level fields, label paths), refusing paths the store cannot update.

    `allowed` names the updatable top-level fields. When `labels` is allowed, `labels` and
    `labels.<key>` paths are returned as label paths, in mask order (order matters when both
    appear), for `apply_label_paths`. Other map fields listed in `maps` (an image's
    `annotations`, a container's `extensions`) that are allowed also admit `<map>.<key>` paths;
    those come back verbatim in the top-level set, for `apply_label_paths(..., field=<map>)`.

    An unknown path raises InvalidArgument in containerd's words:
    `cannot update "spec.x" field on image "docker.io/library/busybox:latest"` (kind and name
    are optional: containers omit the kind, namespaces omit both).
    """
    per_key = {m for m in maps if m in allowed}
    fields: set[str] = set()
    label_paths: list[str] = []
    for path in paths:
        head = path.split(".", 1)[0]
        if head == LABELS and LABELS in allowed:
            label_paths.append(path)
        elif path in allowed or head in per_key:
            fields.add(path)
        else:
            raise InvalidArgument(_cannot_update(path, kind, name))
    return fields, label_paths


def _cannot_update(path: str, kind: str, name: str) -> str:
    where = " ".join(part for part in (kind, go_quote(name) if name else "") if part)
    message = f"cannot update {go_quote(path)} field"
    return f"{message} on {where}" if where else message


def apply_label_paths(current: Mapping[str, str], new: Mapping[str, str], paths: Iterable[str], *,
                      field: str = LABELS) -> dict[str, str]:
    """The map `current` becomes after applying the `field` / `field.<key>` paths from `new`.

    Neither input is modified. Paths for other fields are ignored, so a whole mask may be passed.
    Empty values are dropped from the result, as containerd's stores drop them on write.
    """
    result = dict(current)
    prefix = field + "."
    for path in paths:
        if path == field:
            result = dict(new)
        elif path.startswith(prefix):
            key = path[len(prefix):]
            if key in new:
                result[key] = new[key]
            else:
                result.pop(key, None)
    return {k: v for k, v in result.items() if v != ""}
