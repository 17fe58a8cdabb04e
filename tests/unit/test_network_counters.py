"""Counters read through a pid in the namespace (no thread, no setns) and through the netns file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import NotFound
from supervisor.network import netns
from supervisor.network.counters import read_counters

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


def _in(path: Path, *argv: str) -> None:
    subprocess.run(["nsenter", f"--net={path}", *argv], check=True, capture_output=True)


@pytest.fixture
def ns_with_traffic(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A fresh netns with a veth pair (both ends inside) that has carried traffic, and a process in it."""
    path = netns.create(tmp_path / "netns" / "ns")
    proc = None
    try:
        _in(path, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _in(path, "ip", "addr", "add", "192.0.2.1/24", "dev", "v0")
        _in(path, "ip", "link", "set", "v0", "up")
        _in(path, "ip", "link", "set", "v1", "up")
        # a fixed neighbour: the datagram leaves v0 inside sendto (no ARP round, nothing async)
        _in(path, "ip", "neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", "v0")
        _in(path, sys.executable, "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x' * 100, ('192.0.2.2', 9))")
        proc = subprocess.Popen(["nsenter", f"--net={path}", "sh", "-c", "echo ready; exec sleep 600"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"  # inside by now
        yield path, proc.pid
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        netns.remove(path)


def test_pid_read_needs_no_thread_and_matches_the_netns(ns_with_traffic: tuple[Path, int],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, pid = ns_with_traffic
    before = read_counters(path)
    # the datagram went out of v0 and into v1
    assert set(before) == {"v0", "v1"} and before["v0"].tx_bytes >= 100 and before["v1"].rx_bytes >= 100

    def no_thread(fn: object) -> object:
        raise AssertionError("a pid in the namespace must not need a thread or setns")

    monkeypatch.setattr(netns, "in_fresh_thread", no_thread)
    by_pid = read_counters(path, pid=pid)
    monkeypatch.undo()
    after = read_counters(path)
    assert set(by_pid) == {"v0", "v1"}
    # the same interfaces' counters: they can only have grown between the reads around it
    for name in ("v0", "v1"):
        for field in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes"):
            assert getattr(before[name], field) <= getattr(by_pid[name], field) <= getattr(after[name], field)
    assert "lo" in read_counters(path, pid=pid, include_loopback=True)


def test_a_pid_elsewhere_or_gone_falls_back_to_the_netns(ns_with_traffic: tuple[Path, int]) -> None:
    path, _ = ns_with_traffic
    # this test's own pid is in another namespace: its interfaces must not be reported
    assert set(read_counters(path, pid=os.getpid())) == {"v0", "v1"}
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert set(read_counters(path, pid=gone.pid)) == {"v0", "v1"}


def test_removed_netns_is_not_found_even_with_a_pid(tmp_path: Path) -> None:
    path = netns.create(tmp_path / "ns")
    netns.remove(path)
    with pytest.raises(NotFound):
        read_counters(path, pid=os.getpid())
