"""A stuck shim does not stall the CRI stats listings (issue 18's rule): ListContainerStats and
ListPodSandboxStats answer without the container whose shim is stopped (SIGSTOP, by PID, as
test_cri_metrics.py does), ContainerStats of it is DEADLINE_EXCEEDED, and once the shim is
continued it is measured again.

One daemon for the module (tests/integration/test_cri_containers.py's cri_rig), in a network
namespace of its own, with the pause look-alike and busybox imported into `k8s.io`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2
from tests.images import Image, build_image, tar_tree
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod
from tests.integration.test_cri_metrics import call, shim_of
from tests.waiting import wait_until

pytestmark = pytest.mark.root

CALL_BOUND = 30  # seconds a listing may take before the test calls it stalled (the shims' deadline is 5 s)


def _images(root: Path) -> list[Image]:
    return [build_image(BUSYBOX, [tar_tree(root)])]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    # A shim per pod: the test stops one pod's shim and expects the other pod's stats.
    with cri_rig(CriRig, "dy-cristd-", _images, config="[cri]\npods_per_shim = 1\n") as r:
        yield r


def container_stats(rig: CriRig) -> list[str]:
    found = call(rig, "ListContainerStats", api_pb2.ListContainerStatsRequest(), CALL_BOUND).stats
    return sorted(s.attributes.id for s in found)


def pod_stats(rig: CriRig) -> dict[str, list[str]]:
    """Each listed pod's id -> the ids of the containers in its stats."""
    found = call(rig, "ListPodSandboxStats", api_pb2.ListPodSandboxStatsRequest(), CALL_BOUND).stats
    return {s.attributes.id: [c.attributes.id for c in s.linux.containers] for s in found}


def test_a_stuck_shim_is_left_out_of_the_stats(rig: CriRig) -> None:
    cfg_a, cfg_b = pod("stuck", rig.tmp), pod("fine", rig.tmp)
    a, b = rig.runp(cfg_a), rig.runp(cfg_b)
    stuck = rig.run(a, cfg_a, container("sleeper", command=["sleep", "3600"]))
    fine = rig.run(b, cfg_b, container("sleeper", command=["sleep", "3600"]))
    shim = shim_of(int(rig.json("inspect", stuck)["info"]["pid"]))
    assert shim != shim_of(int(rig.json("inspect", fine)["info"]["pid"])), "the pods share a shim"
    # Both listed while every shim answers (this also leaves the tasks' states freshly read, so
    # the stuck container is still listed as running and its shim is asked for its stats).
    assert container_stats(rig) == sorted([stuck, fine])
    os.kill(shim, signal.SIGSTOP)
    try:
        assert container_stats(rig) == [fine]
        assert pod_stats(rig) == {a: [], b: [fine]}
        assert call(rig, "ContainerStats", api_pb2.ContainerStatsRequest(container_id=fine),
                    CALL_BOUND).stats.attributes.id == fine
        with pytest.raises(grpc.aio.AioRpcError) as err:
            call(rig, "ContainerStats", api_pb2.ContainerStatsRequest(container_id=stuck), CALL_BOUND)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
        details = err.value.details() or ""
        assert stuck in details and "did not answer" in details and "Traceback" not in details, details
    finally:
        os.kill(shim, signal.SIGCONT)
    wait_until(lambda: container_stats(rig) == sorted([stuck, fine]), interval=0.2,
               what="the shim to answer again")
    assert pod_stats(rig) == {a: [stuck], b: [fine]}
    for p in (a, b):
        rig.ok("rmp", "-f", p)
        rig.pods.remove(p)
    rig.containers.clear()
