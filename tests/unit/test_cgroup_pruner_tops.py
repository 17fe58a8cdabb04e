"""`CgroupPruner` finds the hierarchies' tops once, not by reading mountinfo on every prune (on
the event loop); a failure to find them is not remembered, so a later prune tries again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT
from supervisor.runtime import cgroups
from supervisor.runtime.cgroups import CgroupPruner


def test_tops_are_found_once_and_a_failure_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain directory stands in for a cgroup2 root: what the prunes remove is real."""
    lookups: list[str] = []

    def host_version(root: str) -> int:
        lookups.append(root)
        if len(lookups) == 1:
            raise OSError("mountinfo unreadable")
        return 2

    monkeypatch.setattr(cgroups, "host_version", host_version)
    pruner = CgroupPruner(str(tmp_path))
    top = tmp_path / PARENT
    for ns in ("a", "b", "c"):
        (top / ns / "gone").mkdir(parents=True)
        (top / ns / "gone").rmdir()  # what a foreign shim's delete leaves: the empty namespace level

    pruner.prune("a/gone")  # the tops cannot be found: nothing is removed, nothing remembered
    assert (top / "a").is_dir() and len(lookups) == 1
    pruner.prune("a/gone")
    pruner.prune("b/gone")
    pruner.prune("c/gone")
    assert lookups == [str(tmp_path)] * 2, "the hierarchies were looked up again"
    assert os.listdir(top) == [] and top.is_dir()
