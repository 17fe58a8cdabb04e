"""A cgroups path goes to one create only (`claim_leaf`): a flock on the leaf, held until the
first process joined, then the leaf shows it is in use. On a fake tree (plain directories)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT
from dockyard_common.errors import FailedPrecondition
from shim.cgroups.base import claim_leaf, release_claim
from shim.cgroups.v2 import V2Manager

LEVEL = {"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": "", "cgroup.procs": ""}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for d in (tmp_path, tmp_path / PARENT, tmp_path / PARENT / "t"):
        d.mkdir(exist_ok=True)
        for name, text in LEVEL.items():
            (d / name).write_text(text)
    return tmp_path


def test_a_claimed_leaf_is_refused_until_released(root: Path) -> None:
    top = str(root / PARENT)
    (root / PARENT / "t" / "c").mkdir()
    fd = claim_leaf(top, "t/c")
    with pytest.raises(FailedPrecondition, match="being created"):
        claim_leaf(top, "t/c")
    release_claim(fd)
    release_claim(claim_leaf(top, "t/c"))


def test_a_leaf_with_a_process_is_refused_under_the_lock(root: Path) -> None:
    leaf = root / PARENT / "t" / "c"
    leaf.mkdir()
    (leaf / "cgroup.procs").write_text("4242\n")
    with pytest.raises(FailedPrecondition, match="holds processes"):
        claim_leaf(str(root / PARENT), "t/c")


def test_the_second_create_loses_and_leaves_the_winners_leaf(root: Path) -> None:
    first, second = V2Manager(str(root)), V2Manager(str(root))
    first.create("/t/new")
    with pytest.raises(FailedPrecondition, match="being created"):
        second.create("/t/new")
    assert (root / PARENT / "t" / "new").is_dir()
    (root / PARENT / "t" / "new" / "cgroup.procs").write_text("")  # cgroupfs makes it with the directory
    # The winner's first process joins: its lock goes, the leaf is in use by its processes.
    first.add_process(4242)
    with pytest.raises(FailedPrecondition, match="holds processes"):
        second.create("/t/new")
    assert (root / PARENT / "t" / "new").is_dir()
