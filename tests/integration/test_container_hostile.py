"""Hostile containers: a default (`dock run`, unprivileged) container whose processes try to
reach the host, the daemon or the shim, or to wedge them.

A real daemon and our shim; busybox containers, plus a tiny static C helper (swap.c below,
compiled here and copied in with `dock cp`) for what busybox cannot do: swap a directory and a
symlink out of the container atomically, forever (renameat2 RENAME_EXCHANGE), the way an
attacker races a host-side walk.

Covered here: `dock export` of a running container (native and overlay snapshots) that swaps
directories for symlinks to a host directory mid-walk: no host file is read and the export
succeeds (it used to read the host's files, or fail on a name that changed type); `dock cp` in
and out of such a container writes and reads only the container's files; a 64 MiB line without
a newline keeps the shim's memory bounded and is logged as 16 KiB P records; an init that
closes its stdio, ignores SIGTERM and never reaps 50 zombies still stops (SIGKILL after the
timeout, exit 137); a container that OOMs under -m exits 137 and its neighbour runs on; 1000+
processes (no pids limit) still go with `rm -f`, cgroup and all.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE
from tests.daemon import REPO, DaemonProcess, shims_in_bundles
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

SWAP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
/* swap A1 B1 [A2 B2 ...]: exchange each pair of names, forever. */
int main(int argc, char **argv) {
    for (;;)
        for (int i = 1; i + 1 < argc; i += 2)
            if (syscall(SYS_renameat2, AT_FDCWD, argv[i], AT_FDCWD, argv[i + 1], 2 /* RENAME_EXCHANGE */)) {
                perror("renameat2");
                return 1;
            }
}
"""


@pytest.fixture(scope="module")
def swap_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("swap")
    (work / "swap.c").write_text(SWAP_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "swap"), str(work / "swap.c")], check=True,
                   capture_output=True)
    return work / "swap"


@pytest.fixture
def host_secret(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A host directory (not in any container) holding a file with a random token."""
    secret_dir = tmp_path / "host-only"
    secret_dir.mkdir()
    token = f"host-secret-{secrets.token_hex(8)}"
    (secret_dir / "secret").write_text(token + "\n")
    yield secret_dir, token


def swapping_container(cli: DockCLI, swap: Path, target: Path, *, pairs: int = 40, snapshotter: str = "") -> str:
    """A running container whose /x/dN directories trade places with /x/sN, symlinks to the
    host path `target`, without pause."""
    cid = f"hostile-{secrets.token_hex(3)}"
    extra = ["--snapshotter", snapshotter] if snapshotter else []
    cli.ok("run", "-d", "--net", "none", "--name", cid, *extra, IMAGE, "sleep", "600")
    cli.ok("exec", cid, "sh", "-c",
           f"mkdir /x && for i in $(seq {pairs}); do mkdir /x/d$i && echo inside > /x/d$i/f"
           f" && ln -s {target} /x/s$i; done")
    cli.ok("cp", str(swap), f"{cid}:/swap")
    names = [n for i in range(1, pairs + 1) for n in (f"/x/d{i}", f"/x/s{i}")]
    cli.ok("exec", "-d", cid, "/swap", *names)
    return cid


def tar_leaks(path: Path, token: str) -> list[str]:
    """Names in the tar at `path` that are host files: `secret`, or any file holding `token`."""
    leaks = []
    with tarfile.open(path) as tf:
        for m in tf:
            if m.name.endswith("/secret"):
                leaks.append(m.name)
            elif m.isfile() and m.size < 1 << 20:
                f = tf.extractfile(m)
                if f is not None and token.encode() in f.read():
                    leaks.append(m.name)
    return leaks


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_export_never_follows_a_symlink_swapped_in_mid_walk(dock_cli: DockCLI, swap_binary: Path,
                                                          host_secret: tuple[Path, str], tmp_path: Path,
                                                          snapshotter: str) -> None:
    secret_dir, token = host_secret
    cid = swapping_container(dock_cli, swap_binary, secret_dir, snapshotter=snapshotter)
    for attempt in range(6):
        out = tmp_path / f"export-{attempt}.tar"
        dock_cli.ok("export", "-o", str(out), cid)
        assert tar_leaks(out, token) == [], f"attempt {attempt}: the export read host files"
        with tarfile.open(out) as tf:
            names = tf.getnames()
        assert "bin/busybox" in names and "x" in names
        out.unlink()
    # The container is still the swapping one (the race ran all along), and goes with rm -f.
    assert "swap" in dock_cli.ok("top", cid)
    dock_cli.ok("rm", "-f", cid)


def test_cp_in_and_out_while_the_container_swaps_in_symlinks_to_the_host(dock_cli: DockCLI, swap_binary: Path,
                                                                        host_secret: tuple[Path, str],
                                                                        tmp_path: Path) -> None:
    secret_dir, token = host_secret
    before = sorted(p.name for p in secret_dir.iterdir())
    cid = swapping_container(dock_cli, swap_binary, secret_dir, pairs=8)
    payload = tmp_path / "payload"
    payload.write_text("from the host\n")
    for i in range(1, 9):
        # Into a name that is a directory one moment and a symlink to the host the next: the
        # file lands in the container (its own directory, or the symlink resolved inside its
        # root), never in the host directory; a clear error is fine too.
        res = dock_cli.dock("cp", str(payload), f"{cid}:/x/d{i}/")
        assert "Traceback" not in res.stderr and "unexpected" not in res.stderr, res.stderr
        # Out of one: a tar of the container's names only.
        out = tmp_path / f"out{i}.tar"
        with out.open("wb") as f:
            res2 = subprocess.run([*dock_argv(dock_cli), "cp", f"{cid}:/x", "-"], stdout=f, stderr=subprocess.PIPE,
                                  env=dock_env(dock_cli), timeout=90)
        assert b"Traceback" not in res2.stderr, res2.stderr
        if res2.returncode == 0:
            assert tar_leaks(out, token) == []
    assert sorted(p.name for p in secret_dir.iterdir()) == before, "dock cp wrote into the host directory"
    dock_cli.ok("rm", "-f", cid)


def dock_env(cli: DockCLI) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address}


def dock_argv(cli: DockCLI) -> list[str]:
    return [sys.executable, "-m", "dock.cli"]


def shim_of(d: DaemonProcess, cid: str) -> int:
    """The pid of the shim serving `cid` (its bundle's shim)."""
    found = [pid for pid in shims_in_bundles(d) if os.readlink(f"/proc/{pid}/cwd").endswith(f"/{cid}")]
    assert len(found) == 1, found
    return found[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_endless_output_without_a_newline_keeps_the_shim_small(dock_cli: DockCLI, busybox_daemon: DaemonProcess
                                                              ) -> None:
    # 64 MiB in one "line": the shim must cut it into 16 KiB P records as it goes, not hold it.
    cid = dock_cli.ok("run", "-d", "--net", "none", IMAGE, "sh", "-c",
                      "head -c 67108864 /dev/zero | tr '\\0' a; echo; echo done; exec sleep 600").strip()
    shim = shim_of(busybox_daemon, cid)
    wait_until(lambda: "done" in dock_cli.ok("logs", "--tail", "1", cid), timeout=90, what="the output logged")
    assert rss_kib(shim) < 80 * 1024, f"shim RSS {rss_kib(shim)} KiB after a 64 MiB line"
    # The record layout: P records of at most 16 KiB, then the line's F record.
    logdir = next((busybox_daemon.root / "logs" / "default").glob(f"{cid}*"))
    with (logdir / "container.log").open("rb") as f:
        head = [f.readline() for _ in range(3)]
    assert all(b" stdout P " in r and len(r) < 16 * 1024 + 100 for r in head), [r[:80] for r in head]
    dock_cli.ok("rm", "-f", cid)


def test_closed_stdio_sigterm_ignored_and_unreaped_zombies_do_not_wedge_stop(dock_cli: DockCLI,
                                                                            busybox_daemon: DaemonProcess) -> None:
    # The init closes its stdout and stderr, ignores SIGTERM (a trap: pid 1 has no default
    # action anyway) and leaves 50 zombies it never waits for: the shell's children end after
    # it has exec'd sleep, which never reaps them.
    script = "trap '' TERM; exec >&- 2>&-; for i in $(seq 50); do sleep 1 & done; exec sleep 600"
    cid = dock_cli.ok("run", "-d", "--net", "none", IMAGE, "sh", "-c", script).strip()
    pid = int(dock_cli.json("inspect", cid)[0]["state"]["pid"])

    def zombies() -> int:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sum(1 for k in kids if _state(int(k)) == "Z")
    wait_until(lambda: zombies() == 50, what="50 zombies under the container's init")
    assert dock_cli.ok("logs", cid) == ""
    assert "sleep" in dock_cli.ok("top", cid)
    # dock stop: SIGTERM is ignored, so SIGKILL after the timeout; the exit is 137.
    dock_cli.ok("stop", "-t", "1", cid)
    state = dock_cli.json("inspect", cid)[0]["state"]
    assert state["running"] is False and state["exit_code"] == 137, state
    assert _state(pid) == "gone"
    dock_cli.ok("rm", cid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_container_that_oom_kills_itself_exits_137_and_leaves_its_neighbour_alone(dock_cli: DockCLI) -> None:
    neighbour = dock_cli.ok("run", "-d", "--net", "none", IMAGE, "sleep", "600").strip()
    # A shell variable doubling until the cgroup's limit.
    res = dock_cli.dock("run", "--net", "none", "-m", "16m", "--memory-swap", "16m", IMAGE, "sh", "-c",
                        "x=aaaaaaaa; while true; do x=$x$x; done")
    assert res.returncode == 137, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert dock_cli.json("inspect", neighbour)[0]["state"]["running"] is True
    dock_cli.ok("rm", "-f", neighbour)


def test_many_processes_then_rm_f_leaves_no_process_or_cgroup(dock_cli: DockCLI, busybox_daemon: DaemonProcess
                                                              ) -> None:
    # No pids limit (Docker's default): 1000 processes, each spawning more while the kill is on
    # its way; the shim answers, rm -f ends them all and the cgroup goes.
    script = "for i in $(seq 1000); do sleep 600 & done; while true; do sleep 600 & sleep 0.01; done"
    cid = dock_cli.ok("run", "-d", "--net", "none", IMAGE, "sh", "-c", script).strip()
    wait_until(lambda: len(dock_cli.ok("top", cid).splitlines()) > 1000, timeout=60, what="1000 processes")
    cgroup = list(Path("/sys/fs/cgroup").glob(f"**/dockyard/default/{cid}"))
    assert cgroup
    dock_cli.ok("rm", "-f", cid)
    assert not any(p.exists() for p in cgroup)
    assert cid not in dock_cli.ok("ps", "-a", "-q", "--no-trunc")
