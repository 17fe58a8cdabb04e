"""Sizes as Docker's flags write them (`--memory 1g`, `--shm-size 64m`): binary units, within int64."""

from __future__ import annotations

import re

from dockyard_common.errors import InvalidArgument

MAX_BYTES = 2**63 - 1  # sizes and counts are int64 in the spec's resources and in cgroup files

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """`1073741824`, `512m`, `1g`, `1.5G`, `64KiB`: binary units, as docker's --memory."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise InvalidArgument(f"invalid size {text!r}: want bytes, or a number with k, m, g or t")
    number, unit = m.group(1), _UNITS[m.group(2).lower()]
    value = int(number) * unit if number.isdigit() else int(float(number) * unit)  # whole numbers exactly
    if value <= 0:
        raise InvalidArgument(f"invalid size {text!r}: must be positive")
    if value > MAX_BYTES:
        raise InvalidArgument(f"invalid size {text!r}: larger than {MAX_BYTES} bytes")
    return value
