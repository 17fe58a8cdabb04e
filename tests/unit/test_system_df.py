"""dock system df's arithmetic and printing: Docker's percentages, human sizes, shared items
counted once, and the daemon's build cache words (supervisor/build/cacheprune.describe)."""

from __future__ import annotations

import pytest

from dock.dfview import Summary, print_summary, reclaimable_text, repository_tag, short_cache_id, short_id
from dock.diskusage import Item, chain_tops, footprints, reach, total
from dockyard_common.imagespec import Descriptor
from supervisor.build.cacheprune import CacheEntry, describe
from supervisor.metadata.buildcache import Record

MiB = 1 << 20


@pytest.mark.parametrize(("size", "reclaimable", "text"), [
    (0, 0, "0 B"),  # no size: no percent (Docker divides only by a size above 0)
    (100, 100, "100 B (100%)"),
    (3 * MiB, MiB, "1.0 MiB (33%)"),  # 33.3: floored
    (1000, 999, "999 B (99%)"),  # 99.9: floored, as Go's integer division
    (1000, 1, "1 B (0%)"),
    (5 * 1024, 2 * 1024, "2.0 KiB (40%)"),
])
def test_reclaimable_percent_as_docker_prints_it(size: int, reclaimable: int, text: str) -> None:
    assert reclaimable_text(Summary("Images", 1, 0, size, reclaimable)) == text


def test_build_cache_reclaimable_has_no_percent() -> None:
    assert reclaimable_text(Summary("Build Cache", 2, 0, 2 * MiB, MiB, percent=False)) == "1.0 MiB"


def test_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    print_summary([Summary("Images", 3, 1, 5 * MiB, 2 * MiB), Summary("Build Cache", 0, 0, 0, 0, percent=False)])
    assert capsys.readouterr().out.splitlines() == [
        "TYPE           TOTAL    ACTIVE    SIZE       RECLAIMABLE",
        "Images         3        1         5.0 MiB    2.0 MiB (40%)",
        "Build Cache    0        0         0 B        0 B",
    ]


@pytest.mark.parametrize(("name", "want"), [
    ("docker.io/library/busybox:latest", ("busybox", "latest")),
    ("docker.io/team/app:1", ("team/app", "1")),
    ("127.0.0.1:5000/app:2", ("127.0.0.1:5000/app", "2")),
    ("docker.io/library/app@sha256:" + "a" * 64, ("app", "<none>")),
    ("dockyard-dangling@sha256:" + "b" * 64, ("<none>", "<none>")),
    ("Not A Reference", ("Not A Reference", "<none>")),
])
def test_repository_and_tag(name: str, want: tuple[str, str]) -> None:
    assert repository_tag(name) == want


def test_short_ids() -> None:
    assert short_id("sha256:" + "0123456789abcdef" * 4) == "0123456789ab"
    assert short_cache_id("cachemount:" + "f" * 64) == "cachemount:" + "f" * 12
    assert short_cache_id("sha256:" + "c" * 64) == "c" * 12


def blob(d: str) -> Item:
    return ("content", "", d)


def test_shared_items_count_once() -> None:
    base, own_a, own_b = blob("base"), blob("a"), blob("b")
    layer = ("snapshot", "overlayfs", "chain1")
    sizes = {base: 100, own_a: 10, own_b: 20, layer: 1000}
    items = {"a": frozenset({base, layer, own_a}), "b": frozenset({base, layer, own_b}), "alone": frozenset({own_b})}
    prints = footprints(items, sizes)
    assert (prints["a"].size, prints["a"].shared) == (1110, 1100)
    assert (prints["b"].size, prints["b"].shared) == (1120, 1120)  # own_b is "alone"'s too
    assert total(items.values(), sizes) == 1130
    assert total([], sizes) == 0


class Info:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels


def test_reach_follows_gc_labels_to_what_is_present() -> None:
    infos = {
        "index": Info({"containerd.io/gc.ref.content.m.0": "m1", "containerd.io/gc.ref.content.m.1": "absent"}),
        "m1": Info({"containerd.io/gc.ref.content.config": "cfg", "containerd.io/gc.ref.content.l.0": "l0"}),
        "cfg": Info({"containerd.io/gc.ref.snapshot.overlayfs": "sha256:top", "containerd.io/gc.ref.snapshot.x": ""}),
        "l0": Info({}),
    }
    found = reach("index", infos)  # type: ignore[arg-type]
    assert found == {"index", "m1", "cfg", "l0"}
    assert chain_tops(found, infos) == {("overlayfs", "sha256:top")}  # type: ignore[arg-type]


def test_build_cache_described_in_prune_words() -> None:
    shared_layer = Descriptor("t", "sha256:img", 500)  # an image's layer too
    own = Descriptor("t", "sha256:own", 70)
    recs = [Record("k1", "overlayfs", "s1", shared_layer, created_at="2026-01-01T00:00:00+00:00",
                   last_used="2026-01-02T00:00:00+00:00"),
            Record("k2", "overlayfs", "s2", own), Record("k3", "overlayfs", "s2", own), Record("k4")]
    dirs = [CacheEntry("cachemount:a", "exec.cachemount", 30), CacheEntry("cachemount:b", "exec.cachemount", 5,
                                                                          in_use=True)]
    usage = describe(recs, {"sha256:img"}, dirs)
    by_id = {e.id: e for e in usage.entries}
    assert [by_id[k].shared for k in ("k1", "k2", "k3", "k4")] == [True, True, True, False]
    assert by_id["k1"].size == 500 and by_id["k4"].size == 0
    assert by_id["k1"].created_at is not None and by_id["k1"].last_used is not None
    assert usage.size == 70 + 30 + 5  # the image's layer is not the cache's; "own" once
    assert usage.reclaimable == 70 + 30  # a directory in use stays
