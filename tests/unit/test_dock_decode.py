"""The SDK's decoding of what the Tasks and Events services send: metrics, events, and CLI helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from dock.commands.events import as_json, as_line
from dock.commands.tasks import flatten, parse_signal
from dock.events import Envelope, decode_event
from dock.tasks import METRICS_V1_TYPE_URL, METRICS_V2_TYPE_URL, decode_metrics, message_dict
from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1
from dockyard_api.containerd.cgroups.v2.stats import metrics_pb2 as v2
from dockyard_api.containerd.events import container_pb2, task_pb2
from dockyard_common.errors import InvalidArgument


def test_v1_metrics_keep_64_bit_numbers_as_numbers() -> None:
    msg = v1.Metrics(pids=v1.PidsStat(current=3, limit=20),
                     memory=v1.MemoryStat(usage=v1.MemoryEntry(usage=2**40, limit=2**63)),
                     cpu=v1.CPUStat(usage=v1.CPUUsage(total=5, per_cpu=[2, 3])))
    data = decode_metrics(METRICS_V1_TYPE_URL, msg.SerializeToString())
    assert data["pids"] == {"current": 3, "limit": 20}
    assert data["memory"]["usage"] == {"usage": 2**40, "limit": 2**63}
    assert data["cpu"]["usage"]["per_cpu"] == [2, 3]


def test_v2_metrics() -> None:
    msg = v2.Metrics(pids=v2.PidsStat(current=1), memory=v2.MemoryStat(usage=4096))
    data = decode_metrics("type.googleapis.com/" + METRICS_V2_TYPE_URL, msg.SerializeToString())
    assert data == {"pids": {"current": 1}, "memory": {"usage": 4096}}


def test_other_metric_types_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="cannot convert metric data"):
        decode_metrics("example.Stats", b"")


def test_message_dict_timestamps_maps_and_bytes() -> None:
    created = container_pb2.ContainerCreate(id="web", image="busybox",
                                            runtime=container_pb2.ContainerCreate.Runtime(name="rt"))
    created.runtime.options.type_url = "containerd.runc.v1.Options"
    created.runtime.options.value = b"\x01\x02"
    assert message_dict(created) == {"id": "web", "image": "busybox",
                                     "runtime": {"name": "rt", "options": {"type_url": "containerd.runc.v1.Options",
                                                                           "value": "AQI="}}}
    stamp = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    exit_ = task_pb2.TaskExit(container_id="web", id="web", pid=7, exit_status=3, exited_at=stamp)
    assert message_dict(exit_)["exited_at"] == "2023-11-14T22:13:20+00:00"


def test_decode_event_known_and_unknown() -> None:
    data, ok = decode_event("containerd.events.TaskStart", task_pb2.TaskStart(container_id="a", pid=9)
                            .SerializeToString())
    assert ok and data == {"container_id": "a", "pid": 9}
    assert decode_event("containerd.services.images.v1.ImageCreate", b"\n\x01x") == ({"name": "x"}, True)
    assert decode_event("example.Future", b"\x01") == ({}, False)
    assert decode_event("containerd.events.TaskStart", b"\xff\xff") == ({}, False)  # garbage is not fatal


def test_event_output_forms() -> None:
    env = Envelope(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "default", "/tasks/start",
                   "containerd.events.TaskStart", {"container_id": "a", "pid": 9})
    assert as_line(env) == '2024-01-02 03:04:05.000006 default /tasks/start {"container_id":"a","pid":9}'
    assert as_json(env) == {"timestamp": "2024-01-02T03:04:05.000006+00:00", "namespace": "default",
                            "topic": "/tasks/start", "type": "containerd.events.TaskStart",
                            "event": {"container_id": "a", "pid": 9}}
    unknown = Envelope(None, "ns", "/x", "example.Future", {}, decoded=False)
    assert as_line(unknown) == "- ns /x <example.Future>"


@pytest.mark.parametrize(("text", "want"), [("SIGKILL", 9), ("KILL", 9), ("kill", 9), ("9", 9), ("term", 15)])
def test_parse_signal(text: str, want: int) -> None:
    assert parse_signal(text) == want


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "999", ""])
def test_parse_signal_refuses(text: str) -> None:
    with pytest.raises(SystemExit, match="invalid signal"):
        parse_signal(text)


def test_flatten() -> None:
    assert flatten({"pids": {"current": 1}, "cpu": {"per_cpu": [4, 5]}}) == [
        ("pids.current", 1), ("cpu.per_cpu.0", 4), ("cpu.per_cpu.1", 5)]
