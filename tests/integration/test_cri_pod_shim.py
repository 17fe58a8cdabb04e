"""One shim per pod (`[cri] pods_per_shim = 1`; test_cri_shared_shim.py has pods share): the
sandbox and every container of a CRI pod are served by the same shim process (the
`io.kubernetes.cri.sandbox-id` annotation groups them, as containerd's runc shim does), which
stays while any of them is left and exits with the last.

Driven by the real `crictl` against a daemon in a network namespace of its own (the rig of
test_cri_containers.py, a daemon for this module; its `removed_all` also checks that every pod's
shim is gone at the end of each test).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import start_daemon
from tests.integration.test_cri_containers import CriRig, _images, container, cri_rig, pod, removed_all
from tests.integration.test_cri_sandbox import CRI_NS
from tests.waiting import wait_until

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-cripod-", _images, config="[cri]\npods_per_shim = 1\n") as r:
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    removed_all(rig)


def ppid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def is_shim(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockyard-shim"
    except OSError:
        return False


def group_sockets(rig: CriRig) -> list[str]:
    shared = rig.d.state / "tasks" / ".dockyard-shim"
    return sorted(p.name for p in shared.glob("group-*.sock")) if shared.exists() else []


def address(rig: CriRig, cid: str) -> str:
    return (rig.d.state / "tasks" / CRI_NS / cid / "address").read_text()


def init_pid(rig: CriRig, cid: str, sandbox: bool = False) -> int:
    return int(rig.json("inspectp" if sandbox else "inspect", cid)["info"]["pid"])


def test_a_pod_is_served_by_one_shim_until_its_last_container(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("grouped", rig.tmp)
    p = rig.runp(pcfg)
    a = rig.run(p, pcfg, container("a", command=["sleep", "3600"]))
    b = rig.run(p, pcfg, container("b", command=["sleep", "3600"]))
    shim = ppid(init_pid(rig, p, sandbox=True))
    assert is_shim(shim)
    assert [ppid(init_pid(rig, c)) for c in (a, b)] == [shim, shim]
    [sock] = group_sockets(rig)
    assert {address(rig, c) for c in (p, a, b)} == {f"unix://{rig.d.state}/tasks/.dockyard-shim/{sock}"}

    # A container removed: the shim stays and serves the others; a new one joins it.
    rig.ok("stop", "--timeout", "0", a)
    rig.ok("rm", a)
    rig.containers.remove(a)
    assert is_shim(shim)
    assert rig.ok("exec", "-s", b, "echo", "still served").strip() == "still served"
    c = rig.run(p, pcfg, container("c", command=["sleep", "3600"]))
    assert ppid(init_pid(rig, c)) == shim

    # Another pod gets a shim of its own.
    qcfg = pod("apart", rig.tmp)
    q = rig.runp(qcfg)
    other = ppid(init_pid(rig, q, sandbox=True))
    assert is_shim(other) and other != shim and len(group_sockets(rig)) == 2

    # The pod's sandbox stopped and removed with its containers: the shim goes with the last.
    rig.ok("stopp", p)
    assert is_shim(shim)  # stopped containers keep their exit status in it
    rig.ok("rmp", p)
    rig.pods.remove(p)
    wait_until(lambda: not is_shim(shim), what="the pod's shim to exit")
    assert is_shim(other) and len(group_sockets(rig)) == 1


def test_a_dead_pod_shim_ends_every_container_of_the_pod(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("shimless", rig.tmp)
    p = rig.runp(pcfg)
    cids = [rig.run(p, pcfg, container(n, command=["sleep", "3600"])) for n in ("a", "b")]
    pids = [init_pid(rig, c) for c in cids]
    shim = ppid(pids[0])
    os.kill(shim, signal.SIGKILL)
    wait_until(lambda: all(rig.state(c) == "CONTAINER_EXITED" for c in cids), what="the containers reported exited")
    wait_until(lambda: rig.json("inspectp", p)["status"]["state"] == "SANDBOX_NOTREADY",
               what="the sandbox reported not ready")
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), what="the containers' inits gone")


def test_a_pod_shim_outlives_a_daemon_kill(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("kept", rig.tmp)
    p = rig.runp(pcfg)
    a = rig.run(p, pcfg, container("a", command=["sleep", "3600"]))
    b = rig.run(p, pcfg, container("b", command=["sh", "-c", "exit 3"]))
    wait_until(lambda: rig.state(b) == "CONTAINER_EXITED", what="b to exit")
    shim = ppid(init_pid(rig, a))
    assert rig.d.stop(9) in (0, -9)
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    assert {c["id"]: c["state"] for c in rig.json("ps", "-a")["containers"]} == {
        a: "CONTAINER_RUNNING", b: "CONTAINER_EXITED"}
    assert rig.status(b)["exitCode"] == 3
    assert rig.ok("exec", "-s", a, "echo", "reconnected").strip() == "reconnected"
    rig.ok("rm", b)
    rig.containers.remove(b)
    assert is_shim(shim)
    rig.ok("rmp", "-f", p)
    rig.pods.remove(p)
    wait_until(lambda: not is_shim(shim), what="the pod's shim to exit")
