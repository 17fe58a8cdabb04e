"""Restart policies: the container labels that carry them and the rules that read them.

Shared by the daemon (which restarts tasks, supervisor/runtime/restart.py) and `dock` (which sets
the labels from `--restart`). The label names and value syntax are containerd's restart monitor's
(`runtime/restart`), so a container made by nerdctl or `ctr --label` means the same here:

    containerd.io/restart.policy             no | always | unless-stopped | on-failure[:N]
                                             ("" or absent with status=running: always)
    containerd.io/restart.status             the desired status: "running" (keep it up) or
                                             "stopped" (never restart it, whatever the policy)
    containerd.io/restart.count              restarts done so far (decimal)
    containerd.io/restart.explicitly-stopped "true" once a user stopped the task through the API
                                             (Tasks/Kill with a stopping signal); "false" again
                                             when a user creates its task
    containerd.io/restart.loguri             stdout/stderr of a restarted task (file://, binary://)
    containerd.io/restart.logpath            the same as a file path (containerd: deprecated in 1.5)

Dockyard adds the last run, so `dock inspect` and `ctr c info` show why it restarted, and so a
daemon that starts can tell a task lost while none watched (a reboot) from one that ended:

    dockyard.restart.started-at              when the last run began (RFC 3339, UTC)
    dockyard.restart.exit-status             the init's exit status of the last run that ended
    dockyard.restart.exited-at               when it ended (RFC 3339, UTC)

Rules (`should_restart`): `no` never; `on-failure:N` after a non-zero exit while count < N (no N:
no limit); `always` and `unless-stopped` after any exit. An explicit stop holds every policy while
the daemon runs; when a daemon starts, `always` comes back even so (Docker), the others do not.
A user's new task starts the count again at 0. Back-off is Docker's: 100 ms before the first
restart, doubling, at most 1 min; a run that lasted 10 s or more starts the doubling again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard_common.errors import InvalidArgument

POLICY_LABEL = "containerd.io/restart.policy"
STATUS_LABEL = "containerd.io/restart.status"
COUNT_LABEL = "containerd.io/restart.count"
EXPLICITLY_STOPPED_LABEL = "containerd.io/restart.explicitly-stopped"
LOG_URI_LABEL = "containerd.io/restart.loguri"
LOG_PATH_LABEL = "containerd.io/restart.logpath"
EXIT_STATUS_LABEL = "dockyard.restart.exit-status"
EXITED_AT_LABEL = "dockyard.restart.exited-at"
STARTED_AT_LABEL = "dockyard.restart.started-at"

STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"

INITIAL_DELAY = 0.1  # seconds before the first restart (Docker's restartmanager)
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # a run at least this long resets the back-off


class Name(enum.StrEnum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True)
class Policy:
    name: Name
    max_retries: int = 0  # on-failure only; 0: no limit

    def __str__(self) -> str:
        """The label's value (containerd's `Policy.String`)."""
        return f"{self.name}:{self.max_retries}" if self.max_retries else str(self.name)

    @property
    def restarts(self) -> bool:
        return self.name is not Name.NO


NO = Policy(Name.NO)


def parse(text: str) -> Policy:
    """`no`, `always`, `unless-stopped` or `on-failure[:N]` (N ≥ 0); "" is `always`, as in
    containerd. Anything else is InvalidArgument, in words a user can act on."""
    name, sep, count = text.strip().partition(":")
    if name == "":
        name = Name.ALWAYS
    if name not in Name.__members__.values():
        raise InvalidArgument(f"invalid restart policy {text!r}: use no, always, unless-stopped "
                              "or on-failure[:max-retries]")
    if sep and name != Name.ON_FAILURE:
        raise InvalidArgument(f"invalid restart policy {text!r}: only on-failure takes a maximum retry count")
    retries = 0
    if sep:
        if not count.isdigit() or not count.isascii():
            raise InvalidArgument(f"invalid restart policy {text!r}: the maximum retry count must be "
                                  "a whole number ≥ 0")
        retries = int(count)
    return Policy(Name(name), retries)


def labels_for(policy: Policy) -> dict[str, str]:
    """The labels a client sets on a new container to give it `policy` (as nerdctl does); none
    for `no`."""
    if not policy.restarts:
        return {}
    return {POLICY_LABEL: str(policy), STATUS_LABEL: STATUS_RUNNING}


@dataclass(frozen=True)
class State:
    """What the labels of one container say about restarting it."""

    policy: Policy
    desired_stopped: bool  # status=stopped: a hold on any restart
    count: int
    explicitly_stopped: bool

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> State:
        """Read the labels leniently: a daemon must not fail on a label someone else wrote; a
        policy it cannot read is `no` (containerd's monitor also skips it)."""
        status = labels.get(STATUS_LABEL, "")
        if POLICY_LABEL in labels:
            try:
                policy = parse(labels[POLICY_LABEL])
            except InvalidArgument:
                policy = NO
        else:  # containerd's original contract: status=running alone keeps the task up
            policy = Policy(Name.ALWAYS) if status == STATUS_RUNNING else NO
        count_text = labels.get(COUNT_LABEL, "")
        count = int(count_text) if count_text.isascii() and count_text.isdigit() else 0
        return cls(policy, status == STATUS_STOPPED, count,
                   labels.get(EXPLICITLY_STOPPED_LABEL, "").lower() in ("true", "1", "t"))


def log_uri(labels: Mapping[str, str]) -> str:
    """Where a restarted task's stdout and stderr go: the log URI label, else the deprecated log
    path as a file:// URI (containerd prefers the URI when both are set); "" for nowhere."""
    if labels.get(LOG_URI_LABEL):
        return labels[LOG_URI_LABEL]
    path = labels.get(LOG_PATH_LABEL, "")
    return f"file://{path}" if path else ""


def rfc3339(ns: int) -> str:
    """A label's time: fixed width (nanoseconds, Z), so two of them compare as text."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


def run_lost(labels: Mapping[str, str]) -> bool:
    """Did the last run begin and never end, as far as the labels know (its task is gone)?"""
    started = labels.get(STARTED_AT_LABEL, "")
    return bool(started) and labels.get(EXITED_AT_LABEL, "") < started


def should_restart(state: State, exit_status: int, *, daemon_start: bool = False) -> bool:
    """After the init exited with `exit_status`: run it again?

    A user's explicit stop holds every policy while the daemon runs; at the daemon's start
    `always` comes back even so (Docker's rule: a manual stop lasts until the daemon restarts),
    `unless-stopped` and `on-failure` do not."""
    if not state.policy.restarts or state.desired_stopped:
        return False
    if state.explicitly_stopped and not (daemon_start and state.policy.name is Name.ALWAYS):
        return False
    if state.policy.name is Name.ON_FAILURE:
        limit = state.policy.max_retries
        return exit_status != 0 and (limit == 0 or state.count < limit)
    return True


def next_delay(previous: float | None, ran_for: float | None) -> float:
    """Seconds to wait before the next restart, given the last delay (None: none yet) and how long
    the run that just ended lasted (None: not known, e.g. started before this daemon)."""
    if previous is None or ran_for is None or ran_for >= RESET_AFTER:
        return INITIAL_DELAY
    return min(previous * 2, MAX_DELAY)
