"""bench/net.py keeps working: its quick mode, dockyardd's side only (no podman needed).

A smoke test, not a measurement: it asserts the bench ran every case through a published port and
left nothing behind (mounts of its namespaces and temp dirs), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent
NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("iptables") \
        or not shutil.which("nsenter") or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, iptables, nsenter and busybox-static (scripts/install)",
                allow_module_level=True)


def bench_mounts() -> list[str]:
    """Mounts under the bench's own temp dirs (its pinned namespaces, container rootfs)."""
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if "/bench-net-dockyardd-" in line or "/bnet-do-" in line]


def test_quick_dock_side(tmp_path: Path) -> None:
    before = bench_mounts()
    out = tmp_path / "net.json"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "net.py"), "--quick", "--only", "dockyardd",
                          "--json", str(out)], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    found = json.loads(out.read_text())
    dock = found["dockyardd"]
    assert "podman" not in found and "ratios" not in found
    assert len(dock["run_rm_samples_ms"]) == 3 and all(t > 0 for t in dock["run_rm_samples_ms"])
    assert dock["containers"] == 5 and dock["start_many_s"] > 0 and dock["remove_many_s"] > 0
    # bytes really came through the published port from busybox nc in the container
    assert dock["throughput_mb_s"] > 0
    assert "TCP MB/s" in res.stdout and "dockyardd" in res.stdout
    assert bench_mounts() == before
