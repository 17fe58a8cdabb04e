"""Perform and undo `Mount` descriptions in tests, with mount(8) and umount(8)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

from dockyard_common.types import Mount


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split()[4]) for line in f]


def is_mounted(target: str) -> bool:
    # os.path.ismount misses bind mounts from the same filesystem.
    return os.path.realpath(target) in mount_points()


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    """Mount each description in order on `target` (or `target/<m.target>`)."""
    for m in mounts:
        dest = os.path.join(target, m.target.lstrip("/")) if m.target else target
        args = ["mount", "-t", m.type]
        if m.options:
            args += ["-o", ",".join(m.options)]
        res = subprocess.run([*args, m.source, dest], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise OSError(f"{' '.join(args)} {m.source} {dest}: {res.stderr.strip()}")


def unmount(target: str) -> None:
    """Unmount everything stacked on `target` and below it."""
    target = os.path.realpath(target)
    while is_mounted(target):
        res = subprocess.run(["umount", "--recursive", target], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise OSError(f"umount {target}: {res.stderr.strip()}")


def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path` (to check tests left nothing mounted)."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    return [p for p in mount_points() if (p + "/").startswith(prefix)]
