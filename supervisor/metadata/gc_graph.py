"""The garbage collector's graph: what exists, what is a root, what refers to what. Pure.

Everything here works on an `Inventory`, a plain in-memory copy of the collectable records
(loaded by `gc.load_inventory` in one read transaction), so the rules are testable on
synthetic graphs without a database.

Nodes (each within one namespace; nothing refers across namespaces)
    content   a namespace's record of a blob, keyed by digest
    snapshot  a namespace's snapshot in one snapshotter, keyed by its (namespace-visible) key
    ingest    a namespace's unfinished write, keyed by its ref

Roots (containerd's `scanRoots`)
    - every resource a live lease holds; a lease is live until its `containerd.io/gc.expire`
      time has passed (an unreadable expiry counts as none, as in containerd). Expired leases
      hold nothing and are themselves collected.
    - content and snapshots labelled `containerd.io/gc.root` (any value)
    - ingests begun without a lease, not held by any live lease, younger than the ingest
      grace period (containerd gives lease-less ingests 24 hours). An ingest begun under a
      lease gets no grace: once its lease is gone (a client that gave up after a failed
      write deletes it) it is collected with its partial bytes, as containerd does.
    - snapshots of snapshotters the collector does not manage (it could not remove their
      data, so it keeps their records and everything they refer to)
    - whatever the root providers of `gc.py` add (images, containers)

References (containerd's `references`)
    - labels `containerd.io/gc.ref.content` and `containerd.io/gc.ref.content.<name>` or
      `…content/<name>` → content with the label's value as digest
    - labels `containerd.io/gc.ref.snapshot.<snapshotter>` and
      `…snapshot.<snapshotter>/<name>` → the snapshot keyed by the value in <snapshotter>
    - a snapshot → its parent (same namespace and snapshotter)
    - an ingest → the content it is expected to produce
    A reference to something that does not exist is harmless: it marks nothing.

Flat leases (label `containerd.io/gc.flat`) hold exactly what they name: from their
resources only snapshot parents are followed, no labels.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from supervisor.metadata.leases import CONTENT, EXPIRE_LABEL, FLAT_LABEL, INGESTS, SNAPSHOT_PREFIX, expires_at

ROOT_LABEL = "containerd.io/gc.root"
CONTENT_REF = "containerd.io/gc.ref.content"
SNAPSHOT_REF = "containerd.io/gc.ref.snapshot."


class Kind(enum.Enum):
    CONTENT = "content"
    SNAPSHOT = "snapshot"
    INGEST = "ingest"


@dataclass(frozen=True, slots=True)
class Node:
    kind: Kind
    namespace: str
    key: str  # digest, snapshot key or ingest ref
    snapshotter: str = ""  # snapshots only

    def __str__(self) -> str:
        where = f"{self.snapshotter}/" if self.snapshotter else ""
        return f"{self.kind.value} {self.namespace}/{where}{self.key}"

    def __lt__(self, other: object) -> bool:  # Kind has no order of its own
        if not isinstance(other, Node):
            return NotImplemented
        return (self.kind.value, self.namespace, self.snapshotter, self.key) < (
            other.kind.value, other.namespace, other.snapshotter, other.key)


def content(ns: str, digest: str) -> Node:
    return Node(Kind.CONTENT, ns, digest)


def snapshot(ns: str, snapshotter: str, key: str) -> Node:
    return Node(Kind.SNAPSHOT, ns, key, snapshotter)


def ingest(ns: str, ref: str) -> Node:
    return Node(Kind.INGEST, ns, ref)


@dataclass(frozen=True, slots=True)
class Root:
    node: Node
    flat: bool = False  # reached through a flat lease: follow snapshot parents only


@dataclass
class SnapshotRecord:
    backend_key: str
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestRecord:
    backend_ref: str
    created_at: datetime
    expected: str = ""
    leased: bool = False  # begun under a lease: no grace period once no lease holds it


@dataclass
class LeaseRecord:
    namespace: str
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    resources: list[tuple[str, str]] = field(default_factory=list)  # (type, id)


@dataclass
class Inventory:
    """Every collectable record, as one consistent read saw it."""

    content: dict[Node, dict[str, str]] = field(default_factory=dict)  # node → labels
    snapshots: dict[Node, SnapshotRecord] = field(default_factory=dict)
    ingests: dict[Node, IngestRecord] = field(default_factory=dict)
    leases: list[LeaseRecord] = field(default_factory=list)


@dataclass
class Plan:
    """What one collection removes. Snapshots are ordered children before parents."""

    content: list[Node] = field(default_factory=list)
    snapshots: list[Node] = field(default_factory=list)
    ingests: list[Node] = field(default_factory=list)
    leases: list[tuple[str, str]] = field(default_factory=list)  # expired (namespace, id)

    def empty(self) -> bool:
        return not (self.content or self.snapshots or self.ingests or self.leases)


def label_refs(ns: str, labels: Mapping[str, str]) -> Iterator[Node]:
    """The nodes that gc.ref labels of an object in `ns` refer to."""
    for key, value in labels.items():
        if not value:
            continue
        if key.startswith(CONTENT_REF):
            rest = key[len(CONTENT_REF):]
            if rest == "" or rest[0] in "./":
                yield content(ns, value)
        elif key.startswith(SNAPSHOT_REF):
            snapshotter = key[len(SNAPSHOT_REF):].split("/", 1)[0]
            if snapshotter:
                yield snapshot(ns, snapshotter, value)


def lease_expired(lease: LeaseRecord, now: datetime) -> bool:
    expiry = expires_at(lease.labels)
    return expiry is not None and now > expiry


def lease_resource_node(ns: str, type_: str, id_: str) -> Node | None:
    if type_ == CONTENT:
        return content(ns, id_)
    if type_ == INGESTS:
        return ingest(ns, id_)
    if type_.startswith(SNAPSHOT_PREFIX):
        return snapshot(ns, type_[len(SNAPSHOT_PREFIX):], id_)
    return None


def roots(inv: Inventory, now: datetime, ingest_grace: timedelta,
          managed_snapshotters: Collection[str] | None = None) -> tuple[list[Root], list[tuple[str, str]]]:
    """The roots of `inv` at time `now`, and the expired leases (namespace, id) to delete.

    `managed_snapshotters` None means every snapshotter is managed.
    """
    found: list[Root] = []
    expired: list[tuple[str, str]] = []
    leased_ingests: set[Node] = set()
    for lease in inv.leases:
        if lease_expired(lease, now):
            expired.append((lease.namespace, lease.id))
            continue
        flat = FLAT_LABEL in lease.labels
        for type_, id_ in lease.resources:
            node = lease_resource_node(lease.namespace, type_, id_)
            if node is None:
                continue
            if node.kind is Kind.INGEST:
                leased_ingests.add(node)
            found.append(Root(node, flat))
    for node, labels in inv.content.items():
        if ROOT_LABEL in labels:
            found.append(Root(node))
    for node, snap in inv.snapshots.items():
        unmanaged = managed_snapshotters is not None and node.snapshotter not in managed_snapshotters
        if unmanaged or ROOT_LABEL in snap.labels:
            found.append(Root(node))
    for node, ing in inv.ingests.items():
        if node not in leased_ingests and not ing.leased and now - ing.created_at < ingest_grace:
            found.append(Root(node))
    return found, expired


def references(inv: Inventory, node: Node, flat: bool = False) -> Iterator[Node]:
    """The nodes `node` keeps alive (nothing for a node without a record)."""
    if node.kind is Kind.CONTENT:
        labels = inv.content.get(node)
        if labels is not None and not flat:
            yield from label_refs(node.namespace, labels)
    elif node.kind is Kind.SNAPSHOT:
        snap = inv.snapshots.get(node)
        if snap is None:
            return
        if snap.parent:
            yield snapshot(node.namespace, node.snapshotter, snap.parent)
        if not flat:
            yield from label_refs(node.namespace, snap.labels)
    elif node.kind is Kind.INGEST:
        ing = inv.ingests.get(node)
        if ing is not None and ing.expected:
            yield content(node.namespace, ing.expected)


def mark(start: Iterable[Root], refs: Callable[[Node, bool], Iterable[Node]]) -> set[Node]:
    """Every node reachable from `start` (tricolor marking with an explicit stack).

    A node reached both flat and not is visited both ways: the non-flat visit may reach more.
    """
    seen: set[tuple[Node, bool]] = set()
    stack = [(r.node, r.flat) for r in start]
    reachable: set[Node] = set()
    while stack:
        item = stack.pop()
        if item in seen:
            continue
        seen.add(item)
        node, flat = item
        reachable.add(node)
        for target in refs(node, flat):
            if (target, flat) not in seen:
                stack.append((target, flat))
    return reachable


def _depth(inv: Inventory, node: Node) -> int:
    depth = 0
    seen = {node}
    snap = inv.snapshots.get(node)
    while snap is not None and snap.parent:
        parent = snapshot(node.namespace, node.snapshotter, snap.parent)
        if parent in seen:  # a cycle cannot be built through the API; do not loop on one anyway
            break
        seen.add(parent)
        depth += 1
        snap = inv.snapshots.get(parent)
    return depth


def plan(inv: Inventory, reachable: set[Node], expired: list[tuple[str, str]]) -> Plan:
    """Everything in `inv` that `reachable` does not contain, in a safe removal order."""
    dead_snapshots = [n for n in inv.snapshots if n not in reachable]
    dead_snapshots.sort(key=lambda n: (-_depth(inv, n), n))
    return Plan(
        content=sorted(n for n in inv.content if n not in reachable),
        snapshots=dead_snapshots,
        ingests=sorted(n for n in inv.ingests if n not in reachable),
        leases=sorted(expired),
    )


def collectable(inv: Inventory, now: datetime, ingest_grace: timedelta,
                managed_snapshotters: Collection[str] | None = None,
                extra_roots: Iterable[Node] = ()) -> Plan:
    """Roots → mark → plan, in one call."""
    found, expired = roots(inv, now, ingest_grace, managed_snapshotters)
    found.extend(Root(n) for n in extra_roots)
    reachable = mark(found, lambda n, flat: references(inv, n, flat))
    return plan(inv, reachable, expired)


__all__ = [
    "CONTENT_REF", "EXPIRE_LABEL", "ROOT_LABEL", "SNAPSHOT_REF", "Inventory", "Kind", "LeaseRecord", "Node",
    "Plan", "Root", "SnapshotRecord", "collectable", "content", "ingest", "label_refs", "mark", "plan",
    "references", "roots", "snapshot",
]
