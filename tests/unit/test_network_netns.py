"""netns files: create, enter, remove (as root; each namespace is new and empty, the host's untouched)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists, NotFound
from supervisor.network import netns
from supervisor.network.counters import read_counters

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def test_create_enter_remove(tmp_path: Path) -> None:
    path = netns.create(tmp_path / "netns" / "ns-a")
    try:
        assert _mounted(path) and netns.is_mounted(path)
        mine = os.readlink("/proc/thread-self/ns/net")
        inside = netns.in_netns(path, lambda: os.readlink("/proc/thread-self/ns/net"))
        assert inside != mine and os.readlink("/proc/thread-self/ns/net") == mine  # the caller stays put
        assert os.stat(path).st_ino == int(inside.split("[")[1].rstrip("]"))
        links = subprocess.run(["nsenter", f"--net={path}", "ip", "-o", "link"], capture_output=True, text=True,
                               check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        assert read_counters(path) == {}  # only lo, which is left out
        with pytest.raises(AlreadyExists):
            netns.create(path)
        assert netns.listing(path.parent) == [path]
    finally:
        netns.remove(path)
    assert not path.exists() and not _mounted(path)
    netns.remove(path)  # idempotent
    with pytest.raises(NotFound):
        read_counters(path)


def test_remove_a_half_made_file(tmp_path: Path) -> None:
    half = tmp_path / "half"
    half.touch()  # a crash between the file and its mount
    assert not netns.is_mounted(half)
    netns.remove(half)
    assert not half.exists()


def test_netns_does_not_import_the_shim() -> None:
    # the daemon's side must not reach into the shim's internals; dockyard_common is the shared ground
    code = ("import sys, supervisor.network.netns, supervisor.network.counters, dockyard_common.netns_syscalls; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('shim', 'cli', 'dock')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    assert out == "[]"
