"""`--health-*` and `--no-healthcheck` of `dock run` / `dock containers create`, as Docker's CLI has
them: durations are Go's (`30s`, `1m30s`, `500ms`), a value of 0 means "the image's, else the
default" (30s interval, 30s timeout, 3 retries, no start period, 5s start interval). The result is a
HealthConfig that the run merges with the image's HEALTHCHECK field by field (dock/runner.py,
dockyard_common/healthcheck.py); the daemon runs it.

    dock run -d --health-cmd 'test -f /tmp/ok' --health-interval 1s --health-retries 2 busybox ...
"""

from __future__ import annotations

import argparse

from dock.args import INT64_MAX
from dockyard_common import healthcheck as hc
from dockyard_common.errors import InvalidArgument


def duration(text: str) -> int:
    """An argparse type: a Go duration in nanoseconds (within int64)."""
    try:
        ns = hc.parse_duration(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if abs(ns) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"duration {text!r} is out of range")
    return ns


def retries(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def add_health_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--health-cmd", default="", metavar="CMD",
                   help="command to run to check health (by /bin/sh -c; exit 0: healthy)")
    p.add_argument("--health-interval", type=duration, default=0, metavar="DURATION",
                   help="time between running the check (ms|s|m|h) (default 30s)")
    p.add_argument("--health-timeout", type=duration, default=0, metavar="DURATION",
                   help="maximum time to allow one check to run (ms|s|m|h) (default 30s)")
    p.add_argument("--health-retries", type=retries, default=0, metavar="N",
                   help="consecutive failures needed to report unhealthy (default 3)")
    p.add_argument("--health-start-period", type=duration, default=0, metavar="DURATION",
                   help="start period for the container to initialize before failures count (default 0s)")
    p.add_argument("--health-start-interval", type=duration, default=0, metavar="DURATION",
                   help="time between running the check during the start period (default 5s)")
    p.add_argument("--no-healthcheck", action="store_true", help="disable any container-specified HEALTHCHECK")


def health_from_args(args: argparse.Namespace) -> hc.HealthConfig | None:
    """The flags as Docker's CLI makes them a HealthConfig (InvalidArgument for a conflict or a
    negative value); None when none was given (the image's check then runs as it is)."""
    if not hasattr(args, "health_cmd"):
        return None
    return hc.user_config(cmd=args.health_cmd, interval=args.health_interval, timeout=args.health_timeout,
                          start_period=args.health_start_period, start_interval=args.health_start_interval,
                          retries=args.health_retries, no_healthcheck=args.no_healthcheck)
