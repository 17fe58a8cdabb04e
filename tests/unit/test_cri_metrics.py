"""supervisor/cri/metrics.py's pure parts: the shims' cgroup metrics (v1 and v2) in cadvisor's
terms, and every metric made agreeing with its descriptor (the host runs one cgroup version only,
so both are fed here)."""

from __future__ import annotations

import os

from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1pb
from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as v2pb
from dockyard_common.types import AnyValue
from supervisor.cri.container_types import ContainerConfig, ContainerMetadata, ContainerState, CriContainer
from supervisor.cri.metrics import (
    BASE_KEYS,
    BY_NAME,
    DESCRIPTORS,
    Filesystem,
    MetricKind,
    cgroup_of,
    metrics_of_container,
    read_procs,
)

GiB = 1 << 30
LABELS = ("web", "default", "app", "c1", "busybox:1")


def packed(message: v1pb.Metrics | v2pb.Metrics) -> AnyValue:
    return AnyValue(f"type.googleapis.com/{message.DESCRIPTOR.full_name}", message.SerializeToString())


def v1_metrics() -> v1pb.Metrics:
    m = v1pb.Metrics()
    m.cpu.usage.total, m.cpu.usage.user, m.cpu.usage.kernel = 3_900_000_000, 2_500_000_000, 1_400_000_000
    m.cpu.throttling.periods, m.cpu.throttling.throttled_periods, m.cpu.throttling.throttled_time = 50, 7, 2_000_000_000
    mem = m.memory
    mem.usage.usage, mem.usage.max, mem.usage.limit, mem.usage.failcnt = 100 << 20, 120 << 20, 9223372036854771712, 2
    mem.swap.usage, mem.swap.limit = (100 << 20) + (5 << 20), 9223372036854771712  # memory+swap
    mem.total_inactive_file, mem.total_rss = 30 << 20, 60 << 20
    mem.total_cache, mem.total_mapped_file = 40 << 20, 1 << 20
    mem.kernel.usage, mem.pg_fault, mem.total_pg_fault, mem.pg_maj_fault, mem.total_pg_maj_fault = 4096, 10, 11, 1, 2
    m.memory_oom_control.oom_kill = 1
    m.pids.current, m.pids.limit = 3, 0
    m.blkio.io_service_bytes_recursive.extend([v1pb.BlkIOEntry(op="Read", major=8, minor=0, value=4096),
                                               v1pb.BlkIOEntry(op="Write", major=8, minor=0, value=8192),
                                               v1pb.BlkIOEntry(op="Total", major=8, minor=0, value=12288)])
    m.blkio.io_serviced_recursive.extend([v1pb.BlkIOEntry(op="Read", major=8, minor=0, value=1)])
    m.hugetlb.extend([v1pb.HugetlbStat(pagesize="2MB", usage=2 << 20, max=4 << 20)])
    return m


def test_v1_metrics_in_cadvisor_terms() -> None:
    g = cgroup_of(packed(v1_metrics()))
    assert g is not None
    assert (g.cpu_ns, g.user_ns, g.system_ns, g.throttled_ns) == (3_900_000_000, 2_500_000_000, 1_400_000_000,
                                                                  2_000_000_000)
    assert (g.usage, g.max_usage, g.working_set, g.swap) == (100 << 20, 120 << 20, 70 << 20, 5 << 20)
    assert g.swap_limit == 0 and g.pids_limit == 0  # no limit
    assert g.faults == {("pgfault", "container"): 10, ("pgfault", "hierarchy"): 11,
                        ("pgmajfault", "container"): 1, ("pgmajfault", "hierarchy"): 2}
    assert g.io == {(8, 0): {"read_bytes": 4096, "write_bytes": 8192, "read_ios": 1}}
    assert g.hugetlb == {"2MB": (2 << 20, 4 << 20)}


def test_v2_metrics_in_cadvisor_terms() -> None:
    m = v2pb.Metrics()
    m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec, m.cpu.throttled_usec = 2_500_000, 2_000_000, 500_000, 10
    m.memory.usage, m.memory.usage_limit = 50 << 20, 2**64 - 1
    m.memory.inactive_file, m.memory.anon = 10 << 20, 30 << 20
    m.memory.kernel_stack, m.memory.slab, m.memory.sock, m.memory.swap_usage, m.memory.swap_limit = 1, 2, 3, 7, 64 << 20
    m.memory.pgfault, m.memory_events.max, m.memory_events.oom_kill = 9, 4, 1
    m.pids.current, m.pids.limit = 2, 100
    m.io.usage.extend([v2pb.IOEntry(major=259, minor=0, rbytes=1, wbytes=2, rios=3, wios=4)])
    g = cgroup_of(packed(m))
    assert g is not None
    assert (g.cpu_ns, g.user_ns, g.system_ns) == (2_500_000_000, 2_000_000_000, 500_000_000)
    assert (g.working_set, g.rss, g.kernel, g.swap, g.swap_limit, g.failcnt) == (40 << 20, 30 << 20, 6, 7, 64 << 20, 4)
    assert g.faults[("pgfault", "container")] == g.faults[("pgfault", "hierarchy")] == 9
    assert (g.pids, g.pids_limit, g.oom_kills) == (2, 100, 1)
    assert g.io == {(259, 0): {"read_bytes": 1, "write_bytes": 2, "read_ios": 3, "write_ios": 4}}


def test_another_type_is_not_read() -> None:
    assert cgroup_of(AnyValue("type.googleapis.com/example.Other", b"")) is None


def test_descriptors_are_unique_and_start_with_the_base_keys() -> None:
    assert len(BY_NAME) == len(DESCRIPTORS)
    for d in DESCRIPTORS:
        assert d.help and d.label_keys[:5] == BASE_KEYS and len(set(d.label_keys)) == len(d.label_keys)
        # Prometheus' naming: a counter ends in _total (failcnt is cadvisor's old name); inodes_total is a size.
        counter = d.name.endswith(("_total", "_failcnt")) and d.name != "container_fs_inodes_total"
        assert (d.kind == MetricKind.COUNTER) == counter, d.name


def test_every_metric_agrees_with_its_descriptor() -> None:
    c = CriContainer("c1", "p1", ContainerConfig(ContainerMetadata("app"), "busybox:1"), ContainerState.RUNNING,
                     created_at_ns=1, image="docker.io/library/busybox:1", image_id="sha256:x",
                     started_at_ns=1_700_000_000_900_000_000, pid=os.getpid())
    procs = read_procs([os.getpid()], os.getpid())
    resources = {"cpu": {"period": 100000, "quota": 20000, "shares": 512}, "memory": {"limit": 64 << 20}}
    out = metrics_of_container(LABELS, c, cgroup_of(packed(v1_metrics())), procs, resources,
                             Filesystem("/var/lib/snapshots", 10 * GiB, 1000, 900), 8 << 20)
    for m in out:
        d = BY_NAME[m.name]
        assert m.kind == d.kind and len(m.label_values) == len(d.label_keys) and m.label_values[:5] == LABELS
    values = {(m.name, m.label_values[5:]): m.value for m in out}
    assert values[("container_cpu_usage_seconds_total", ())] == 3  # whole seconds
    assert values[("container_start_time_seconds", ())] == 1_700_000_000
    assert values[("container_spec_cpu_quota", ())] == 20000
    assert values[("container_spec_memory_limit_bytes", ())] == 64 << 20
    assert values[("container_spec_memory_reservation_limit_bytes", ())] == 0  # not set
    assert values[("container_fs_usage_bytes", ("/var/lib/snapshots",))] == 8 << 20
    assert values[("container_blkio_device_usage_total", ("8:0", "8", "0", "Write"))] == 8192
    assert values[("container_hugetlb_usage_bytes", ("2MB",))] == 2 << 20
    assert values[("container_processes", ())] == 1 and values[("container_file_descriptors", ())] >= 3
    assert values[("container_threads", ())] >= 1
    assert not any("network" in m.name for m in out)  # the network is the pod's, not a container's


def test_without_a_cgroup_reading_the_rest_is_still_given() -> None:
    c = CriContainer("c1", "p1", ContainerConfig(ContainerMetadata("app"), "busybox:1"), ContainerState.RUNNING,
                     created_at_ns=1, image="busybox:1", image_id="sha256:x")
    out = metrics_of_container(LABELS, c, None, read_procs([], 0), {}, None, None)
    assert "container_cpu_usage_seconds_total" not in {m.name for m in out}
    assert {"container_last_seen", "container_processes", "container_spec_memory_limit_bytes"} <= {m.name for m in out}
