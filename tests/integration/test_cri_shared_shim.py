"""Pods sharing shims (`[cri] pods_per_shim`, supervisor/cri/shimgroups.py): a new pod joins the
first shim with room, its containers join its pod's shim, a shim exits with the last container of
its last pod, a daemon killed and restarted keeps filling the same shims, and a pod removed while
another joins its shim loses neither (the daemon's ShimGate).

Driven by the real `crictl` against a daemon (two pods a shim) in a network namespace of its own.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Iterator

import pytest

from tests.daemon import start_daemon
from tests.integration.test_cri_containers import CriRig, _images, container, cri_rig, pod, removed_all
from tests.integration.test_cri_pod_shim import group_sockets, init_pid, is_shim, ppid
from tests.waiting import wait_until

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-crishare-", _images, config="[cri]\npods_per_shim = 2\n") as r:
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    removed_all(rig)


def shim_of(rig: CriRig, pod_id: str) -> int:
    shim = ppid(init_pid(rig, pod_id, sandbox=True))
    assert is_shim(shim)
    return shim


def remove_pod(rig: CriRig, pod_id: str) -> None:
    rig.ok("rmp", "-f", pod_id)
    rig.pods.remove(pod_id)


def test_pods_fill_shims_two_at_a_time(clean: CriRig) -> None:
    rig = clean
    cfgs = [pod(f"share{i}", rig.tmp) for i in range(3)]
    p0, p1, p2 = (rig.runp(c) for c in cfgs)
    first, third = shim_of(rig, p0), shim_of(rig, p2)
    assert shim_of(rig, p1) == first and third != first
    assert len(group_sockets(rig)) == 2
    # A pod's containers join its pod's shim.
    a = rig.run(p1, cfgs[1], container("a", command=["sleep", "3600"]))
    assert ppid(init_pid(rig, a)) == first
    assert rig.ok("exec", "-s", a, "echo", "served").strip() == "served"

    # A pod removed: its shim stays for the other pod, and the next pod takes the free place.
    remove_pod(rig, p0)
    assert is_shim(first) and rig.ok("exec", "-s", a, "echo", "still").strip() == "still"
    p3 = rig.runp(pod("share3", rig.tmp))
    assert shim_of(rig, p3) == first

    # The shim goes with the last container of its last pod; the other shim is untouched.
    remove_pod(rig, p1)
    assert is_shim(first)
    remove_pod(rig, p3)
    wait_until(lambda: not is_shim(first), what="the shared shim to exit with its last pod")
    assert is_shim(third) and len(group_sockets(rig)) == 1


def test_a_shared_shim_still_logs_after_the_pod_it_was_started_for_goes(clean: CriRig) -> None:
    """A shim writes its log into the FIFO of the bundle it was started for, which the daemon
    reads into its own log; when that container goes, the log moves to another container's."""
    rig = clean
    first = rig.runp(pod("logfirst", rig.tmp))
    cfg = pod("loglater", rig.tmp)
    later = rig.runp(cfg)
    assert shim_of(rig, later) == shim_of(rig, first)
    remove_pod(rig, first)
    cid = rig.run(later, cfg, container("a", command=["sleep", "3600"]))
    wait_until(lambda: f"container {cid}: created" in rig.d.log(), what="the shim's line in the daemon's log")


def test_a_restarted_daemon_fills_the_shims_it_had(clean: CriRig) -> None:
    rig = clean
    p0 = rig.runp(pod("kept0", rig.tmp))
    shim = shim_of(rig, p0)
    assert rig.d.stop(9) in (0, -9)
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    p1 = rig.runp(pod("kept1", rig.tmp))
    assert shim_of(rig, p1) == shim
    p2 = rig.runp(pod("kept2", rig.tmp))
    assert shim_of(rig, p2) != shim


def test_a_dead_shared_shim_ends_its_pods_and_the_next_pod_gets_a_new_one(clean: CriRig) -> None:
    """The price of sharing: a shim killed takes both of its pods' containers with it (reported
    exited, the sandboxes not ready); a pod started after it gets a new shim in its place."""
    rig = clean
    cfgs = [pod(f"fate{i}", rig.tmp) for i in range(2)]
    pods = [rig.runp(c) for c in cfgs]
    cids = [rig.run(p, c, container("a", command=["sleep", "3600"])) for p, c in zip(pods, cfgs, strict=True)]
    shim = shim_of(rig, pods[0])
    assert shim_of(rig, pods[1]) == shim
    os.kill(shim, signal.SIGKILL)
    wait_until(lambda: all(rig.state(c) == "CONTAINER_EXITED" for c in cids), what="the containers reported exited")
    wait_until(lambda: all(rig.json("inspectp", p)["status"]["state"] == "SANDBOX_NOTREADY" for p in pods),
               what="both sandboxes reported not ready")
    # Both pods still hold their places in the group until removed: the next pod starts a new
    # group's shim; once they are removed, group 0 is started afresh.
    later = rig.runp(pod("fate2", rig.tmp))
    assert shim_of(rig, later) != shim
    for p in pods:
        remove_pod(rig, p)
    again_cfg = pod("fate3", rig.tmp)
    again = rig.runp(again_cfg)
    assert shim_of(rig, again) not in (shim, shim_of(rig, later))
    b = rig.run(again, again_cfg, container("b", command=["sleep", "3600"]))
    assert rig.ok("exec", "-s", b, "echo", "new shim").strip() == "new shim"


def test_a_pod_leaving_while_another_joins_loses_neither(clean: CriRig) -> None:
    """The last pod of a shim removed while a new pod starts in the same group: the new pod's
    start must not join the shim on its way out (it runs, in the old shim or a new one), and the
    old pod goes. Repeated, as each round is a race."""
    rig = clean
    rounds = 8
    old = rig.runp(pod("churn-a0", rig.tmp))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            # Two pods of one shim (group 0): the old one and a filler, removed first so that
            # the old pod is the shim's last when the race starts.
            filler = rig.runp(pod(f"churn-f{i}", rig.tmp))
            remove_pod(rig, filler)
            cfg = pod(f"churn-a{i + 1}", rig.tmp)
            leaving = pool.submit(remove_pod, rig, old)
            joining = pool.submit(rig.runp, cfg)
            leaving.result()
            new = joining.result()
            assert rig.json("inspectp", new)["status"]["state"] == "SANDBOX_READY"
            shim_of(rig, new)
            c = rig.run(new, cfg, container("c", command=["sleep", "3600"]))
            assert rig.ok("exec", "-s", c, "echo", "joined").strip() == "joined"
            old = new
    wait_until(lambda: len(group_sockets(rig)) == 1, what="one shim left for the one pod left")
