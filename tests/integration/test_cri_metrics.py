"""CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics) on
dockyardd: cadvisor's container_* series for running containers and their pod's network, every
metric with its descriptor's labels, and a shim that does not answer left out, not waited for.

One daemon for the module (tests/integration/test_cri_containers.py's cri_rig), in a network
namespace of its own, with the pause look-alike and busybox imported into `k8s.io`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from tests.daemon import in_netns
from tests.images import Image, build_image, tar_tree
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod
from tests.integration.test_cri_sandbox import pod_config
from tests.waiting import wait_until

pytestmark = pytest.mark.root

BASE_KEYS = ["pod", "namespace", "container", "id", "image"]
# Every series critest (cri-tools' pod.go) expects of a runtime on this host (cgroup v1 or v2; no
# pressure stall information in the shims' metrics, no hugetlb controller needed).
EXPECTED = {
    "container_cpu_usage_seconds_total", "container_cpu_user_seconds_total", "container_cpu_system_seconds_total",
    "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total", "container_memory_usage_bytes",
    "container_memory_working_set_bytes", "container_memory_rss", "container_memory_cache",
    "container_memory_max_usage_bytes", "container_memory_kernel_usage", "container_memory_mapped_file",
    "container_memory_swap", "container_memory_failcnt", "container_memory_failures_total",
    "container_oom_events_total", "container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes",
    "container_spec_cpu_period", "container_spec_cpu_quota", "container_spec_cpu_shares",
    "container_fs_usage_bytes", "container_fs_limit_bytes", "container_fs_inodes_total", "container_fs_inodes_free",
    "container_last_seen", "container_start_time_seconds", "container_processes", "container_threads",
    "container_threads_max", "container_file_descriptors", "container_sockets", "container_ulimits_soft",
    *(f"container_network_{d}_{what}_total" for d in ("receive", "transmit")
      for what in ("bytes", "packets", "packets_dropped", "errors")),
}


def _images(root: Path) -> list[Image]:
    return [build_image(BUSYBOX, [tar_tree(root)])]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    # A shim per pod: the stuck-shim tests stop one pod's shim and expect the other pod listed.
    with cri_rig(CriRig, "dy-crim-", _images, config="[cri]\npods_per_shim = 1\n") as r:
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    rig.remove_pods()


def call(rig: CriRig, method: str, request: Any, timeout: float = 60) -> Any:
    async def go() -> Any:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            if method == "StreamPodSandboxMetrics":
                return [r async for r in stub.StreamPodSandboxMetrics(request, timeout=timeout)]
            return await getattr(stub, method)(request, timeout=timeout)
    return asyncio.run(go())


def descriptors(rig: CriRig) -> dict[str, list[str]]:
    found = call(rig, "ListMetricDescriptors", api_pb2.ListMetricDescriptorsRequest()).descriptors
    names = [d.name for d in found]
    assert len(names) == len(set(names)), names
    for d in found:
        assert d.help and list(d.label_keys)[:5] == BASE_KEYS, d
    return {d.name: list(d.label_keys) for d in found}


def pod_metrics(rig: CriRig) -> dict[str, api_pb2.PodSandboxMetrics]:
    found = call(rig, "ListPodSandboxMetrics", api_pb2.ListPodSandboxMetricsRequest()).pod_metrics
    return {p.pod_sandbox_id: p for p in found}


def by_name(metrics: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for m in metrics:
        out.setdefault(m.name, []).append(m)
    return out


def one(metrics: dict[str, list[Any]], name: str) -> int:
    assert len(metrics[name]) == 1, metrics[name]
    return int(metrics[name][0].value.value)


def assert_agree(keys: dict[str, list[str]], metrics: Any) -> None:
    """Each metric names a descriptor and gives a value for each of its label keys."""
    for m in metrics:
        assert m.name in keys, m.name
        assert len(m.label_values) == len(keys[m.name]), (m.name, list(m.label_values), keys[m.name])
        assert m.timestamp == 0  # gathered live


def test_metrics_of_a_pod_and_its_containers(clean: CriRig) -> None:
    rig = clean
    keys = descriptors(rig)
    assert EXPECTED <= set(keys), EXPECTED - set(keys)

    pcfg = pod("metered", rig.tmp)
    p = rig.runp(pcfg)
    resources = {"cpu_period": 100000, "cpu_quota": 20000, "cpu_shares": 512, "memory_limit_in_bytes": 64 << 20}
    busy = rig.run(p, pcfg, container("busy", linux={"resources": resources}, command=[
        "sh", "-c", "dd if=/dev/zero of=/tmp/blob bs=1M count=8; /bin/busybox httpd -f -p 8080 -h /tmp & "
                    "while :; do :; done"]))
    idle = rig.create(p, pcfg, container("idle", command=["true"]))  # never started: no cgroup, not measured
    host = rig.runp(pod_config("hostnet", linux={"security_context": {"namespace_options": {"network": 2}}}))
    wait_until(lambda: rig.ok("exec", "-s", busy, "ls", "/tmp").split() == ["blob"], what="the blob")

    def busy_metrics() -> dict[str, list[Any]]:
        (measured,) = pod_metrics(rig)[p].container_metrics
        assert measured.container_id == busy
        return by_name(measured.metrics)

    def warmed_up() -> bool:  # a CPU second under the 20% quota: about 5 s
        m = busy_metrics()
        return one(m, "container_cpu_usage_seconds_total") >= 1 and one(m, "container_sockets") >= 1

    wait_until(warmed_up, timeout=90, interval=0.5, what="a second of CPU time and httpd's socket")
    found = pod_metrics(rig)
    assert {p, host} <= set(found)
    metered = found[p]
    assert [c.container_id for c in metered.container_metrics] == [busy] and idle != busy
    all_metrics = [*metered.metrics, *metered.container_metrics[0].metrics]
    assert_agree(keys, all_metrics)
    assert EXPECTED <= {m.name for m in all_metrics}, EXPECTED - {m.name for m in all_metrics}

    m = busy_metrics()
    labels = ["metered", "default", "busy", busy, BUSYBOX]
    assert list(m["container_memory_usage_bytes"][0].label_values) == labels
    assert m["container_cpu_usage_seconds_total"][0].metric_type == api_pb2.COUNTER
    assert m["container_memory_usage_bytes"][0].metric_type == api_pb2.GAUGE
    assert one(m, "container_spec_memory_limit_bytes") == 64 << 20
    assert (one(m, "container_spec_cpu_quota"), one(m, "container_spec_cpu_period"),
            one(m, "container_spec_cpu_shares")) == (20000, 100000, 512)
    assert one(m, "container_cpu_cfs_periods_total") > 0  # a quota: CFS periods elapse
    assert 0 < one(m, "container_memory_working_set_bytes") <= one(m, "container_memory_usage_bytes") <= 64 << 20
    assert one(m, "container_memory_rss") > 0
    assert one(m, "container_processes") == 2 and one(m, "container_threads") >= 2  # sh and httpd
    assert one(m, "container_file_descriptors") >= 6  # each one's stdio, httpd's socket
    (fs_usage,) = m["container_fs_usage_bytes"]
    assert int(fs_usage.value.value) >= 8 << 20 and fs_usage.label_values[-1]  # the blob; a device
    assert one(m, "container_fs_limit_bytes") > int(fs_usage.value.value)
    assert abs(one(m, "container_last_seen") - time.time()) < 120
    status = call(rig, "ContainerStatus", api_pb2.ContainerStatusRequest(container_id=busy)).status
    started = status.started_at // 1_000_000_000
    assert one(m, "container_start_time_seconds") == started
    assert {tuple(x.label_values[-2:]) for x in m["container_memory_failures_total"]} == {
        ("pgfault", "container"), ("pgfault", "hierarchy"), ("pgmajfault", "container"), ("pgmajfault", "hierarchy")}
    assert [tuple(x.label_values[-1:]) for x in m["container_ulimits_soft"]] == [("max_open_files",)]

    # The pod's own metrics: its network, read in its namespace (a ping from outside is received).
    def received() -> int:
        net = by_name(pod_metrics(rig)[p].metrics)
        assert {tuple(x.label_values) for x in net["container_network_receive_packets_total"]} == {
            ("metered", "default", "", p, "", "eth0")}
        return one(net, "container_network_receive_packets_total")

    before = received()
    ip = rig.inspect(p)["status"]["network"]["ip"]
    in_netns(rig.netns, "/bin/busybox", "ping", "-c", "3", "-W", "5", ip)  # the host may lack ping
    assert received() >= before + 3
    assert found[host].metrics == [] and found[host].container_metrics == []  # the host's network is not its own

    streamed = call(rig, "StreamPodSandboxMetrics", api_pb2.StreamPodSandboxMetricsRequest())
    assert {x.pod_sandbox_id for r in streamed for x in r.pod_sandbox_metrics} == set(pod_metrics(rig))


def shim_of(pid: int) -> int:
    """The shim process of a container's init (its parent)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent of {pid}")


def test_a_stuck_shim_is_left_out(clean: CriRig) -> None:
    rig = clean
    cfg_a, cfg_b = pod("stuck", rig.tmp), pod("fine", rig.tmp)
    a, b = rig.runp(cfg_a), rig.runp(cfg_b)
    stuck = rig.run(a, cfg_a, container("sleeper", command=["sleep", "3600"]))
    fine = rig.run(b, cfg_b, container("sleeper", command=["sleep", "3600"]))
    shim = shim_of(int(rig.json("inspect", stuck)["info"]["pid"]))
    assert shim != shim_of(int(rig.json("inspect", fine)["info"]["pid"])), "the pods share a shim"
    os.kill(shim, signal.SIGSTOP)
    try:
        found = pod_metrics(rig)
    finally:
        os.kill(shim, signal.SIGCONT)
    assert [c.container_id for c in found[b].container_metrics] == [fine]
    assert found[a].container_metrics == [] and found[a].metrics  # its network is read without the shim
    wait_until(lambda: [c.container_id for c in pod_metrics(rig)[a].container_metrics] == [stuck],
               interval=0.2, what="the shim to answer again")
