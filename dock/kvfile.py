"""The lines of Docker's KEY=VALUE files (`--env-file`, `--label-file`), read as docker/cli's
`opts.parseKeyValueFile` reads them: lines end at \\n (a \\r before it goes), a UTF-8 byte-order
mark on the first line and each line's leading whitespace go, blank lines and `#` comments are
skipped. What a line means is the caller's (runflags.parse_env_file, labelfile.parse_label_file).

The file is read whole but bounded: both kinds travel in the container's record (an environment
is bounded by the kernel's ARG_MAX, 2 MiB, anyway), and /dev/zero must end in an error, not
hang dock. A NUL byte is refused: no environment or label can hold one.
"""

from __future__ import annotations

from dockyard_common.errors import InvalidArgument

MAX_BYTES = 1 << 20
_BOM = "\ufeff"


def lines(path: str, flag: str) -> list[tuple[str, str]]:
    """(where, line) for each line that says something: `where` is "`flag` `path`, line N", for
    the caller's errors."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"{flag} {path}: {exc.strerror or 'cannot be read'}") from None
    if len(data) > MAX_BYTES:
        raise InvalidArgument(f"{flag} {path}: larger than {MAX_BYTES >> 20} MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{flag} {path}: not UTF-8 text") from None
    found = []
    for number, raw in enumerate(text.removeprefix(_BOM).split("\n"), 1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        where = f"{flag} {path}, line {number}"
        if "\0" in line:
            raise InvalidArgument(f"{where}: holds a NUL byte")
        found.append((where, line))
    return found
