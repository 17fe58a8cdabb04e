"""Docker's container health checks: the check's configuration, the labels that carry it and its
state, and the rules both the daemon (which runs the probes, supervisor/runtime/health.py) and
`dock` (which sets the check from the image and the `--health-*` flags, and shows the state) read.

    dockyard.healthcheck      the check: Docker's HealthConfig as JSON, durations in nanoseconds,
                              zero fields left out ({"Test": ["CMD-SHELL", "test -f /ok"],
                              "Interval": 1000000000, "Retries": 2}); set when the container is
                              made (the image's HEALTHCHECK merged with the flags, as Docker does)
    dockyard.healthcheck.shell  the shell of a CMD-SHELL check when the image has a SHELL (Docker's
                              Config.Shell, taken from the image at create): a JSON array, e.g.
                              ["/bin/busybox","sh","-c"]; without it `/bin/sh -c`
    dockyard.health.status    starting | healthy | unhealthy: written by the daemon's monitor
    extension dockyard.health the state with the last results (dockyard.containers.v1.Health,
                              proto/dockyard/containers/v1/health.proto)

Test forms, Docker's: `["NONE"]` no check (the image's is switched off too); `["CMD", arg...]` the
arguments exec'd as they are; `["CMD-SHELL", command]` run by the image's SHELL, else `/bin/sh -c`
(Docker's getShell); `[]` inherit (the image's). Defaults: interval 30 s, timeout 30 s, 3 retries,
no start period, start interval 5 s.

    check = merge(user_config(cmd="test -f /ok", interval=ns(1)), from_json(image_config.get("Healthcheck")))
    labels = labels_for(check, image_shell(image_config))   # {} when there is none (or it is NONE)
    argv = check.argv(shell_of_labels(labels))               # what the daemon's probe runs
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import json_value

CONFIG_LABEL = "dockyard.healthcheck"
SHELL_LABEL = "dockyard.healthcheck.shell"
DEFAULT_SHELL = ("/bin/sh", "-c")
STATUS_LABEL = "dockyard.health.status"
EXTENSION = "dockyard.health"
TYPE_URL = "dockyard.containers.v1.Health"
EVENT_TOPIC = "/containers/health_status"

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
NONE = "none"  # no check at all: `dock ps --filter health=none`
STATUSES = (STARTING, HEALTHY, UNHEALTHY, NONE)

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MIN_DURATION = 1_000_000  # 1 ms: Docker refuses a shorter non-zero duration
MAX_LOG_ENTRIES = 5  # results kept (Docker's maxLogEntries)
MAX_OUTPUT = 4096  # bytes of a probe's output kept (Docker's maxOutputLen)
EXIT_UNKNOWN = -1  # a probe that could not run, or overran its timeout

_FIELDS = (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
           ("StartInterval", "start_interval"))


@dataclass(frozen=True)
class HealthConfig:
    """Docker's container.HealthConfig; a zero duration or retries means "the default" (or, in a
    user's config, "the image's")."""

    test: tuple[str, ...] = ()
    interval: int = 0  # ns
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @property
    def disabled(self) -> bool:
        return bool(self.test) and self.test[0] == "NONE"

    @property
    def runs(self) -> bool:
        """A check the daemon runs: CMD or CMD-SHELL with a command."""
        return len(self.test) >= 2 and self.test[0] in ("CMD", "CMD-SHELL")

    def argv(self, shell: tuple[str, ...] = DEFAULT_SHELL) -> list[str]:
        """The probe's command line (InvalidArgument for a check that does not run)."""
        if not self.runs:
            raise InvalidArgument(f"health check {list(self.test)!r} runs nothing")
        if self.test[0] == "CMD":
            return list(self.test[1:])
        return [*shell, self.test[1]]

    # Each with Docker's default when unset (daemon/health.go timeoutWithDefault).
    @property
    def interval_ns(self) -> int:
        return self.interval or DEFAULT_INTERVAL

    @property
    def timeout_ns(self) -> int:
        return self.timeout or DEFAULT_TIMEOUT

    @property
    def start_period_ns(self) -> int:
        return self.start_period or DEFAULT_START_PERIOD

    @property
    def start_interval_ns(self) -> int:
        return self.start_interval or DEFAULT_START_INTERVAL

    @property
    def retries_n(self) -> int:
        return self.retries if self.retries > 0 else DEFAULT_RETRIES

    def to_json(self) -> dict[str, Any]:
        """Docker's JSON (`Config.Healthcheck` of inspect, an image config's Healthcheck)."""
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, attr in _FIELDS:
            if getattr(self, attr):
                out[key] = getattr(self, attr)
        if self.retries:
            out["Retries"] = self.retries
        return out


def validate(check: HealthConfig) -> HealthConfig:
    """Docker's daemon-side checks (daemon/container.go): durations 0 or at least 1 ms, retries
    not negative, a known test form."""
    for key, attr in _FIELDS:
        value = getattr(check, attr)
        if value < 0:
            raise InvalidArgument(f"{key} in Healthcheck cannot be negative")
        if 0 < value < MIN_DURATION:
            raise InvalidArgument(f"{key} in Healthcheck cannot be less than 1ms")
    if check.retries < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")
    if check.test and check.test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidArgument(f"unknown Healthcheck type {check.test[0]!r} (expected CMD, CMD-SHELL or NONE)")
    if check.test and check.test[0] == "CMD-SHELL" and len(check.test) != 2:
        raise InvalidArgument("Healthcheck CMD-SHELL takes exactly one command string")
    if check.test and check.test[0] in ("CMD", "CMD-SHELL") and (len(check.test) < 2 or not check.test[1]):
        raise InvalidArgument(f"Healthcheck {check.test[0]} requires a command")
    return check


def from_json(value: Any, what: str = "Healthcheck") -> HealthConfig | None:
    """Docker's HealthConfig JSON (an image config's `Healthcheck`, the label's value); None for
    null/absent. InvalidArgument for a malformed one."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be an object")
    test = value.get("Test") or []
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidArgument(f"{what}: Test must be an array of strings")

    def number(key: str) -> int:
        n = value.get(key) or 0
        if isinstance(n, bool) or not isinstance(n, int):
            raise InvalidArgument(f"{what}: {key} must be an integer")
        return n

    return validate(HealthConfig(tuple(test), number("Interval"), number("Timeout"), number("StartPeriod"),
                                 number("StartInterval"), number("Retries")))


def merge(user: HealthConfig | None, image: HealthConfig | None) -> HealthConfig | None:
    """Docker's merge (daemon/commit.go): no user config takes the image's; else each field the
    user left zero (the test empty) is the image's."""
    if user is None:
        return image
    if image is None:
        return user
    return replace(user, test=user.test or image.test, interval=user.interval or image.interval,
                   timeout=user.timeout or image.timeout, start_period=user.start_period or image.start_period,
                   start_interval=user.start_interval or image.start_interval,
                   retries=user.retries or image.retries)


def user_config(cmd: str = "", interval: int = 0, timeout: int = 0, start_period: int = 0,
                start_interval: int = 0, retries: int = 0, no_healthcheck: bool = False) -> HealthConfig | None:
    """The `--health-*` flags and `--no-healthcheck` as Docker's CLI makes them a HealthConfig
    (cli/command/container/opts.go): None when none was given."""
    given = bool(cmd) or any((interval, timeout, start_period, start_interval, retries))
    if no_healthcheck:
        if given:
            raise InvalidArgument("--no-healthcheck conflicts with --health-* options")
        return HealthConfig(test=("NONE",))
    if not given:
        return None
    for flag, value in (("interval", interval), ("timeout", timeout), ("retries", retries),
                        ("start-period", start_period), ("start-interval", start_interval)):
        if value < 0:
            raise InvalidArgument(f"--health-{flag} cannot be negative")
    return validate(HealthConfig(("CMD-SHELL", cmd) if cmd else (), interval, timeout, start_period,
                                 start_interval, retries))


def labels_for(check: HealthConfig | None, shell: tuple[str, ...] = ()) -> dict[str, str]:
    """The labels that carry a check the daemon runs, and the `shell` (the image's SHELL, `()`
    for none) a CMD-SHELL check runs under; {} for none or NONE."""
    if check is None or not check.runs:
        return {}
    out = {CONFIG_LABEL: json.dumps(check.to_json(), separators=(",", ":"))}
    if shell and check.test[0] == "CMD-SHELL":
        out[SHELL_LABEL] = json.dumps(list(shell), separators=(",", ":"))
    return out


def _shell(value: Any, what: str) -> tuple[str, ...]:
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidArgument(f"{what} must be an array of non-empty strings")
    return tuple(value)


def image_shell(config: Mapping[str, Any]) -> tuple[str, ...]:
    """An image config's `Shell` (its `config` object; SHELL in a Dockerfile), `()` when it has
    none, or one this client cannot read (the check then runs under the default, not refused)."""
    try:
        return _shell(config.get("Shell"), "image config: Shell")
    except InvalidArgument:
        return ()


def shell_of_labels(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The shell a container's CMD-SHELL check runs under: its SHELL_LABEL, else `/bin/sh -c`
    (InvalidArgument for a malformed label)."""
    value = _json_label(labels, SHELL_LABEL)
    return DEFAULT_SHELL if value is None else _shell(value, f"label {SHELL_LABEL}") or DEFAULT_SHELL


def _json_label(labels: Mapping[str, str], key: str) -> Any:
    """The label's JSON value, None when it is unset or empty (InvalidArgument when not JSON)."""
    text = labels.get(key)
    if not text:
        return None
    try:
        return json_value(text, f"label {key}")
    except ValueError:
        raise InvalidArgument(f"label {key}: not JSON") from None


def of_labels(labels: Mapping[str, str]) -> HealthConfig | None:
    """The check a container's labels carry, if it runs one (a malformed label: InvalidArgument)."""
    value = _json_label(labels, CONFIG_LABEL)
    if value is None:
        return None
    check = from_json(value, f"label {CONFIG_LABEL}")
    return check if check is not None and check.runs else None


# -- Go durations (Docker's flags are Go's time.Duration) -------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": SECOND, "m": 60 * SECOND,
          "h": 3600 * SECOND}


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds: `1m30s`, `1.5h`, `300ms`, `0` (InvalidArgument)."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.lstrip("+-")
    if body == "0":
        return 0
    if not body:
        raise InvalidArgument(f"invalid duration {text!r}")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION.match(body, pos)
        if m is None:
            raise InvalidArgument(f"invalid duration {text!r} (want e.g. 30s, 1m30s, 500ms)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * round(total)


def format_duration(ns: int) -> str:
    """Go's Duration.String: `1s`, `1.5s`, `500ms`, `1m30s`, `1h0m0s`."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    seconds = _decimal(rest, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def cap_output(data: bytes) -> str:
    """A probe's output as Docker keeps it: the first 4096 bytes, "..." appended when cut."""
    text = data[:MAX_OUTPUT].decode("utf-8", "replace")
    return text + "..." if len(data) > MAX_OUTPUT else text
