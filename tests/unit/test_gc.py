"""The garbage collector's marking rules on synthetic graphs (pure: no database, no daemon)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from supervisor.metadata import gc_graph as g
from supervisor.metadata.gc_graph import IngestRecord, Inventory, LeaseRecord, Node, Root, SnapshotRecord

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
D = [f"sha256:{i:064x}" for i in range(40)]
EXPIRE = "containerd.io/gc.expire"


def dead(inv: Inventory, grace: timedelta = DAY, managed: set[str] | None = None,
         extra: list[Node] | None = None) -> set[Node]:
    plan = g.collectable(inv, NOW, grace, managed, extra or [])
    return {*plan.content, *plan.snapshots, *plan.ingests}


def lease(ns: str, id_: str, *resources: tuple[str, str], **labels: str) -> LeaseRecord:
    return LeaseRecord(ns, id_, dict(labels), list(resources))


def test_label_refs_follow_containerd_naming() -> None:
    labels = {
        "containerd.io/gc.ref.content": D[0],
        "containerd.io/gc.ref.content.config": D[1],
        "containerd.io/gc.ref.content.l.0": D[2],
        "containerd.io/gc.ref.content/m": D[3],
        "containerd.io/gc.ref.contentx": D[4],  # not a reference: the name must follow "." or "/"
        "containerd.io/gc.ref.snapshot.overlayfs": "chain-1",
        "containerd.io/gc.ref.snapshot.native/extra": "chain-2",
        "containerd.io/gc.ref.snapshot.": "nothing",  # no snapshotter named
        "containerd.io/gc.ref.content.empty": "",
        "unrelated": D[5],
    }
    assert set(g.label_refs("ns", labels)) == {
        g.content("ns", D[0]), g.content("ns", D[1]), g.content("ns", D[2]), g.content("ns", D[3]),
        g.snapshot("ns", "overlayfs", "chain-1"), g.snapshot("ns", "native", "chain-2"),
    }


def test_an_image_graph_is_kept_from_one_root() -> None:
    manifest, config, layer, stray = (g.content("ns", d) for d in D[:4])
    inv = Inventory(
        content={
            manifest: {"containerd.io/gc.root": "2025-01-01T00:00:00Z",
                       "containerd.io/gc.ref.content.config": D[1],
                       "containerd.io/gc.ref.content.l.0": D[2]},
            config: {"containerd.io/gc.ref.snapshot.overlayfs": "chain-2"},
            layer: {},
            stray: {},
        },
        snapshots={
            g.snapshot("ns", "overlayfs", "chain-1"): SnapshotRecord("b1"),
            g.snapshot("ns", "overlayfs", "chain-2"): SnapshotRecord("b2", parent="chain-1"),
            g.snapshot("ns", "overlayfs", "view"): SnapshotRecord("b3", parent="chain-2"),
        },
    )
    assert dead(inv) == {stray, g.snapshot("ns", "overlayfs", "view")}


def test_references_stay_inside_their_namespace() -> None:
    inv = Inventory(content={
        g.content("a", D[0]): {"containerd.io/gc.root": "", "containerd.io/gc.ref.content": D[1]},
        g.content("b", D[1]): {},
    })
    assert dead(inv) == {g.content("b", D[1])}


def test_live_lease_holds_and_expired_lease_is_collected() -> None:
    inv = Inventory(
        content={g.content("ns", D[0]): {}, g.content("ns", D[1]): {}, g.content("ns", D[2]): {}},
        snapshots={g.snapshot("ns", "native", "k"): SnapshotRecord("b")},
        leases=[
            lease("ns", "live", ("content", D[0]), ("snapshots/native", "k"),
                  **{EXPIRE: (NOW + timedelta(seconds=1)).isoformat()}),
            lease("ns", "forever", ("content", D[2])),
            lease("ns", "old", ("content", D[1]), **{EXPIRE: "2025-06-01T11:59:59Z"}),
        ],
    )
    plan = g.collectable(inv, NOW, DAY)
    assert plan.content == [g.content("ns", D[1])] and plan.snapshots == []
    assert plan.leases == [("ns", "old")]


def test_unreadable_expiry_means_no_expiry() -> None:
    inv = Inventory(content={g.content("ns", D[0]): {}},
                    leases=[lease("ns", "l", ("content", D[0]), **{EXPIRE: "tomorrow"})])
    plan = g.collectable(inv, NOW, DAY)
    assert plan.empty()


def test_lease_resources_of_unknown_type_or_missing_target_are_harmless() -> None:
    inv = Inventory(content={g.content("ns", D[0]): {}},
                    leases=[lease("ns", "l", ("weird", "x"), ("content", D[9]), ("snapshots/native", "gone"))])
    assert dead(inv) == {g.content("ns", D[0])}


def test_flat_lease_holds_only_what_it_names() -> None:
    parent_snap = g.snapshot("ns", "native", "p")
    child_snap = g.snapshot("ns", "native", "c")
    inv = Inventory(
        content={g.content("ns", D[0]): {"containerd.io/gc.ref.content": D[1]}, g.content("ns", D[1]): {},
                 g.content("ns", D[2]): {}},
        snapshots={parent_snap: SnapshotRecord("b1"),
                   child_snap: SnapshotRecord("b2", parent="p", labels={"containerd.io/gc.ref.content": D[2]})},
        leases=[lease("ns", "flat", ("content", D[0]), ("snapshots/native", "c"),
                      **{"containerd.io/gc.flat": "true"})],
    )
    # the flat lease keeps the snapshot's parent, but not what labels refer to
    assert dead(inv) == {g.content("ns", D[1]), g.content("ns", D[2])}
    # the same node also reached normally is followed fully
    inv.leases.append(lease("ns", "full", ("content", D[0])))
    assert dead(inv) == {g.content("ns", D[2])}


def test_gc_root_on_snapshot_keeps_its_chain_and_refs() -> None:
    inv = Inventory(
        content={g.content("ns", D[0]): {}},
        snapshots={
            g.snapshot("ns", "native", "base"): SnapshotRecord("b0"),
            g.snapshot("ns", "native", "top"): SnapshotRecord(
                "b1", parent="base", labels={"containerd.io/gc.root": "x", "containerd.io/gc.ref.content": D[0]}),
            g.snapshot("ns", "native", "other"): SnapshotRecord("b2", parent="base"),
        },
    )
    assert dead(inv) == {g.snapshot("ns", "native", "other")}


def test_ingests_grace_lease_and_expected() -> None:
    young = g.ingest("ns", "young")
    old = g.ingest("ns", "old")
    leased_old = g.ingest("ns", "leased")
    inv = Inventory(
        content={g.content("ns", D[0]): {}, g.content("ns", D[1]): {}},
        ingests={
            young: IngestRecord("ns/young", NOW - timedelta(minutes=5), expected=D[0]),
            old: IngestRecord("ns/old", NOW - DAY - timedelta(seconds=1), expected=D[1]),
            leased_old: IngestRecord("ns/leased", NOW - 10 * DAY),
        },
        leases=[lease("ns", "l", ("ingests", "leased"))],
    )
    assert dead(inv) == {old, g.content("ns", D[1])}
    assert dead(inv, grace=timedelta(0)) == {young, old, g.content("ns", D[0]), g.content("ns", D[1])}


def test_snapshots_of_unmanaged_snapshotters_are_kept_with_their_refs() -> None:
    inv = Inventory(
        content={g.content("ns", D[0]): {}},
        snapshots={
            g.snapshot("ns", "zfs", "a"): SnapshotRecord("b", labels={"containerd.io/gc.ref.content": D[0]}),
            g.snapshot("ns", "native", "n"): SnapshotRecord("c"),
        },
    )
    assert dead(inv, managed={"native"}) == {g.snapshot("ns", "native", "n")}
    assert len(dead(inv, managed={"native", "zfs"})) == 3


def test_extra_roots_from_providers() -> None:
    inv = Inventory(content={g.content("ns", D[0]): {"containerd.io/gc.ref.content": D[1]},
                             g.content("ns", D[1]): {}})
    assert dead(inv, extra=[g.content("ns", D[0])]) == set()


def test_cycles_terminate() -> None:
    a, b = g.content("ns", D[0]), g.content("ns", D[1])
    inv = Inventory(content={a: {"containerd.io/gc.ref.content": D[1]}, b: {"containerd.io/gc.ref.content": D[0]}})
    assert dead(inv) == {a, b}
    inv.content[a]["containerd.io/gc.root"] = ""
    assert dead(inv) == set()
    # a (corrupt) parent cycle between snapshots neither loops in marking nor in ordering
    inv.snapshots = {g.snapshot("ns", "native", "x"): SnapshotRecord("1", parent="y"),
                     g.snapshot("ns", "native", "y"): SnapshotRecord("2", parent="x")}
    assert len(g.collectable(inv, NOW, DAY).snapshots) == 2


def test_snapshots_are_planned_children_first() -> None:
    snaps = {
        "a": "", "b": "a", "c": "b", "d": "c", "e": "b", "f": "",
    }
    inv = Inventory(snapshots={g.snapshot("ns", "native", k): SnapshotRecord(f"b-{k}", parent=p)
                               for k, p in snaps.items()})
    order = [n.key for n in g.collectable(inv, NOW, DAY).snapshots]
    assert sorted(order) == sorted(snaps)
    for key, parent in snaps.items():
        if parent:
            assert order.index(key) < order.index(parent), order


def test_mark_is_generic() -> None:
    edges = {"a": ["b"], "b": ["c"], "c": [], "d": ["a"]}
    n = {k: g.content("ns", k) for k in edges}
    reach = g.mark([Root(n["a"])], lambda node, flat: [n[x] for x in edges[node.key]])
    assert reach == {n["a"], n["b"], n["c"]}
    assert g.mark([], lambda node, flat: []) == set()


def _reachable_by_fixpoint(inv: Inventory, grace: timedelta) -> set[Node]:
    """An independent, naive statement of the rules (no flat leases) to check the real one against."""
    live = [le for le in inv.leases if not (EXPIRE in le.labels and g.lease_expired(le, NOW))]
    held = {g.lease_resource_node(le.namespace, t, i) for le in live for t, i in le.resources}
    keep: set[Node] = {n for n in held if n is not None}
    keep |= {n for n, labels in inv.content.items() if "containerd.io/gc.root" in labels}
    keep |= {n for n, s in inv.snapshots.items() if "containerd.io/gc.root" in s.labels}
    keep |= {n for n, i in inv.ingests.items() if n not in held and NOW - i.created_at < grace}
    while True:
        more: set[Node] = set()
        for n in keep:
            if n in inv.content:
                more |= set(g.label_refs(n.namespace, inv.content[n]))
            if n in inv.snapshots:
                s = inv.snapshots[n]
                more |= set(g.label_refs(n.namespace, s.labels))
                if s.parent:
                    more.add(g.snapshot(n.namespace, n.snapshotter, s.parent))
            if n in inv.ingests and inv.ingests[n].expected:
                more.add(g.content(n.namespace, inv.ingests[n].expected))
        if more <= keep:
            return keep
        keep |= more


def _random_inventory(rng: random.Random) -> Inventory:
    inv = Inventory()
    namespaces = ["a", "b"]
    for ns in namespaces:
        digests = rng.sample(D, 12)
        keys = [f"s{i}" for i in range(10)]
        for d in digests:
            labels: dict[str, str] = {}
            for i in range(rng.randint(0, 3)):
                if rng.random() < 0.7:
                    labels[f"containerd.io/gc.ref.content.{i}"] = rng.choice(D)
                else:
                    labels[f"containerd.io/gc.ref.snapshot.native/{i}"] = rng.choice(keys)
            if rng.random() < 0.1:
                labels["containerd.io/gc.root"] = ""
            inv.content[g.content(ns, d)] = labels
        for i, k in enumerate(keys):
            parent = rng.choice(keys[:i]) if i and rng.random() < 0.7 else ""
            labels = {"containerd.io/gc.root": ""} if rng.random() < 0.1 else {}
            if rng.random() < 0.3:
                labels["containerd.io/gc.ref.content"] = rng.choice(D)
            inv.snapshots[g.snapshot(ns, "native", k)] = SnapshotRecord(f"{ns}-{k}", parent, labels)
        for i in range(4):
            age = timedelta(hours=rng.choice([1, 30]))
            inv.ingests[g.ingest(ns, f"r{i}")] = IngestRecord(f"{ns}/r{i}", NOW - age,
                                                               rng.choice(["", *digests]))
        for i in range(3):
            res = [("content", rng.choice(D)), ("snapshots/native", rng.choice(keys)), ("ingests", f"r{i}")]
            labels = {EXPIRE: (NOW + timedelta(hours=rng.choice([-1, 1]))).isoformat()}
            inv.leases.append(lease(ns, f"l{i}", *rng.sample(res, rng.randint(0, 3)), **labels))
    return inv


def test_random_graphs_remove_exactly_the_unreachable() -> None:
    rng = random.Random(20250601)
    for _ in range(300):
        inv = _random_inventory(rng)
        keep = _reachable_by_fixpoint(inv, DAY)
        plan = g.collectable(inv, NOW, DAY)
        removed = {*plan.content, *plan.snapshots, *plan.ingests}
        everything = {*inv.content, *inv.snapshots, *inv.ingests}
        assert not removed & keep, "a reachable node was planned for removal"
        assert removed == everything - keep
        # every removed snapshot goes before its (removed) parent
        order = {n: i for i, n in enumerate(plan.snapshots)}
        for n in plan.snapshots:
            parent = inv.snapshots[n].parent
            p = g.snapshot(n.namespace, n.snapshotter, parent)
            if parent and p in order:
                assert order[n] < order[p]
