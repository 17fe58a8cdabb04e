"""bench/cri.py keeps working: a short run of dockyardd's side only (containerd's CRI not needed).

A smoke test, not a measurement: it asserts the bench ran every case through the CRI and left
nothing behind (mounts of its namespace and temp dirs, its cgroup parent), never how fast anything was.
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
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not shutil.which("nsenter") \
        or not shutil.which("gcc") or not shutil.which("ctr") or not Path("/bin/busybox").exists():
    pytest.skip("needs root, containernetworking-plugins, nsenter, gcc, ctr and busybox-static (scripts/install)",
                allow_module_level=True)


def bench_leftovers() -> list[str]:
    """Mounts under the bench's own temp dirs (its pinned namespace, pods' rootfs) and cgroups it named."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if "/bench-cri-" in line or "/bcri-do-" in line]
    return mounts + [str(p) for p in Path("/sys/fs/cgroup").glob("*/dybench-*")]


def test_short_dockyardd_run(tmp_path: Path) -> None:
    before = bench_leftovers()
    out = tmp_path / "cri.json"
    args = ["--only", "dockyardd", "--rounds", "2", "--pods", "3", "--pods-per-shim", "2", "--json", str(out)]
    res = subprocess.run([sys.executable, str(REPO / "bench" / "cri.py"), *args],
                         capture_output=True, text=True, timeout=180, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    found = json.loads(out.read_text())
    dock = found["dockyardd"]
    assert "containerd" not in found and "ratios" not in found
    assert len(dock["start_pod_samples_ms"]) == 2 and all(t > 0 for t in dock["start_pod_samples_ms"])
    assert all(dock[f"{step}_median_ms"] > 0 for step in ("RunPodSandbox", "CreateContainer", "StartContainer"))
    assert dock["pods"] == 3 and dock["start_many_s"] > 0 and dock["remove_many_s"] > 0
    # the memory was read from the pods' real processes: a pause process per pod and a shim per two
    # pods (and the zygote they were forked from, counted as a shim)
    assert found["pods_per_shim"] == 2
    assert dock["memory"]["pauses"] == 3 and dock["memory"]["shims"] in (2, 3)
    assert dock["pss_per_pod_kib"] > 0
    assert bench_leftovers() == before
