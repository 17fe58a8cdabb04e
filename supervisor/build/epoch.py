"""SOURCE_DATE_EPOCH: what makes a build reproducible (buildkit's build arg of that name).

    epoch = source_date_epoch(request.build_args)   # None, or whole seconds since 1970

With it, the builder gives the image config's `created`, every new history entry's `created`
and every layer entry's mtime (clamped: nothing newer than it; whiteouts get it) that time, so
two builds of the same context, also with --no-cache or on another daemon, give the same
digests. The client (`dock build`) passes its environment's SOURCE_DATE_EPOCH as the build arg
when the command line does not set one, as buildx does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from dockyard_common.errors import InvalidArgument

NAME = "SOURCE_DATE_EPOCH"
_MAX = 253402300799  # 9999-12-31T23:59:59Z: what an image config's RFC 3339 time can say


def source_date_epoch(build_args: Iterable[tuple[str, str]]) -> int | None:
    """The last SOURCE_DATE_EPOCH build arg as seconds, None when unset or empty."""
    value = ""
    for key, v in build_args:
        if key == NAME:
            value = v
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > _MAX:
        raise InvalidArgument(f"build: {NAME}={value!r}: want whole seconds since 1970-01-01 UTC")
    return int(value)


def epoch_time(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
