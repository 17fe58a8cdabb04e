"""dockyard_common.cgroups and .mountinfo: the host's layout and the one walk that prunes empty
levels (the shim after its own delete, the daemon after a foreign shim's). Plain directories
stand in for cgroupfs here: rmdir refuses a non-empty one as cgroupfs refuses a busy cgroup."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT, detect_cgroup_driver, host_version, prune_parents
from dockyard_common.errors import InvalidArgument
from dockyard_common.mountinfo import mountinfo, parse_mountinfo


def _tree(tmp_path: Path) -> Path:
    top = tmp_path / "hier" / PARENT
    (top / "ns" / "web").mkdir(parents=True)
    (top / "ns" / "db").mkdir()
    (top / "lone" / "a" / "b").mkdir(parents=True)
    return top


def test_prune_takes_the_empty_levels_up_to_the_top_only(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    (top / "lone" / "a" / "b").rmdir()  # the deleted cgroup itself
    prune_parents(str(top / "lone" / "a" / "b"), str(top))
    assert sorted(p.name for p in top.iterdir()) == ["ns"] and top.is_dir()
    (top / "ns" / "web").rmdir()
    prune_parents(str(top / "ns" / "web"), str(top))
    assert (top / "ns" / "db").is_dir()  # a sibling still lives there: the walk stops


def test_prune_keeps_what_a_create_holds(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    (top / "lone" / "a" / "b").rmdir()
    asked: list[str] = []

    def keep(level: str) -> bool:
        asked.append(level)
        return level == "lone"

    prune_parents(str(top / "lone" / "a" / "b"), str(top), keep=keep)
    assert asked == ["lone/a", "lone"] and (top / "lone").is_dir() and not (top / "lone" / "a").exists()


def test_prune_never_leaves_the_top(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    outside = tmp_path / "hier" / "host"
    outside.mkdir()
    (top / "out").symlink_to(outside)  # cgroupfs has no symlinks; a bug elsewhere must still not pass
    with pytest.raises(InvalidArgument, match="outside"):
        prune_parents(str(top / "out" / "x" / "y"), str(top))
    assert outside.is_dir()
    prune_parents(str(tmp_path / "hier" / "elsewhere" / "c"), str(top))  # not below the top: nothing
    assert (tmp_path / "hier").is_dir()


def test_driver_and_version(tmp_path: Path) -> None:
    assert (host_version(str(tmp_path)), detect_cgroup_driver(str(tmp_path))) == (1, "v1")
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    assert (host_version(str(tmp_path)), detect_cgroup_driver(str(tmp_path))) == (2, "v2")


def test_mountinfo_lines(tmp_path: Path) -> None:
    text = ("36 35 98:0 / /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
            "37 35 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
            "garbage without a separator\n"
            "38 35 0:31 / /short - tmpfs\n")
    assert parse_mountinfo(text) == [("/mnt/my disk", "ext3", "rw,errors=continue"),
                                     ("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate"), ("/short", "tmpfs", "")]
    (tmp_path / "mi").write_text(text)
    assert mountinfo(str(tmp_path / "mi")) == parse_mountinfo(text)
    assert any(point == "/" for point, _, _ in mountinfo())  # this namespace's own
