"""Docker's `--label-file FILE` for `dock run` and `dock containers create`, merged with `--label`.

    # a comment, then KEY=VALUE lines; KEY alone is an empty value
    app=web
    tier

As docker/cli's `opts.parseKeyValueFile`: leading whitespace and a UTF-8 byte-order mark on the
first line go, the value is taken as written (no quotes removed, no trimming), a key that holds
whitespace or is empty is refused. Files are read in order and `--label` comes last, so it wins.
"""

from __future__ import annotations

from collections.abc import Sequence

from dock import kvfile
from dock.args import parse_labels
from dockyard_common.errors import InvalidArgument


def parse_label_file(path: str) -> dict[str, str]:
    """The labels of one file, later lines winning; InvalidArgument names the file and the line."""
    found: dict[str, str] = {}
    for where, line in kvfile.lines(path, "--label-file"):
        key, _, value = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise InvalidArgument(f"{where}: {line[:60]!r} is not KEY=VALUE (a key is non-empty, without spaces)")
        found[key] = value
    return found


def labels(files: Sequence[str], items: Sequence[str]) -> dict[str, str]:
    """--label-file's labels, then --label's (`KEY=VALUE`, or KEY alone: empty) over them."""
    merged: dict[str, str] = {}
    for path in files:
        merged.update(parse_label_file(path))
    merged.update(parse_labels(list(items)))
    return merged
