"""PodSandboxStats messages from pod usage: what could not be read stays unset (kubelet then
knows it has no number), eth0 is the default interface, the others are listed beside it."""

from __future__ import annotations

from supervisor.cri.podstats import PodUsage
from supervisor.cri.sandbox_types import PodConfig, PodMetadata, Sandbox, SandboxState
from supervisor.network.counters import Counters
from supervisor.services.cri_podstats_pb import pod_stats_pb


def sandbox() -> Sandbox:
    config = PodConfig(PodMetadata(name="web", uid="u1", namespace="default", attempt=1), labels={"app": "web"},
                       annotations={"note": "x"})
    return Sandbox("p" * 64, config, SandboxState.READY, 1, pid=42)


def counters(n: int) -> Counters:
    return Counters(rx_bytes=n, rx_packets=1, rx_errors=2, rx_dropped=0, tx_bytes=n * 2, tx_packets=1,
                    tx_errors=3, tx_dropped=0)


def test_everything_read() -> None:
    u = PodUsage(sandbox(), 1000, cpu_usage_ns=5, memory_working_set=6, memory_usage=7, memory_rss=8,
                 process_count=3, interfaces={"net1": counters(10), "eth0": counters(20)})
    msg = pod_stats_pb(u)
    assert msg.attributes.id == "p" * 64 and msg.attributes.metadata.name == "web"
    assert dict(msg.attributes.labels) == {"app": "web"} and dict(msg.attributes.annotations) == {"note": "x"}
    linux = msg.linux
    assert (linux.cpu.timestamp, linux.cpu.usage_core_nano_seconds.value) == (1000, 5)
    assert (linux.memory.working_set_bytes.value, linux.memory.usage_bytes.value, linux.memory.rss_bytes.value) \
        == (6, 7, 8)
    assert linux.process.process_count.value == 3
    assert linux.network.default_interface.name == "eth0" and linux.network.default_interface.rx_bytes.value == 20
    assert [(i.name, i.tx_bytes.value, i.tx_errors.value) for i in linux.network.interfaces] == [("net1", 20, 3)]


def test_nothing_read_leaves_fields_unset() -> None:
    linux = pod_stats_pb(PodUsage(sandbox(), 1000)).linux
    for name in ("cpu", "memory", "process", "network"):
        assert not linux.HasField(name), name
    assert list(linux.containers) == []
    # a pod whose namespace has no eth0: the first interface by name is the default
    linux = pod_stats_pb(PodUsage(sandbox(), 1, interfaces={"b0": counters(1), "a0": counters(2)})).linux
    assert linux.network.default_interface.name == "a0" and [i.name for i in linux.network.interfaces] == ["b0"]
