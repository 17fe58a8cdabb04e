"""Versioned schema migrations of metadata.db.

MIGRATIONS[i] takes the schema from version i to i+1 (PRAGMA user_version). Never edit
a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: namespaces and their labels; server identity.
    [
        """CREATE TABLE namespaces (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE namespace_labels (
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
        """CREATE TABLE server (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ],
]
