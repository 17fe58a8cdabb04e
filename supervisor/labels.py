"""containerd's label rules: what a label on a namespace, image, container, lease, blob or
snapshot may be.

A label's key and value together must fit in 4096 bytes (UTF-8), so labels stay cheap to store
and to send on every List. Keys must not be empty (containerd's stores cannot address an empty
key through an update mask, so we refuse it up front). Values may be empty: an empty value in an
update means "delete this label" (see `supervisor.fieldpaths`).
"""

from __future__ import annotations

from collections.abc import Mapping

from dockyard_common.errors import InvalidArgument
from dockyard_common.types import MAX_LABEL_SIZE, label_size

MAX_SIZE = MAX_LABEL_SIZE
# containerd cuts the key to its first 10 bytes in the message, so a huge key is not echoed.
_KEY_PREVIEW_BYTES = 10


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def validate_label(key: str, value: str) -> None:
    """Raise InvalidArgument unless `key`=`value` is an acceptable label."""
    if not key:
        raise InvalidArgument("label key must not be empty")
    if label_size(key, value) > MAX_SIZE:
        raw_key = _utf8(key)
        # Cutting may split a character: drop the partial one rather than print garbage.
        preview = raw_key[:_KEY_PREVIEW_BYTES].decode("utf-8", "ignore")
        raise InvalidArgument(
            f"label key and value greater than maximum size ({MAX_SIZE} bytes), key: {preview}")


def validate(labels: Mapping[str, str], context: str = "") -> None:
    """Validate every label; `context` prefixes the message as containerd's stores do
    (e.g. `image.Labels: label key and value greater than ...`)."""
    for key, value in labels.items():
        try:
            validate_label(key, value)
        except InvalidArgument as e:
            if not context:
                raise
            raise InvalidArgument(f"{context}: {e.message}") from None
