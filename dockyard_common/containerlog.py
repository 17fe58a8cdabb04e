"""Container logs on disk: the contract between the shim that writes them and the daemon that reads.

A container whose task should be logged has a `log.json` in its bundle (written by the daemon
before it starts the shim): {"path": "<root>/logs/<ns>/<id>", "max_size": bytes, "max_file": n}.
The shim then writes the init's stdout and stderr to `<path>/container.log` in the CRI log format,
one record per line::

    2026-12-05T20:48:05.123456789Z stdout F hello
    2026-12-05T20:48:05.123456789Z stderr P the first 16 KiB of a longer line…

(`F`: the line ends here; `P`: a piece of a longer line, continued by the next record of the same
stream.) Timestamps are UTC with nine fraction digits, so records sort as text. When the file
would pass max_size it is renamed to `container.log.1` (`.1` to `.2`, …, the oldest beyond
max_file - 1 overwritten) and a new one started. The live writer holds an exclusive flock on
`<path>/writer.lock`: a reader that can take it knows nobody is writing.

Labels on the container ask for it (`dock run` sets them): `dockyard.log.driver=local`, and
optionally `dockyard.log.max-size` / `dockyard.log.max-file` over the daemon's defaults.

`dockyard.log.path` (the CRI's: kubelet names the file) puts the log at that absolute file
instead: log.json then also has {"file": "<name>"}, the log is `<path>/<name>` (rotated as
`<name>.1`, …, and only if max-size/max-file labels ask: kubelet rotates its logs itself), and
the writer's lock is `<path>/.<name>.lock`, so the containers of a pod may share a directory.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument

CONFIG_FILE = "log.json"  # in the bundle
CURRENT = "container.log"
WRITER_LOCK = "writer.lock"
MAX_LINE = 16 * 1024  # longer lines are split into P records (as containerd's CRI logger)

LABEL_DRIVER = "dockyard.log.driver"
LABEL_MAX_SIZE = "dockyard.log.max-size"
LABEL_MAX_FILE = "dockyard.log.max-file"
LABEL_PATH = "dockyard.log.path"
DRIVER = "local"

STDOUT = "stdout"
STDERR = "stderr"


def rotated(n: int, file: str = CURRENT) -> str:
    """The file name of the n-th older file (0: the current one)."""
    return file if n == 0 else f"{file}.{n}"


def lock_name(file: str = CURRENT) -> str:
    """The writer's lock beside the log `file` (one per file: a directory may hold several)."""
    return WRITER_LOCK if file == CURRENT else f".{file}.lock"


@dataclass(frozen=True)
class Record:
    time_ns: int
    stream: str
    partial: bool
    content: bytes  # without the record's newline


def timestamp(ns: int) -> bytes:
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode() + b".%09dZ" % frac


_TS = re.compile(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_timestamp(text: bytes) -> int:
    """RFC 3339 (fraction and zone optional as Go's RFC3339Nano writes them) → ns since the epoch."""
    m = _TS.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = int((m.group(7) or b"0").ljust(9, b"0"))
    zone = m.group(8)
    offset = 0 if zone == b"Z" else (1 if zone[:1] == b"+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return (calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - offset) * 1_000_000_000 + frac


def parse_record(line: bytes) -> Record | None:
    """One line of a log file (without its newline); None for a line that is not a record."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    try:
        ns = parse_timestamp(parts[0])
    except ValueError:
        return None
    return Record(ns, parts[1].decode("ascii", "replace"), parts[2] == b"P", parts[3] if len(parts) == 4 else b"")


_SIZE = re.compile(r"(\d+)\s*([kmg]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """`max-size` as Docker writes it: bytes, or a number with k, m or g."""
    m = _SIZE.fullmatch(text.strip())
    if m is None or int(m.group(1)) <= 0:
        raise InvalidArgument(f"invalid log max-size {text!r}: want a positive number of bytes, or with k, m or g")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_max_file(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidArgument(f"invalid log max-file {text!r}: want a whole number of at least 1")
    return n


def labels_from_opts(opts: list[str]) -> dict[str, str]:
    """`--log-opt max-size=10m --log-opt max-file=3` → the labels that ask for a log (checked)."""
    labels = {LABEL_DRIVER: DRIVER}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:
            raise InvalidArgument(f"invalid --log-opt {opt!r}: want KEY=VALUE")
        if key == "max-size":
            parse_size(value)
            labels[LABEL_MAX_SIZE] = value
        elif key == "max-file":
            parse_max_file(value)
            labels[LABEL_MAX_FILE] = value
        else:
            raise InvalidArgument(f"unknown --log-opt {key!r}: max-size and max-file are known")
    return labels
