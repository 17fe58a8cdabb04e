"""Claims (`claim_leaf`) are honoured on every level above a cgroups path, and the probes that look
at them never cost a create its own leaf. On a fake tree (plain directories; flock(2) acts on
them as on cgroupfs)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT
from dockyard_common.errors import FailedPrecondition
from shim.cgroups import base
from shim.cgroups.base import check_unclaimed, claim_leaf, claimed, release_claim, remove_unclaimed
from shim.cgroups.v2 import V2Manager

LEVEL = {"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": "", "cgroup.procs": ""}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for d in (tmp_path, tmp_path / PARENT, tmp_path / PARENT / "t"):
        d.mkdir(exist_ok=True)
        for name, text in LEVEL.items():
            (d / name).write_text(text)
    return tmp_path


def test_a_create_below_a_claimed_leaf_is_refused_and_leaves_it(root: Path) -> None:
    first = V2Manager(str(root))
    first.create("/t/a")  # made and claimed; its init has not joined yet
    for below in ("/t/a/b", "/t/a/b/c"):
        with pytest.raises(FailedPrecondition, match="another container is being created in /t/a"):
            V2Manager(str(root)).create(below)
    assert (root / PARENT / "t" / "a").is_dir() and not (root / PARENT / "t" / "a" / "b").exists()
    sibling = V2Manager(str(root))
    sibling.create("/t/c")  # beside it: nobody's
    sibling._release()
    assert claimed(str(root / PARENT / "t" / "a")) and not claimed(str(root / PARENT / "t"))
    first._release()
    assert not claimed(str(root / PARENT / "t" / "a"))
    check_unclaimed(str(root / PARENT), "t/a/b")  # released and no process (the fake tree): free again


def _holding_shared(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return fd


def test_a_probe_of_the_leaf_does_not_refuse_its_claim(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another create looking at the levels above its own leaf holds a shared lock for a moment:
    the claim waits it out (here: the first attempt meets it, then the probe lets go)."""
    leaf = root / PARENT / "t" / "a"
    leaf.mkdir()
    probe = _holding_shared(leaf)
    real = base.wait_until
    tries: list[bool] = []

    def probe_ends(pred: Callable[[], bool], timeout: float) -> bool:
        tries.append(pred())  # meets the probe's shared lock
        os.close(probe)
        return real(pred, timeout)

    monkeypatch.setattr(base, "wait_until", probe_ends)
    release_claim(claim_leaf(str(root / PARENT), "t/a"))
    assert tries == [False]


def test_probes_that_never_end_refuse_after_a_while(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leaf = root / PARENT / "t" / "a"
    leaf.mkdir()
    monkeypatch.setattr(base, "PROBE_WAIT", 0.0)
    probe = _holding_shared(leaf)
    try:
        with pytest.raises(FailedPrecondition, match="kept looking"):
            claim_leaf(str(root / PARENT), "t/a")
    finally:
        os.close(probe)


def test_a_leaf_removed_and_made_again_before_the_lock_is_not_ours(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fd was opened on the old directory; the path names another one now (another create's)."""
    leaf = root / PARENT / "t" / "a"
    leaf.mkdir()
    real = base.wait_until

    def remade(pred: Callable[[], bool], timeout: float) -> bool:
        leaf.rmdir()
        leaf.mkdir()
        return real(pred, timeout)

    monkeypatch.setattr(base, "wait_until", remade)
    with pytest.raises(FailedPrecondition, match="removed it meanwhile"):
        claim_leaf(str(root / PARENT), "t/a")


def test_a_failed_create_keeps_a_level_another_create_claimed(root: Path) -> None:
    level = root / PARENT / "t" / "a"
    level.mkdir()
    fd = claim_leaf(str(root / PARENT), "t/a")
    remove_unclaimed(str(level))
    assert level.is_dir()
    release_claim(fd)
    remove_unclaimed(str(level))
    assert not level.exists()
