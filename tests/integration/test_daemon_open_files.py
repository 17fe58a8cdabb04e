"""The daemon's open-files limit: it raises its soft RLIMIT_NOFILE to the hard one at start (as
Go's runtime does for containerd), since it holds ~3 descriptors a running container; with the
usual soft 1024 the ~330th container failed with EMFILE.

The daemon runs under `prlimit --nofile=64:<the hard limit we have>` (this host withholds
CAP_SYS_RESOURCE: a hard limit cannot be raised), so 16 containers are past the soft limit."""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ctr import ctr
from tests.daemon import DaemonProcess, remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]

SOFT, HARD = 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
IMAGE = "docker.io/library/busybox:latest"
COUNT = 16


@pytest.fixture
def low_limit_daemon() -> Iterator[DaemonProcess]:
    with stopping_new_zygotes():
        d = start_daemon(wrap=["prlimit", f"--nofile={SOFT}:{HARD}"])
        try:
            with tempfile.NamedTemporaryFile(suffix=".tar") as f:
                f.write(busybox_oci_archive(IMAGE))
                f.flush()
                r = ctr(d, "images", "import", f.name)
                assert r.returncode == 0, r.stderr
            yield d
        finally:
            for i in range(COUNT):
                ctr(d, "tasks", "kill", "-s", "KILL", f"many{i}")
            for i in range(COUNT):
                ctr(d, "tasks", "rm", "-f", f"many{i}")
                ctr(d, "containers", "rm", f"many{i}")
            remove_base(d)


def limits(pid: int) -> tuple[int, int]:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_the_daemon_runs_past_a_low_soft_limit(low_limit_daemon: DaemonProcess) -> None:
    d = low_limit_daemon
    assert limits(d.proc.pid) == (HARD, HARD)
    for i in range(COUNT):
        r = ctr(d, "run", "-d", IMAGE, f"many{i}", "sleep", "600")
        assert r.returncode == 0, f"container {i}: {r.stderr}"
    held = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
    assert held > SOFT, f"{held} descriptors: the test no longer reaches the limit it lowers"
    tasks = ctr(d, "tasks", "ls").stdout
    assert sum(" RUNNING" in line for line in tasks.splitlines()) == COUNT, tasks
    # the containers keep their spec's limit (ctr's 1024), not the daemon's
    r = ctr(d, "tasks", "exec", "--exec-id", "limit", "many0", "sh", "-c", "ulimit -n")
    assert r.returncode == 0 and r.stdout.strip() == "1024", (r.stdout, r.stderr)
    assert "Too many open files" not in d.log()[d.log_start:]


def test_out_of_open_files_is_resource_exhausted_in_words(low_limit_daemon: DaemonProcess) -> None:
    """A daemon whose hard limit is low too runs out: each refused create says so in the
    system's words (it said `internal error: [Errno 24] ...`), and once containers are gone
    the next one runs. The limit is lowered once the first container runs: its shim and the
    zygote that forks shims keep theirs (a container's spec asks for 1024)."""
    d = low_limit_daemon
    r = ctr(d, "run", "-d", IMAGE, "many0", "sleep", "600")
    assert r.returncode == 0, r.stderr
    low = len(os.listdir(f"/proc/{d.proc.pid}/fd")) + 12
    subprocess.run(["prlimit", f"--pid={d.proc.pid}", f"--nofile={low}:{low}"], check=True)
    refused = None
    for i in range(1, COUNT):
        r = ctr(d, "run", "-d", IMAGE, f"many{i}", "sleep", "600")
        if r.returncode != 0:
            refused = i
            break
    assert refused is not None, "the daemon never ran out of descriptors"
    assert "Too many open files" in r.stderr and "resource exhausted" in r.stderr, r.stderr
    assert "[Errno" not in r.stderr, r.stderr
    for i in range(refused + 1):
        ctr(d, "tasks", "kill", "-s", "KILL", f"many{i}")
        ctr(d, "tasks", "rm", "-f", f"many{i}")
        ctr(d, "containers", "rm", f"many{i}")
    r = ctr(d, "run", "-d", IMAGE, "many0", "sleep", "600")
    assert r.returncode == 0, r.stderr
