"""An image config's run defaults (`config.Volumes`, `Env`, `Cmd`, ...) checked for what a
container can be made of. imagespec.parse_config checks their JSON types at import and pull;
this checks their *values*, which an untrusted image chooses, before anything is made from them:
`dock run`/`create` (dock/oci.py) and whoever else turns an image into a container.

- VOLUME paths are cleaned as Docker cleans them (filepath.Clean: `..` at `/` stays at `/`, so
  `/../../tmp` is `/tmp` in the container), duplicates after cleaning count once, and `/` and
  procfs (`/proc`, below it) are refused: a volume there would hide the root or the kernel's
  view the runtime mounts.
- No string that reaches a path, execve or the environment may hold a NUL byte: the kernel
  cannot take one, and Python would only say "embedded null byte" deep in the daemon or shim.

    paths = volume_paths(run.get("Volumes"))      # ["/data", "/var/lib/x"], sorted, cleaned
    check_strings(run)                             # InvalidArgument naming the field
"""

from __future__ import annotations

import posixpath
from typing import Any

from dockyard_common.errors import InvalidArgument

WHERE = "image config"
_REFUSED = ("/proc",)  # the volume would hide or shadow the container's procfs
_STRING_FIELDS = ("User", "WorkingDir", "StopSignal")
_LIST_FIELDS = ("Env", "Entrypoint", "Cmd", "Shell")


def clean_path(path: str) -> str:
    """Go's path.Clean for an absolute path: no `.`, `..` or double slashes; `..` at `/` is `/`."""
    clean = posixpath.normpath(path)
    return "/" + clean.lstrip("/")  # normpath keeps a leading `//`; and `/..` is `/`


def volume_paths(value: Any, where: str = WHERE) -> list[str]:
    """The cleaned, distinct VOLUME paths of `config.Volumes` (an object keyed by path; null or
    absent: none), sorted. InvalidArgument, in words, for a path a volume cannot be at."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: Volumes must be an object whose keys are absolute paths")
    out: set[str] = set()
    for raw in value:
        if not isinstance(raw, str) or not raw.startswith("/"):
            raise InvalidArgument(f"{where}: VOLUME {raw!r} is not an absolute path")
        if "\0" in raw:
            raise InvalidArgument(f"{where}: VOLUME {raw!r} contains a NUL byte")
        path = clean_path(raw)
        if path == "/":
            raise InvalidArgument(f"{where}: VOLUME {raw!r}: the container's root / cannot be a volume")
        for refused in _REFUSED:
            if path == refused or path.startswith(refused + "/"):
                raise InvalidArgument(f"{where}: VOLUME {raw!r}: {refused} cannot be a volume "
                                      "(it is where the container's procfs is mounted)")
        out.add(path)
    return sorted(out)


def check_strings(run: dict[str, Any], where: str = WHERE) -> None:
    """InvalidArgument when a string field, or an entry of a list field, holds a NUL byte."""
    for key in _STRING_FIELDS:
        value = run.get(key)
        if isinstance(value, str) and "\0" in value:
            raise InvalidArgument(f"{where}: {key} contains a NUL byte")
    for key in _LIST_FIELDS:
        value = run.get(key)
        if isinstance(value, list) and any(isinstance(v, str) and "\0" in v for v in value):
            raise InvalidArgument(f"{where}: an entry of {key} contains a NUL byte")
