"""Docker-style container names, unique within a namespace.

containerd has no container names: a container's id is its key and cannot change. dock gives a
container the name it asks for in the label `NAME_LABEL` (dock/lookup.py: `--name` at create, and
`dock rename`); Docker's rule that no two containers share a name is kept here, in the daemon,
so that two clients at one moment (or any gRPC client writing the label) cannot both hold one.

The rule, only for our label (a container without it is created and updated as containerd does):
a Create whose labels carry a name, or an Update that changes a container's name, fails with
AlreadyExists when another container of the namespace has that name as its label or as its id
(the id is the name a container was created with, so it stays taken). It runs in the writing
transaction (BEGIN IMMEDIATE, the daemon's one writer), through the index `containers_by_name`
(schema 7): so it is atomic, right after deletes (rows go with the container) and after a
restart (the index is in metadata.db).

An Update that keeps the name as it is (a health status, a restart count) is not checked: a
database from before this rule may hold duplicates, and those containers must stay usable.
"""

from __future__ import annotations

import sqlite3

from dockyard_common.errors import AlreadyExists
from dockyard_common.types import Container

NAME_LABEL = "dockyard.name"
# Written as the index containers_by_name writes it: SQLite uses an index on an expression only
# for that very expression.
_NAME_OF_ROW = """json_extract(labels, '$."dockyard.name"')"""


def check_free(conn: sqlite3.Connection, ns: str, new: Container, old: Container | None = None) -> None:
    """AlreadyExists (Docker's words) when `new` takes a name another container of `ns` holds;
    `old` is the stored record an update replaces (None: a create)."""
    name = new.labels.get(NAME_LABEL, "")
    if not name or (old is not None and old.labels.get(NAME_LABEL, "") == name):
        return
    row = conn.execute(f"SELECT id FROM containers WHERE namespace=? AND {_NAME_OF_ROW}=? AND id<>? LIMIT 1",
                       (ns, name, new.id)).fetchone()
    if row is None and name != new.id:
        row = conn.execute("SELECT id FROM containers WHERE namespace=? AND id=?", (ns, name)).fetchone()
    if row is not None:
        raise AlreadyExists(f'container name "{name}" is already in use by container "{row[0]}"')
