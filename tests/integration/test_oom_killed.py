"""Docker's State.OOMKilled, kept by the daemon (supervisor/runtime/oom.py): a real dockyardd, our
shim, real cgroups, busybox.

A container whose process the kernel's OOM killer kills (`-m 16m`, a shell variable doubling past
it, as test_container_hostile.py's OOM test) exits 137 and `dock inspect` says OOMKilled true,
detached or in the foreground (which deletes its task at once); its next start clears it; a
SIGKILL from `dock kill` (137 too) is no OOM; the verdict outlives a daemon restart, also when the
OOM kill happened while no daemon ran. The CRI's ContainerStatus reason (supervisor/cri) comes from
the same record.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything
from tests.ctr import ctr, ok
from tests.daemon import alive, start_daemon
from tests.dockcli import DockCLI
from tests.integration.test_cri_containers import BUSYBOX, CriRig, _images, container, cri_rig, pod
from tests.integration.test_cri_sandbox import CRI_NS
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

LABEL = "dockyard.oom-killed"
LIMIT = ["-m", "16m", "--memory-swap", "16m"]
HOG = "x=aaaaaaaa; while true; do x=$x$x; done"  # a shell variable doubling until the cgroup's limit
# The first run OOMs; a marker in its own rootfs makes every later run exit 0.
ONCE = f"if [ -e /ran ]; then exit 0; fi; touch /ran; {HOG}"


def state(cli: DockCLI, cid: str) -> dict[str, Any]:
    return dict(cli.json("inspect", cid)[0]["state"])


def docker_state(cli: DockCLI, cid: str) -> tuple[str, str, str]:
    """Docker's paths, as `docker inspect --format` prints them."""
    out = cli.ok("inspect", "--format", "{{.State.OOMKilled}} {{.State.ExitCode}} {{.State.Status}}", cid).split()
    return out[0], out[1], out[2]


def exited(cli: DockCLI, cid: str) -> dict[str, Any]:
    return wait_until(lambda: (s := state(cli, cid))["status"] == "exited" and s, timeout=60,
                      what=f"{cid} to exit")


def test_an_oom_killed_run_says_so_until_the_next_start(dock_cli: DockCLI) -> None:
    cli = dock_cli
    cli.ok("run", "-d", "--net", "none", "--name", "oomed", *LIMIT, IMAGE, "sh", "-c", ONCE)
    s = exited(cli, "oomed")
    assert (s["exit_code"], s["oom_killed"]) == (137, True), s
    assert docker_state(cli, "oomed") == ("true", "137", "exited")
    assert "Exited (137)" in cli.ok("ps", "-a", "--filter", "name=oomed", "--format", "{{.Status}}")
    # the next start is a new run: not OOM-killed, and this one exits 0
    cli.ok("start", "oomed")
    wait_until(lambda: docker_state(cli, "oomed") == ("false", "0", "exited"), timeout=60,
               what="the second run to exit 0, not OOM-killed")


def test_a_foreground_run_that_is_oom_killed_says_so(dock_cli: DockCLI) -> None:
    # `dock run` deletes its task as soon as it sees the exit: the verdict is taken before that.
    res = dock_cli.dock("run", "--net", "none", "--name", "fg", *LIMIT, IMAGE, "sh", "-c", HOG)
    assert res.returncode == 137, (res.returncode, res.stderr)
    assert docker_state(dock_cli, "fg") == ("true", "137", "exited")


def test_a_sigkill_is_no_oom_kill(dock_cli: DockCLI) -> None:
    cli = dock_cli
    cli.ok("run", "-d", "--net", "none", "--name", "killed", *LIMIT, IMAGE, "sleep", "600")
    cli.ok("kill", "-s", "KILL", "killed")
    s = exited(cli, "killed")
    assert (s["exit_code"], s["oom_killed"]) == (137, False), s
    assert docker_state(cli, "killed") == ("false", "137", "exited")


@pytest.fixture
def own_daemon() -> Iterator[tuple[Any, DockCLI]]:
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        yield d, DockCLI(d.address)
        remove_everything(d)


def restart(d: Any) -> None:
    assert d.stop(signal.SIGTERM) == 0
    again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
    d.proc, d.log_start = again.proc, again.log_start


def test_the_verdict_outlives_a_daemon_restart(own_daemon: tuple[Any, DockCLI]) -> None:
    d, cli = own_daemon
    # OOM-killed while the daemon runs, inspected after its restart
    cli.ok("run", "-d", "--net", "none", "--name", "before", *LIMIT, IMAGE, "sh", "-c", HOG)
    exited(cli, "before")
    # OOM-killed while no daemon runs: the shim keeps the task, the daemon finds it again
    with tempfile.TemporaryDirectory(prefix="dy-oom-") as gate:
        cli.ok("run", "-d", "--net", "none", "--name", "while-down", "-v", f"{gate}:/gate", *LIMIT, IMAGE, "sh",
               "-c", f"while [ ! -e /gate/go ]; do sleep 0.05; done; {HOG}")
        pid = state(cli, "while-down")["pid"]
        assert pid > 0
        assert d.stop(signal.SIGTERM) == 0
        Path(gate, "go").touch()
        wait_until(lambda: not alive(pid), timeout=60, what="the init to be OOM-killed while no daemon runs")
        again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
        d.proc, d.log_start = again.proc, again.log_start
        assert docker_state(cli, "before") == ("true", "137", "exited")
        assert wait_until(lambda: docker_state(cli, "while-down")[0] == "true", what="the OOM kill to be found"
                          ) and docker_state(cli, "while-down") == ("true", "137", "exited")
        # and once more, the record being all there is
        restart(d)
        assert docker_state(cli, "while-down") == ("true", "137", "exited")
        cli.ok("rm", "-f", "while-down", "before")
    assert "Traceback" not in d.log()


# -- the CRI: ContainerStatus's reason is read from the same record --------------------------------


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-crioom-", _images) as r:
        yield r


def labels_of(rig: CriRig, cid: str) -> dict[str, str]:
    info = json.loads(ok(ctr(rig.d, "containers", "info", cid, namespace=CRI_NS)))
    return dict(info.get("Labels") or {})


def test_cri_reason_oomkilled_comes_from_the_daemons_record(rig: CriRig) -> None:
    pcfg = pod("oom", rig.tmp)
    p = rig.runp(pcfg)
    memory = {"resources": {"memory_limit_in_bytes": 32 << 20}}
    hog = rig.run(p, pcfg, container("hog", image=BUSYBOX, command=["sh", "-c", HOG], linux=memory))
    killed = rig.run(p, pcfg, container("killed", image=BUSYBOX, command=["sleep", "600"], linux=memory))
    wait_until(lambda: rig.state(hog) == "CONTAINER_EXITED", timeout=60, what="the memory hog to be killed")
    rig.ok("stop", "--timeout", "0", killed)  # SIGKILL: 137, but no OOM
    # the exited container's task goes at once (as containerd's CRI): the record is what is left
    wait_until(lambda: hog not in ok(ctr(rig.d, "tasks", "ls", "-q", namespace=CRI_NS)).split(),
               what="the exited container's task to be deleted")
    assert labels_of(rig, hog).get(LABEL) == "true"
    assert LABEL not in labels_of(rig, killed)
    assert (rig.status(hog)["exitCode"], rig.status(hog)["reason"]) == (137, "OOMKilled")
    assert (rig.status(killed)["exitCode"], rig.status(killed)["reason"]) == (137, "Error")
    rig.remove_pods()
