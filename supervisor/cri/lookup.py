"""Finding a pod or container by its id or a unique prefix of it, as containerd's CRI does
(crictl and people type truncated ids)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from dockyard_common.errors import InvalidArgument, NotFound

T = TypeVar("T")


def by_id_prefix(items: Iterable[T], id_of: Callable[[T], str], prefix: str, what: str, many: str) -> T:
    """The item whose id is `prefix`, else the only one whose id starts with it. `what` names
    one ("pod sandbox"), `many` several ("pods"). InvalidArgument for an empty or ambiguous
    prefix, NotFound when nothing matches."""
    if not prefix:
        raise InvalidArgument(f"{what} id must not be empty")
    matches = [item for item in items if id_of(item).startswith(prefix)]
    exact = [item for item in matches if id_of(item) == prefix]
    if exact:
        return exact[0]
    if not matches:
        raise NotFound(f"{what} {prefix!r}")
    if len(matches) > 1:
        raise InvalidArgument(f"{what} id prefix {prefix!r} is ambiguous: {len(matches)} {many} match")
    return matches[0]
