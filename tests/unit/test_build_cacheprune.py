"""Which build cache records a prune or the size limit removes (supervisor/build/cacheprune.py),
SOURCE_DATE_EPOCH's reading (epoch.py) and the clamped layer tar (archive/diff.py)."""

from __future__ import annotations

import io
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from supervisor.archive.diff import write_diff
from supervisor.build.cacheprune import PruneOptions, cache_size, choose, parse_limit, reclaimed
from supervisor.build.epoch import source_date_epoch
from supervisor.metadata.buildcache import Record

AT = datetime(2026, 1, 2, tzinfo=UTC)


def _rec(key: str, digest: str | None, size: int = 0, hours_ago: int = 0) -> Record:
    used = (AT - timedelta(hours=hours_ago)).isoformat()
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, size) if digest else None
    return Record(key, "overlayfs", "chain-" + key if digest else "", layer, "", used, used)


RECS = [_rec("old", "sha256:a", 100, hours_ago=48), _rec("mid", "sha256:b", 200, hours_ago=30),
        _rec("image", "sha256:c", 400, hours_ago=40), _rec("config", None, hours_ago=50),
        _rec("new", "sha256:a", 100, hours_ago=1)]


def _keys(records: list[Record]) -> list[str]:
    return [r.key for r in records]


def test_dangling_all_and_until() -> None:
    in_use = {"sha256:c"}
    assert _keys(choose(RECS, in_use, PruneOptions(), AT)) == ["config", "old", "mid", "new"]
    assert _keys(choose(RECS, in_use, PruneOptions(all=True), AT)) == ["config", "old", "image", "mid", "new"]
    assert _keys(choose(RECS, in_use, PruneOptions(all=True, unused_for=timedelta(hours=35)), AT)) == [
        "config", "old", "image"]


def test_keep_storage_counts_only_what_the_cache_alone_holds() -> None:
    in_use = {"sha256:c"}
    assert cache_size(RECS, in_use) == 300  # a (shared by two records) and b; c is an image's
    # Oldest first until at most 200 remain: "old" frees nothing ("new" still holds a), then "mid" goes.
    assert _keys(choose(RECS, in_use, PruneOptions(all=True, keep_storage=200), AT)) == ["config", "old", "image",
                                                                                         "mid"]
    assert choose(RECS, in_use, PruneOptions(all=True, keep_storage=300), AT) == []
    gone = choose(RECS, in_use, PruneOptions(all=True, keep_storage=200), AT)
    assert reclaimed(gone, [r for r in RECS if r not in gone], in_use) == 200
    with pytest.raises(InvalidArgument):
        choose(RECS, in_use, PruneOptions(keep_storage=-1), AT)


def test_limit_and_epoch_values() -> None:
    assert parse_limit("") == 0 and parse_limit("0") == 0 and parse_limit("2m") == 2 << 20
    with pytest.raises(InvalidArgument, match="build cache size 'big'"):
        parse_limit("big")
    assert source_date_epoch([("SOURCE_DATE_EPOCH", "1"), ("X", "2"), ("SOURCE_DATE_EPOCH", "1700000000")]) == (
        1700000000)
    assert source_date_epoch([("SOURCE_DATE_EPOCH", "")]) is None and source_date_epoch([]) is None
    for bad in ("-1", "1.5", "soon", "99999999999999"):
        with pytest.raises(InvalidArgument, match="SOURCE_DATE_EPOCH"):
            source_date_epoch([("SOURCE_DATE_EPOCH", bad)])


def test_diff_clamps_mtimes_and_whiteouts(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        (root / "dir").mkdir(parents=True)
        (root / "dir" / "same").write_text("same")
        os.utime(root / "dir" / "same", (1000, 1000))
    (lower / "gone").write_text("x")
    (upper / "dir" / "new").write_text("new")  # now: after the clamp
    (upper / "old").write_text("old")
    os.utime(upper / "old", (500, 500))  # before it: kept
    out = io.BytesIO()
    write_diff(lower, upper, out, mtime_clamp=900)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        times = {m.name: m.mtime for m in tf.getmembers()}
    assert times == {"dir": 900, "dir/new": 900, ".wh.gone": 900, "old": 500}
