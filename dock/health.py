"""A container's health as the daemon's health monitor keeps it on the record (the label
`dockyard.health.status`, the extension `dockyard.health`: dockyard_common/healthcheck.py), in
Docker's shapes: `State.Health` and `Config.Healthcheck` of inspect, the status `ps` shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import DecodeError

from dockyard_api.dockyard.containers.v1 import health_pb2
from dockyard_common import healthcheck as hc
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import Container


def status_of(c: Container) -> str:
    """starting, healthy, unhealthy; "none" for a container without a check or never started."""
    if hc.CONFIG_LABEL not in c.labels:
        return hc.NONE
    status = c.labels.get(hc.STATUS_LABEL, "")
    return status if status in hc.STATUSES else hc.NONE


def _time(ts: Any) -> str:
    """RFC 3339 with nanoseconds, as Go's time.Time marshals."""
    ns = ts.ToNanoseconds()
    when = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    frac = f".{ns % 1_000_000_000:09d}".rstrip("0").rstrip(".")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def state_json(c: Container) -> dict[str, Any] | None:
    """Docker's State.Health: {"Status", "FailingStreak", "Log": [{"Start", "End", "ExitCode",
    "Output"}]}; None when the container has no check or it never ran."""
    ext = c.extensions.get(hc.EXTENSION)
    if hc.CONFIG_LABEL not in c.labels or ext is None or ext.type_url != hc.TYPE_URL:
        return None
    try:
        msg = health_pb2.Health.FromString(ext.value)
    except DecodeError:
        return None
    return {"Status": msg.status, "FailingStreak": msg.failing_streak,
            "Log": [{"Start": _time(r.start), "End": _time(r.end), "ExitCode": r.exit_code, "Output": r.output}
                    for r in msg.log]}


def config_json(c: Container) -> dict[str, Any] | None:
    """Docker's Config.Healthcheck of the check the container runs."""
    try:
        check = hc.of_labels(c.labels)
    except InvalidArgument:
        return None
    return check.to_json() if check is not None else None
