"""Value types the daemon, the shim and dock all speak, each defined once."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

# containerd's limit on a label: its key and value together, in UTF-8 bytes (the daemon's too)
MAX_LABEL_SIZE = 4096


def label_size(key: str, value: str) -> int:
    """The bytes `key`=`value` counts against MAX_LABEL_SIZE."""
    return len(key.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class Mount:
    """One mount to perform, as `mount -t <type> -o <options> <source> <target>`.

    `target` is relative to the directory the whole list is mounted on; "" means
    that directory itself (containerd's `mount.Mount`).
    """

    type: str
    source: str
    target: str = ""
    options: list[str] = field(default_factory=list)


class Status(enum.IntEnum):
    """A task's process state, numbered as containerd numbers it (`containerd.v1.types.Status`),
    so converting to and from the wire is a cast."""

    UNKNOWN = 0  # also: the shim did not answer in time
    CREATED = 1
    RUNNING = 2
    STOPPED = 3
    PAUSED = 4
    PAUSING = 5

    @property
    def word(self) -> str:
        """The state in a sentence ("cannot start a running process")."""
        return self.name.lower()


@dataclass(frozen=True)
class AnyValue:
    """A google.protobuf.Any, kept opaque: type URL and bytes exactly as a client sent them."""

    type_url: str
    value: bytes = b""


@dataclass
class Container:
    """A container record: the stored description of what to run (spec, runtime, snapshot, image)."""

    id: str
    runtime_name: str
    spec: AnyValue | None
    labels: dict[str, str] = field(default_factory=dict)
    image: str = ""
    runtime_options: AnyValue | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    extensions: dict[str, AnyValue] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# -- snapshots ---------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Kind(enum.IntEnum):
    """The kind of a snapshot; values are containerd's `snapshots.v1.Kind` numbers."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    def __str__(self) -> str:
        # containerd prints kinds capitalised ("Active") in `ctr snapshots ls`.
        return self.name.capitalize()


@dataclass(slots=True)
class Info:
    """What a snapshotter knows about one snapshot.

    `name` is the key (active or view snapshot) or the name (committed one);
    `parent` is the name of the committed parent, "" for none. Timestamps are
    timezone-aware UTC.
    """

    name: str
    parent: str = ""
    kind: Kind = Kind.UNKNOWN
    created_at: datetime = EPOCH
    updated_at: datetime = EPOCH
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Usage:
    """Disk resources used by a snapshot itself, excluding its parents.

    `size` counts allocated bytes (st_blocks * 512) and `inodes` distinct inodes,
    each hard-linked inode once, as containerd's `fs.DiskUsage` does.
    """

    size: int = 0
    inodes: int = 0
