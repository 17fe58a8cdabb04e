"""What `dock ps` and `dock inspect` say about a container: its state in Docker's words, Docker's
time phrases ("Up 3 minutes", "Exited (137) 2 minutes ago"), and `--filter KEY=VALUE` matching.

A container's state comes from its task: none (or one not yet started) is "created", then
"running", "paused" or "exited" (a stopped task keeps its exit status until it is deleted).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dock import health as healthview
from dock.lookup import NAME_LABEL, name_of
from dock.tasks import Process
from dockyard_common import healthcheck as hc
from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import JsonError, json_value
from dockyard_common.reference import familiar, normalize_reference, parse
from dockyard_common.types import Container, Status

STATES = ("created", "running", "paused", "exited")
FILTER_KEYS = ("id", "name", "status", "label", "ancestor", "exited", "health")
COMMAND_WIDTH = 20  # `docker ps` cuts the command here unless --no-trunc


def human_duration(d: timedelta) -> str:
    """Docker's rough phrase for a span (go-units' HumanDuration): "About a minute", "3 hours"."""
    seconds = int(d.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(d.total_seconds() / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d.total_seconds() / 3600 / 24 / 365)} years"


def ago(when: datetime | None, now: datetime) -> str:
    """"5 minutes ago"; a time without a zone is UTC (the SDK's container records have none)."""
    if when is None:
        return "-"
    return f"{human_duration(now - (when if when.tzinfo else when.replace(tzinfo=UTC)))} ago"


# A foreground `dock run` deletes its task when the process exits (as `ctr run`), so nothing of
# containerd's remembers how it ended; Docker's `ps -a` says "Exited (N) ... ago". The run leaves
# "CODE@RFC3339" here; `with_last_exit` makes it a stopped task again for ps, inspect, df, prune.
LAST_EXIT_LABEL = "dockyard.last-exit"


def last_exit_label(code: int, at: datetime) -> str:
    return f"{code}@{at.astimezone(UTC).isoformat()}"


def with_last_exit(container: Container, task: Process | None) -> Process | None:
    """`task`, or, for a container without one, the exit its last foreground run left."""
    if task is not None:
        return task
    code, _, at = container.labels.get(LAST_EXIT_LABEL, "").partition("@")
    try:
        return Process(id=container.id, pid=0, status=Status.STOPPED, exit_status=int(code),
                       exited_at=datetime.fromisoformat(at))
    except ValueError:
        return None


def state_of(task: Process | None) -> str:
    """Docker's state word for a container whose task is `task` (None: it has none)."""
    if task is None or task.status == Status.CREATED:
        return "created"
    if task.status == Status.RUNNING:
        return "running"
    if task.status in (Status.PAUSED, Status.PAUSING):
        return "paused"
    if task.status == Status.STOPPED:
        return "exited"
    return "unknown"


def status_text(task: Process | None, started: datetime | None, now: datetime, health: str = "") -> str:
    """`docker ps`'s STATUS: "Up 3 minutes", "Up 2 hours (Paused)", "Exited (137) 2 minutes ago", "Created";
    a running container with a health check: "Up 3 minutes (healthy)", "Up 5 seconds (health: starting)"."""
    state = state_of(task)
    if task is None or state == "created":
        return "Created"
    if state == "exited":
        return f"Exited ({task.exit_status}) {ago(task.exited_at, now)}".rstrip(" -")
    if state in ("running", "paused"):
        up = f"Up {human_duration(now - started)}" if started else "Up"
        if state == "paused":
            return f"{up} (Paused)"
        if health in (hc.HEALTHY, hc.UNHEALTHY):
            return f"{up} ({health})"
        return f"{up} (health: starting)" if health == hc.STARTING else up
    return state.capitalize()


def command_of(container: Container) -> list[str]:
    """The init process' argv from the container's spec ([] when it has none we can read)."""
    if container.spec is None:
        return []
    with contextlib.suppress(JsonError):
        spec = json_value(container.spec.value, "spec")
        args = spec.get("process", {}).get("args") if isinstance(spec, dict) else None
        if isinstance(args, list) and all(isinstance(a, str) for a in args):
            return args
    return []


def command_text(args: Sequence[str], truncate: bool = True) -> str:
    """The COMMAND cell: the argv joined and quoted, cut to 20 characters with "…" as Docker cuts it."""
    text = " ".join(args)
    if truncate and len(text) > COMMAND_WIDTH:
        text = text[: COMMAND_WIDTH - 1] + "…"
    return json.dumps(text, ensure_ascii=False)


def image_text(image: str) -> str:
    """The image as people type it (`busybox:latest`, not docker.io/library/busybox:latest)."""
    try:
        return familiar(parse(image))
    except InvalidArgument:
        return image or "-"


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_started(pid: int) -> datetime | None:
    """When process `pid` started (field 22 of /proc/PID/stat, ticks after boot): the task API has no
    start time, and the daemon's unix socket means its pids are ours. None when we cannot tell."""
    boot = _boot_time()
    if pid <= 0 or boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        ticks = int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return datetime.fromtimestamp(boot + ticks / _CLOCK_TICKS, UTC)


# -- filters ---------------------------------------------------------------------------------------


@dataclass
class Filters:
    """`--filter KEY=VALUE` values by key: values of one key are alternatives (any may match), keys
    all have to match, as Docker reads them."""

    by_key: dict[str, list[str]]

    @classmethod
    def parse(cls, items: Sequence[str]) -> Filters:
        by_key: dict[str, list[str]] = {}
        for item in items:
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or key not in FILTER_KEYS:
                raise InvalidArgument(f"invalid filter {item!r}: want KEY=VALUE with KEY one of "
                                      f"{', '.join(FILTER_KEYS)}")
            if key == "status" and value not in STATES:
                raise InvalidArgument(f"invalid filter {item!r}: status is one of {', '.join(STATES)}")
            if key == "health" and value not in hc.STATUSES:
                raise InvalidArgument(f"invalid filter {item!r}: health is one of {', '.join(hc.STATUSES)}")
            if key == "exited" and not value.lstrip("-").isdigit():
                raise InvalidArgument(f"invalid filter {item!r}: exited wants an exit code (a number)")
            if key == "ancestor":
                try:
                    normalize_reference(value)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"invalid filter {item!r}: {exc}") from None
            by_key.setdefault(key, []).append(value)
        return cls(by_key)

    @property
    def wants_all(self) -> bool:
        """Filters on states other than running show the stopped ones without -a, as Docker's do."""
        return "exited" in self.by_key or any(s != "running" for s in self.by_key.get("status", []))

    def match(self, container: Container, task: Process | None) -> bool:
        return all(any(self._one(key, v, container, task) for v in values) for key, values in self.by_key.items())

    @staticmethod
    def _one(key: str, value: str, c: Container, task: Process | None) -> bool:
        if key == "id":
            return c.id.startswith(value)
        if key == "name":  # Docker matches a part of the name
            return value in (c.labels.get(NAME_LABEL) or c.id)
        if key == "status":
            return state_of(task) == value
        if key == "exited":
            return state_of(task) == "exited" and task is not None and task.exit_status == int(value)
        if key == "label":
            k, eq, v = value.partition("=")
            return k in c.labels and (not eq or c.labels[k] == v)
        if key == "ancestor":
            return _same_image(value, c.image)
        if key == "health":
            return healthview.status_of(c) == value
        raise AssertionError(key)


def _same_image(wanted: str, image: str) -> bool:
    """`ancestor=busybox` matches busybox:latest; `ancestor=busybox:1` only that tag."""
    ref = normalize_reference(wanted)
    if ref.digest:
        return image == str(ref) or image.endswith("@" + ref.digest)
    explicit_tag = ":" in wanted.rsplit("/", 1)[-1]
    return image == str(ref) or (not explicit_tag and image.startswith(ref.name + ":"))


def ps_json(c: Container, task: Process | None, ports: list[dict[str, Any]], started: datetime | None,
            now: datetime) -> dict[str, Any]:
    """One `dock ps --format json` object."""
    return {
        "id": c.id, "name": name_of(c), "image": c.image, "command": command_of(c),
        "created_at": c.created_at.isoformat() if c.created_at else None,
        "state": state_of(task), "status": status_text(task, started, now, healthview.status_of(c)),
        "health": healthview.status_of(c),
        "pid": task.pid if task and state_of(task) in ("running", "paused") else 0,
        "exit_code": task.exit_status if task and state_of(task) == "exited" else None,
        "ports": ports, "labels": c.labels,
    }
