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
    # 2: leases and the resources they hold; namespaced content records; ingests; the
    # namespaced view of snapshots (backend snapshotters know only their internal keys).
    [
        """CREATE TABLE leases (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (namespace, id)
        )""",
        """CREATE TABLE lease_labels (
            namespace TEXT NOT NULL,
            lease TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, lease, key),
            FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
        )""",
        # type: "content", "ingests" or "snapshots/<snapshotter>", as containerd names them
        """CREATE TABLE lease_resources (
            namespace TEXT NOT NULL,
            lease TEXT NOT NULL,
            type TEXT NOT NULL,
            id TEXT NOT NULL,
            PRIMARY KEY (namespace, lease, type, id),
            FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
        )""",
        "CREATE INDEX lease_resources_by_id ON lease_resources (namespace, type, id)",
        """CREATE TABLE content (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, digest)
        )""",
        "CREATE INDEX content_by_digest ON content (digest)",
        """CREATE TABLE content_labels (
            namespace TEXT NOT NULL,
            digest TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, digest, key),
            FOREIGN KEY (namespace, digest) REFERENCES content(namespace, digest) ON DELETE CASCADE
        )""",
        # the namespace's name for an ingest, and the backend ref the content store uses
        """CREATE TABLE ingests (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            ref TEXT NOT NULL,
            backend_ref TEXT NOT NULL UNIQUE,
            expected TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            PRIMARY KEY (namespace, ref)
        )""",
        """CREATE TABLE snapshots (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            snapshotter TEXT NOT NULL,
            key TEXT NOT NULL,
            backend_key TEXT NOT NULL,
            parent TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, snapshotter, key),
            UNIQUE (snapshotter, backend_key)
        )""",
        "CREATE INDEX snapshots_by_parent ON snapshots (namespace, snapshotter, parent)",
        """CREATE TABLE snapshot_labels (
            namespace TEXT NOT NULL,
            snapshotter TEXT NOT NULL,
            key TEXT NOT NULL,
            label TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, snapshotter, key, label),
            FOREIGN KEY (namespace, snapshotter, key) REFERENCES snapshots(namespace, snapshotter, key)
                ON DELETE CASCADE ON UPDATE CASCADE
        )""",
    ],
    # 3: images. The target descriptor is stored flat; its annotations as JSON text (they are
    # only ever read and replaced with the image). Labels in their own table, as elsewhere.
    [
        """CREATE TABLE images (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            name TEXT NOT NULL,
            target_media_type TEXT NOT NULL,
            target_digest TEXT NOT NULL,
            target_size INTEGER NOT NULL,
            target_annotations TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        "CREATE INDEX images_by_target ON images (namespace, target_digest)",
        """CREATE TABLE image_labels (
            namespace TEXT NOT NULL,
            image TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, image, key),
            FOREIGN KEY (namespace, image) REFERENCES images(namespace, name) ON DELETE CASCADE
        )""",
    ],
    # 4: containers. Opaque Any payloads (spec, runtime options) are kept as sent; labels and
    # extensions as JSON text, since they are always read and written with the container.
    [
        """CREATE TABLE containers (
            namespace TEXT NOT NULL REFERENCES namespaces(name),
            id TEXT NOT NULL,
            labels TEXT NOT NULL,
            image TEXT NOT NULL,
            runtime_name TEXT NOT NULL,
            runtime_options_type TEXT NOT NULL,
            runtime_options BLOB,
            spec_type TEXT NOT NULL,
            spec BLOB NOT NULL,
            snapshotter TEXT NOT NULL,
            snapshot_key TEXT NOT NULL,
            extensions TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, id)
        )""",
    ],
    # 5: whether an ingest was begun under a lease. Such an ingest is collected as soon as no
    # live lease holds it; only lease-less ones get the grace period (containerd marks those
    # with an expiry instead). Existing rows that some lease holds count as leased.
    [
        "ALTER TABLE ingests ADD COLUMN leased INTEGER NOT NULL DEFAULT 0",
        """UPDATE ingests SET leased = 1 WHERE EXISTS (SELECT 1 FROM lease_resources r
            WHERE r.namespace = ingests.namespace AND r.type = 'ingests' AND r.id = ingests.ref)""",
    ],
    # 6: the build cache (supervisor/metadata/buildcache.py): one row per build step key, with
    # the layer and the committed snapshot it made (none for a config-only step). No foreign key
    # to namespaces: the rows are a cache, and must not keep a namespace from being deleted.
    [
        """CREATE TABLE build_cache (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            snapshotter TEXT NOT NULL DEFAULT '',
            snapshot TEXT NOT NULL DEFAULT '',
            layer_media_type TEXT NOT NULL DEFAULT '',
            layer_digest TEXT NOT NULL DEFAULT '',
            layer_size INTEGER NOT NULL DEFAULT 0,
            diff_id TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            last_used TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
    ],
    # 7: containers by their Docker-style name, the label `dockyard.name` (supervisor/metadata/
    # names.py): a Create or Update that sets it looks for another holder in its transaction.
    # Not UNIQUE: older databases may hold duplicates made before the daemon checked, and
    # INSERT OR REPLACE would resolve a clash by deleting the other container.
    [
        """CREATE INDEX containers_by_name ON containers (namespace, json_extract(labels, '$."dockyard.name"'))
            WHERE json_extract(labels, '$."dockyard.name"') IS NOT NULL""",
    ],
]
