"""Restart policies: the parser, the label rules and the back-off (dockyard_common/restartpolicy.py)."""

from __future__ import annotations

import argparse
import signal

import pytest

from dock.commands.run import restart_labels_from
from dockyard_common import restartpolicy as rp
from dockyard_common.errors import InvalidArgument
from supervisor.runtime.restart import is_stop


@pytest.mark.parametrize(("text", "name", "retries", "label"), [
    ("no", rp.Name.NO, 0, "no"),
    ("always", rp.Name.ALWAYS, 0, "always"),
    ("", rp.Name.ALWAYS, 0, "always"),  # containerd: an empty policy is always
    ("unless-stopped", rp.Name.UNLESS_STOPPED, 0, "unless-stopped"),
    ("on-failure", rp.Name.ON_FAILURE, 0, "on-failure"),
    ("on-failure:3", rp.Name.ON_FAILURE, 3, "on-failure:3"),
    ("on-failure:0", rp.Name.ON_FAILURE, 0, "on-failure"),
    (" always ", rp.Name.ALWAYS, 0, "always"),
])
def test_parse(text: str, name: rp.Name, retries: int, label: str) -> None:
    policy = rp.parse(text)
    assert (policy.name, policy.max_retries, str(policy)) == (name, retries, label)
    assert rp.parse(str(policy)) == policy  # the label's value reads back as the same policy


@pytest.mark.parametrize(("text", "words"), [
    ("sometimes", "use no, always"),
    ("always:3", "only on-failure takes"),
    ("unless-stopped:1", "only on-failure takes"),
    ("no:1", "only on-failure takes"),
    ("on-failure:-1", "whole number"),
    ("on-failure:x", "whole number"),
    ("on-failure:", "whole number"),
    ("on-failure:٣", "whole number"),  # a non-ASCII digit
    ("On-Failure", "use no, always"),
])
def test_parse_rejects_with_words(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        rp.parse(text)
    assert words in str(err.value) and repr(text) in str(err.value)


def test_labels_for_sets_policy_and_desired_status_as_nerdctl() -> None:
    assert rp.labels_for(rp.parse("on-failure:2")) == {
        "containerd.io/restart.policy": "on-failure:2", "containerd.io/restart.status": "running"}
    assert rp.labels_for(rp.parse("no")) == {}


def test_state_reads_labels_leniently() -> None:
    state = rp.State.of({rp.POLICY_LABEL: "on-failure:5", rp.COUNT_LABEL: "2",
                         rp.EXPLICITLY_STOPPED_LABEL: "true"})
    assert state == rp.State(rp.Policy(rp.Name.ON_FAILURE, 5), False, 2, True)
    # Labels someone else wrote badly: no crash, no restart from a policy we cannot read.
    bad = rp.State.of({rp.POLICY_LABEL: "whenever", rp.COUNT_LABEL: "many"})
    assert bad.policy == rp.NO and bad.count == 0
    # containerd's original contract: status=running alone keeps the task running.
    assert rp.State.of({rp.STATUS_LABEL: "running"}).policy == rp.Policy(rp.Name.ALWAYS)
    assert rp.State.of({}).policy == rp.NO
    assert rp.State.of({rp.POLICY_LABEL: "always", rp.STATUS_LABEL: "stopped"}).desired_stopped


def _state(policy: str, count: int = 0, stopped: bool = False, status: str = "running") -> rp.State:
    return rp.State.of({rp.POLICY_LABEL: policy, rp.COUNT_LABEL: str(count), rp.STATUS_LABEL: status,
                        rp.EXPLICITLY_STOPPED_LABEL: str(stopped).lower()})


@pytest.mark.parametrize(("policy", "exit_status", "want"), [
    ("no", 1, False), ("no", 0, False),
    ("always", 0, True), ("always", 137, True),
    ("unless-stopped", 0, True), ("unless-stopped", 2, True),
    ("on-failure", 0, False), ("on-failure", 1, True), ("on-failure", 255, True),
])
def test_should_restart_by_policy_and_exit(policy: str, exit_status: int, want: bool) -> None:
    assert rp.should_restart(_state(policy), exit_status) is want


def test_on_failure_counts_restarts_up_to_its_maximum() -> None:
    assert [rp.should_restart(_state("on-failure:3", count=n), 1) for n in range(5)] == [True, True, True, False, False]
    assert rp.should_restart(_state("on-failure", count=1000), 1)  # no maximum


def test_explicit_stop_holds_every_policy_while_the_daemon_runs() -> None:
    for policy in ("always", "unless-stopped", "on-failure"):
        assert not rp.should_restart(_state(policy, stopped=True), 137)


def test_at_daemon_start_only_always_overrides_an_explicit_stop() -> None:
    assert rp.should_restart(_state("always", stopped=True), 143, daemon_start=True)
    assert not rp.should_restart(_state("unless-stopped", stopped=True), 143, daemon_start=True)
    assert not rp.should_restart(_state("on-failure", stopped=True), 143, daemon_start=True)
    assert rp.should_restart(_state("unless-stopped"), 255, daemon_start=True)


def test_desired_status_stopped_holds_any_policy() -> None:
    assert not rp.should_restart(_state("always", status="stopped"), 1, daemon_start=True)


def test_back_off_doubles_from_100ms_to_a_minute() -> None:
    delays: list[float] = []
    previous: float | None = None
    for _ in range(12):
        previous = rp.next_delay(previous, ran_for=0.5)
        delays.append(previous)
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays[9] == pytest.approx(51.2)
    assert delays[10:] == [60.0, 60.0]


def test_back_off_resets_after_a_run_of_ten_seconds() -> None:
    assert rp.next_delay(60.0, ran_for=10.0) == rp.INITIAL_DELAY
    assert rp.next_delay(6.4, ran_for=9.9) == pytest.approx(12.8)
    assert rp.next_delay(6.4, ran_for=None) == rp.INITIAL_DELAY  # started before this daemon


def test_stopping_signals() -> None:
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        assert is_stop(sig, {})
    assert not is_stop(signal.SIGHUP, {})
    assert not is_stop(signal.SIGUSR1, {})
    # the image's own stop signal, as `dock run` stores it
    assert is_stop(signal.SIGUSR1, {"io.containerd.image.config.stop-signal": "SIGUSR1"})
    assert is_stop(signal.SIGWINCH, {"io.containerd.image.config.stop-signal": "28"})
    assert not is_stop(signal.SIGHUP, {"io.containerd.image.config.stop-signal": "bogus"})


def _args(restart: str, **more: object) -> argparse.Namespace:
    return argparse.Namespace(restart=restart, **more)


def test_dock_restart_option_sets_labels_and_refuses_conflicts() -> None:
    assert restart_labels_from(_args("on-failure:3", rm=False, detach=True)) == {
        rp.POLICY_LABEL: "on-failure:3", rp.STATUS_LABEL: "running"}
    assert restart_labels_from(_args("no", rm=True, detach=False)) == {}
    assert restart_labels_from(_args("always")) == rp.labels_for(rp.parse("always"))  # containers create
    with pytest.raises(InvalidArgument, match="--restart and --rm"):
        restart_labels_from(_args("always", rm=True, detach=True))
    # in the foreground too (Docker's): the client shows the first run, the daemon restarts it
    assert restart_labels_from(_args("unless-stopped", rm=False, detach=False)) == rp.labels_for(
        rp.parse("unless-stopped"))
    with pytest.raises(InvalidArgument, match="invalid restart policy"):
        restart_labels_from(_args("forever", rm=False, detach=True))


def test_log_uri_prefers_the_uri_and_reads_the_old_path_label() -> None:
    assert rp.log_uri({rp.LOG_URI_LABEL: "binary:///bin/logger?x=1", rp.LOG_PATH_LABEL: "/l"}) == "binary:///bin/logger?x=1"
    assert rp.log_uri({rp.LOG_PATH_LABEL: "/var/log/c.log"}) == "file:///var/log/c.log"
    assert rp.log_uri({}) == ""


def test_times_compare_as_text_and_a_run_without_an_exit_is_lost() -> None:
    early, late = rp.rfc3339(1_700_000_000_000_000_001), rp.rfc3339(1_700_000_000_100_000_000)
    assert early == "2023-11-14T22:13:20.000000001Z" and early < late
    assert rp.run_lost({rp.STARTED_AT_LABEL: late, rp.EXITED_AT_LABEL: early})  # ran again after that exit
    assert rp.run_lost({rp.STARTED_AT_LABEL: late})
    assert not rp.run_lost({rp.STARTED_AT_LABEL: early, rp.EXITED_AT_LABEL: late})  # it ended
    assert not rp.run_lost({})  # never started
