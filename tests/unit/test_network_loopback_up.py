"""netns.create(lo_up=True) leaves `lo` as CNI's loopback plugin does: up, with its addresses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from supervisor.network import netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _lo(path: Path) -> dict[str, Any]:
    out = subprocess.run(["nsenter", f"--net={path}", "ip", "-j", "addr", "show", "lo"], capture_output=True,
                         check=True).stdout
    return json.loads(out)[0]


def _loopback_carries() -> bool:
    """A TCP connection over 127.0.0.1 in the calling thread's namespace."""
    with socket.create_server(("127.0.0.1", 0)) as srv, \
            socket.create_connection(srv.getsockname(), timeout=5) as c:
        conn, _ = srv.accept()
        with conn:
            c.sendall(b"x")
            return conn.recv(1) == b"x"


def test_lo_is_up_in_a_new_namespace_only_when_asked(tmp_path: Path) -> None:
    up = netns.create(tmp_path / "up", lo_up=True)
    down = netns.create(tmp_path / "down")
    try:
        lo = _lo(up)
        assert "UP" in lo["flags"] and lo["operstate"] == "UNKNOWN"  # as the plugin's LinkSetUp leaves it
        addrs = {a["local"] for a in lo["addr_info"]}
        assert "127.0.0.1" in addrs
        assert netns.in_netns(up, _loopback_carries)
        assert "UP" not in _lo(down)["flags"]
    finally:
        netns.remove(up)
        netns.remove(down)
    assert not (tmp_path / "up").exists() and not (tmp_path / "down").exists()


def test_the_plugin_and_our_lo_up_leave_the_same_link(tmp_path: Path) -> None:
    """The state CNI's loopback plugin leaves (its ADD run by hand) is the state we leave."""
    plugin = Path("/usr/lib/cni/loopback")
    if not plugin.exists():
        pytest.skip("containernetworking-plugins not installed")
    ours = netns.create(tmp_path / "ours", lo_up=True)
    theirs = netns.create(tmp_path / "theirs")
    try:
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_NETNS": str(theirs), "CNI_IFNAME": "lo",
               "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run([str(plugin)], input=b'{"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}',
                       env=env, capture_output=True, check=True)
        a, b = _lo(ours), _lo(theirs)
        assert (a["flags"], a["operstate"], a["addr_info"]) == (b["flags"], b["operstate"], b["addr_info"])
    finally:
        netns.remove(ours)
        netns.remove(theirs)
