"""/proc/self/mountinfo as (mount point, filesystem type, super options) triples.

One reader for the shim (pivot_root's checks, the cgroup mount, the v1 hierarchies) and the daemon
(unmounting what it mounted, cgroup hierarchies to prune).
"""

from __future__ import annotations

import re

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040); most fields have none.
    if "\\" not in field:
        return field
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every line of a mountinfo text, in order."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if not sep or len(fields) < 5 or not rfields:
            continue
        out.append((_unescape(fields[4]), rfields[0], rfields[2] if len(rfields) > 2 else ""))
    return out


def mountinfo(path: str = MOUNTINFO) -> list[tuple[str, str, str]]:
    """`parse_mountinfo` of this mount namespace (or of the mountinfo file at `path`)."""
    with open(path) as f:
        return parse_mountinfo(f.read())
