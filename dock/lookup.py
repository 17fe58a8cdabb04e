"""Containers by the names people type: `--name` values, generated ids, and what resolves them.

A container's id is its name (`dock run --name web` makes the container `web`, which `ctr c ls`
shows as it shows its own), or without a name 64 random hex digits, as Docker's ids. A reference
names a container by its exact id, else by the name it was renamed to, else by a prefix of one id
alone (`dock stop 3f9a`):

    container = await resolve(client, "3f9a")    # NotFound, or InvalidArgument when ambiguous

Renaming (`dock rename`, dock/commands/rename.py): containerd's id is the key of everything the
daemon keeps for a container (its record, snapshot key, task and shim, bundle, logs, netns,
volume and restart bookkeeping) and cannot change. So a rename puts the new name in the label
`NAME_LABEL`; ps, inspect and the references here use it. The id stays what it was (so the old
name, as an id, stays taken until the container goes).

Names are unique because the daemon keeps them so (supervisor/metadata/names.py): a Containers
Create or Update that gives a container a NAME_LABEL another container of the namespace has, as
its label or as its id, fails with AlreadyExists, checked in the daemon's writing transaction. So
a `--name` create carries the label from the start (its id is the same name), a rename is one
label write (`claim_name`), and of two claims of one name at any moment exactly one wins, from
any number of clients. Checking first (`check_name_free`) only gives the usual case Docker's words
before anything is made; `in_dock_words` gives them to a refusal of the daemon's.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.types import Container

if TYPE_CHECKING:
    from dock.client import Client

# Docker's rule for container names; the daemon's identifier rule (no separators in a row, none
# at the end, at most 76 bytes) still applies on top, with its own message.
NAME_PATTERN = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_NAME = re.compile(NAME_PATTERN + r"\Z")
MAX_NAME = 76
ID_BYTES = 32  # 64 hex digits
_GENERATED = re.compile(r"[0-9a-f]{64}\Z")
SHORT_ID = 12
NAME_LABEL = "dockyard.name"  # a container's name, if it has one (its id is the name it was created with)


def check_container_name(name: str) -> str:
    """`name` if Docker would take it as a container name, else InvalidArgument saying why."""
    if not _NAME.match(name):
        raise InvalidArgument(f"invalid container name {name!r}: only {NAME_PATTERN} is allowed")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"invalid container name {name!r}: longer than {MAX_NAME} characters")
    return name


def new_container_id(name: str = "") -> str:
    """The id of a new container: its (checked) name, else 64 random hex digits."""
    return check_container_name(name) if name else secrets.token_hex(ID_BYTES)


def is_generated(cid: str) -> bool:
    """An id made by new_container_id without a name (shown short, as Docker shows ids)."""
    return bool(_GENERATED.match(cid))


def display_name(cid: str) -> str:
    """What `dock ps` shows as the NAMES of a container: its name, or its short id if it has none."""
    return cid[:SHORT_ID] if is_generated(cid) else cid


def name_of(c: Container) -> str:
    """The container's name as Docker users see it: the name it was renamed to, else display_name."""
    return c.labels.get(NAME_LABEL) or display_name(c.id)


def name_filter(name: str) -> str:
    """A containerd filter for the container renamed to `name` (a checked name)."""
    return f'labels."{NAME_LABEL}"=="{name}"'


async def check_name_free(client: Client, name: str, keep: str = "", *, by_id: bool = True) -> None:
    """AlreadyExists, in Docker's words, when a container other than `keep` has the id or the
    name `name` (`by_id=False`: the NAME_LABEL names only, one call). A look before a claim, for
    its message: the claim itself is the daemon's to refuse (see the module docstring)."""
    holders = [c.id for c in await client.containers.list([name_filter(name)])]
    if by_id:
        try:
            holders.append((await client.containers.get(name)).id)
        except NotFound:
            pass
    for holder in holders:
        if holder != keep:
            raise AlreadyExists(f'the container name "{name}" is already in use by container "{holder}": '
                                "remove (or rename) that container to be able to reuse that name")


@contextlib.asynccontextmanager
async def in_dock_words(client: Client, name: str, keep: str) -> AsyncIterator[None]:
    """Around a write that claims `name` for container `keep`: the daemon's AlreadyExists (a
    claim that landed first) said as check_name_free says it, naming the holder."""
    try:
        yield
    except AlreadyExists:
        await check_name_free(client, name, keep=keep)  # the holder may be gone since: then the daemon's words
        raise


async def claim_name(client: Client, c: Container, name: str) -> None:
    """Rename `c` to `name` (a checked name, not its current one): one write of its NAME_LABEL,
    its other labels untouched, which the daemon refuses with AlreadyExists when another
    container holds the name."""
    await check_name_free(client, name, keep=c.id)
    patch = Container(id=c.id, runtime_name="", spec=None, labels={NAME_LABEL: name})
    async with in_dock_words(client, name, c.id):
        await client.containers.update(patch, [f"labels.{NAME_LABEL}"])


def prefix_filter(prefix: str) -> str:
    """A containerd filter for the ids starting with `prefix` (a checked name: only `.` is special
    in a regexp, and a class keeps it literal without a backslash the filter would read)."""
    return "id~=/^" + prefix.replace(".", "[.]") + "/"


def pick(ref: str, candidates: list[Container], missing: NotFound | None = None) -> Container:
    """The one container whose id is `ref` or starts with it; `missing` (or a NotFound) when there is
    none, InvalidArgument when there are several."""
    exact = [c for c in candidates if c.id == ref]
    if exact:
        return exact[0]
    found = [c for c in candidates if c.id.startswith(ref)]
    if not found:
        raise missing or NotFound(f"container {ref!r}")
    if len(found) > 1:
        raise InvalidArgument(f"ambiguous: {len(found)} containers start with {ref!r}; give more of the id")
    return found[0]


async def resolve(client: Client, ref: str) -> Container:
    """The container `ref` names: exact id first (one call), else the only id starting with it."""
    if not ref or not _NAME.match(ref):  # no id looks like it: not worth asking
        raise NotFound(f"container {ref!r}")
    try:
        return await client.containers.get(ref)
    except NotFound as exc:
        missing = exc  # the daemon's words, should no name or id start with `ref` either
    renamed = await client.containers.list([name_filter(ref)])
    if renamed:
        return renamed[0]
    return pick(ref, await client.containers.list([prefix_filter(ref)]), missing)


async def resolve_id(client: Client, ref: str) -> str:
    return (await resolve(client, ref)).id
