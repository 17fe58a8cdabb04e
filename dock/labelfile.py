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

from dock.args import parse_labels
from dockyard_common.errors import InvalidArgument

_BOM = "\ufeff"
MAX_BYTES = 1 << 20  # labels travel in the container's record: a bigger file is a mistake (/dev/zero)


def parse_label_file(path: str) -> dict[str, str]:
    """The labels of one file, later lines winning; InvalidArgument names the file and the line."""
    try:
        with open(path, "rb") as f:  # bytes: lines split below as Docker does, not by Python's newlines
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"--label-file {path}: {exc.strerror or 'cannot be read'}") from None
    if len(data) > MAX_BYTES:
        raise InvalidArgument(f"--label-file {path}: larger than {MAX_BYTES >> 20} MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"--label-file {path}: not UTF-8 text") from None
    found: dict[str, str] = {}
    # Lines end at \n (a \r before it goes), as Go's bufio.Scanner splits them.
    for number, raw in enumerate(text.removeprefix(_BOM).split("\n"), 1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        where = f"--label-file {path}, line {number}"
        if not key or any(c.isspace() for c in key):
            raise InvalidArgument(f"{where}: {line[:60]!r} is not KEY=VALUE (a key is non-empty, without spaces)")
        if "\0" in line:
            raise InvalidArgument(f"{where}: holds a NUL byte")
        found[key] = value
    return found


def labels(files: Sequence[str], items: Sequence[str]) -> dict[str, str]:
    """--label-file's labels, then --label's (`KEY=VALUE`, or KEY alone: empty) over them."""
    merged: dict[str, str] = {}
    for path in files:
        merged.update(parse_label_file(path))
    merged.update(parse_labels(list(items)))
    return merged
