"""Health checks without a daemon: the flags, Docker's merge with the image's HEALTHCHECK, the
labels, Go durations, the monitor's rules (streak, start period, intervals), and what `dock ps`
and `dock inspect` make of a record."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from dock import health as healthview
from dock.healthflags import add_health_options, health_from_args
from dock.oci import ImageConfig
from dock.ps import Filters, status_text
from dock.tasks import Process
from dockyard_common import healthcheck as hc
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import AnyValue, Container, Status
from supervisor.runtime.health import (
    HealthState,
    Result,
    apply_result,
    decode,
    encode,
    next_interval_ns,
)

S = hc.SECOND


def flags(*argv: str) -> hc.HealthConfig | None:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_health_options(p)
    return health_from_args(p.parse_args(list(argv)))


# -- flags and merge --------------------------------------------------------------------------------


def test_no_flags_no_config() -> None:
    assert flags() is None


def test_flags_make_a_cmd_shell_check_with_go_durations() -> None:
    check = flags("--health-cmd", "curl -f localhost || exit 1", "--health-interval", "1m30s",
                  "--health-timeout", "500ms", "--health-retries", "5", "--health-start-period", "2s",
                  "--health-start-interval", "0.5s")
    assert check == hc.HealthConfig(("CMD-SHELL", "curl -f localhost || exit 1"), 90 * S, S // 2, 2 * S, S // 2, 5)


def test_a_flag_without_cmd_keeps_the_test_empty_for_the_image() -> None:
    assert flags("--health-interval", "1s") == hc.HealthConfig(interval=S)


def test_no_healthcheck_is_none_and_conflicts_with_the_others() -> None:
    assert flags("--no-healthcheck") == hc.HealthConfig(("NONE",))
    with pytest.raises(InvalidArgument, match="conflicts"):
        flags("--no-healthcheck", "--health-retries", "2")


@pytest.mark.parametrize("argv", [["--health-interval=-1s"], ["--health-retries=-1"], ["--health-timeout=-2ms"]])
def test_negative_values_are_refused(argv: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="cannot be negative"):
        flags(*argv)


def test_a_duration_without_unit_is_a_usage_error() -> None:
    with pytest.raises(argparse.ArgumentError, match="invalid duration"):
        flags("--health-interval", "5")


def test_below_a_millisecond_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="less than 1ms"):
        flags("--health-interval", "10us")


IMAGE = hc.HealthConfig(("CMD", "/bin/check"), interval=10 * S, timeout=3 * S, start_period=S, retries=4)


def test_merge_takes_the_image_check_without_flags() -> None:
    assert hc.merge(None, IMAGE) == IMAGE
    assert hc.merge(None, None) is None


def test_merge_field_by_field() -> None:
    merged = hc.merge(hc.HealthConfig(interval=S, retries=1), IMAGE)
    assert merged == hc.HealthConfig(("CMD", "/bin/check"), interval=S, timeout=3 * S, start_period=S, retries=1)
    merged = hc.merge(hc.HealthConfig(("CMD-SHELL", "true")), IMAGE)
    assert merged is not None and merged.test == ("CMD-SHELL", "true") and merged.interval == 10 * S


def test_none_switches_the_image_check_off() -> None:
    merged = hc.merge(hc.HealthConfig(("NONE",)), IMAGE)
    assert merged is not None and merged.disabled and hc.labels_for(merged) == {}


def test_labels_round_trip_and_docker_json() -> None:
    labels = hc.labels_for(IMAGE)
    assert labels == {hc.CONFIG_LABEL: '{"Test":["CMD","/bin/check"],"Interval":10000000000,"Timeout":3000000000,'
                                       '"StartPeriod":1000000000,"Retries":4}'}
    assert hc.of_labels(labels) == IMAGE
    assert hc.of_labels({}) is None
    with pytest.raises(InvalidArgument):
        hc.of_labels({hc.CONFIG_LABEL: "{"})


def test_defaults() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "true"))
    assert (check.interval_ns, check.timeout_ns, check.start_period_ns, check.start_interval_ns, check.retries_n) \
        == (30 * S, 30 * S, 0, 5 * S, 3)
    assert check.argv() == ["/bin/sh", "-c", "true"]
    assert hc.HealthConfig(("CMD", "ls", "-l")).argv() == ["ls", "-l"]


def test_the_image_shell_runs_cmd_shell_checks() -> None:
    """Docker's getShell: the image's SHELL, else /bin/sh -c; kept on the container as a label."""
    shell = hc.image_shell({"Shell": ["/bin/busybox", "sh", "-c"]})
    assert shell == ("/bin/busybox", "sh", "-c")
    assert hc.image_shell({}) == hc.image_shell({"Shell": []}) == ()
    assert hc.image_shell({"Shell": "/bin/sh"}) == hc.image_shell({"Shell": ["", "-c"]}) == ()  # unreadable: default
    check = hc.HealthConfig(("CMD-SHELL", "test -f /ok"))
    labels = hc.labels_for(check, shell)
    assert labels[hc.SHELL_LABEL] == '["/bin/busybox","sh","-c"]'
    assert check.argv(hc.shell_of_labels(labels)) == ["/bin/busybox", "sh", "-c", "test -f /ok"]
    assert check.argv(hc.shell_of_labels(hc.labels_for(check))) == ["/bin/sh", "-c", "test -f /ok"]
    # CMD runs no shell: no label; nor for no check
    assert hc.SHELL_LABEL not in hc.labels_for(IMAGE, shell)
    assert hc.labels_for(None, shell) == {}
    for bad in ("[", '"sh"', "[1]"):
        with pytest.raises(InvalidArgument):
            hc.shell_of_labels({hc.SHELL_LABEL: bad})


def test_image_config_reads_healthcheck() -> None:
    config = ImageConfig.from_json({"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": S}})
    assert config.healthcheck == hc.HealthConfig(("CMD-SHELL", "true"), interval=S)
    assert ImageConfig.from_json({}).healthcheck is None
    assert ImageConfig.from_json({"Healthcheck": {"Test": ["WHAT"]}}).healthcheck is None  # not run, not refused


@pytest.mark.parametrize("text,ns", [("0", 0), ("1s", S), ("1.5s", 3 * S // 2), ("300ms", 300_000_000),
                                     ("1m30s", 90 * S), ("1h", 3600 * S), ("2us", 2000)])
def test_go_durations(text: str, ns: int) -> None:
    assert hc.parse_duration(text) == ns


@pytest.mark.parametrize("ns,text", [(S, "1s"), (30 * S, "30s"), (S // 2, "500ms"), (90 * S, "1m30s"),
                                     (3600 * S, "1h0m0s"), (1_500_000_000, "1.5s")])
def test_go_duration_text(ns: int, text: str) -> None:
    assert hc.format_duration(ns) == text


def test_output_is_capped_as_docker() -> None:
    assert hc.cap_output(b"x" * 4096) == "x" * 4096
    assert hc.cap_output(b"x" * 5000) == "x" * 4096 + "..."


# -- the monitor's rules ------------------------------------------------------------------------------


def result(at: int, code: int) -> Result:
    return Result(at, at + 1, code, "")


def test_success_is_healthy_and_resets_the_streak() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"), retries=2)
    state = HealthState(hc.UNHEALTHY, 5)
    state = apply_result(check, state, result(10 * S, 0))
    assert (state.status, state.failing_streak) == (hc.HEALTHY, 0)


def test_retries_failures_make_it_unhealthy() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"), retries=2)
    state = apply_result(check, HealthState(hc.HEALTHY), result(S, 1))
    assert (state.status, state.failing_streak) == (hc.HEALTHY, 1)
    state = apply_result(check, state, result(2 * S, 1))
    assert (state.status, state.failing_streak) == (hc.UNHEALTHY, 2)


def test_start_period_failures_do_not_count_while_starting() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"), start_period=10 * S, retries=1)
    state = HealthState(started_at_ns=100 * S)
    state = apply_result(check, state, result(105 * S, 1))
    assert (state.status, state.failing_streak) == (hc.STARTING, 0)
    state = apply_result(check, state, result(111 * S, 1))
    assert (state.status, state.failing_streak) == (hc.UNHEALTHY, 1)


def test_start_period_failures_count_once_healthy() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"), start_period=10 * S, retries=1)
    state = HealthState(hc.HEALTHY, started_at_ns=100 * S)
    state = apply_result(check, state, result(101 * S, 1))
    assert state.status == hc.UNHEALTHY


def test_five_results_are_kept() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"))
    state = HealthState()
    for i in range(8):
        state = apply_result(check, state, result(i * S, i))
    assert [r.exit_code for r in state.log] == [3, 4, 5, 6, 7]


def test_intervals() -> None:
    check = hc.HealthConfig(("CMD-SHELL", "x"), interval=10 * S, start_period=60 * S, start_interval=S)
    starting = HealthState(hc.STARTING, started_at_ns=0)
    assert next_interval_ns(check, starting, 5 * S) == S  # in the start period, starting
    assert next_interval_ns(check, HealthState(hc.HEALTHY), 5 * S) == 10 * S
    assert next_interval_ns(check, starting, 61 * S) == 10 * S
    assert next_interval_ns(hc.HealthConfig(("CMD-SHELL", "x")), starting, 0) == 30 * S  # no start period


def test_state_round_trips_through_the_extension() -> None:
    state = HealthState(hc.UNHEALTHY, 3, [Result(S, 2 * S, -1, "Health check exceeded timeout (1s)")], 42, 7 * S)
    c = Container("c", "rt", None, labels={}, extensions={hc.EXTENSION: AnyValue(hc.TYPE_URL, encode(state))})
    assert decode(c) == state
    assert decode(Container("c", "rt", None)) is None


# -- what ps and inspect show -------------------------------------------------------------------------


def container(status: str | None, with_check: bool = True) -> Container:
    labels = dict(hc.labels_for(hc.HealthConfig(("CMD-SHELL", "true")))) if with_check else {}
    exts = {}
    if status is not None:
        labels[hc.STATUS_LABEL] = status
        state = HealthState(status, 1, [Result(1_700_000_000 * S + 5, 1_700_000_001 * S, 1, "no\n")])
        exts[hc.EXTENSION] = AnyValue(hc.TYPE_URL, encode(state))
    return Container("c", "rt", None, labels=labels, extensions=exts)


def test_ps_status_text() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    task = Process(id="c", pid=1, status=Status.RUNNING)
    started = now - timedelta(minutes=3)
    assert status_text(task, started, now, hc.HEALTHY) == "Up 3 minutes (healthy)"
    assert status_text(task, started, now, hc.UNHEALTHY) == "Up 3 minutes (unhealthy)"
    assert status_text(task, started, now, hc.STARTING) == "Up 3 minutes (health: starting)"
    assert status_text(task, started, now, hc.NONE) == "Up 3 minutes"
    paused = Process(id="c", pid=1, status=Status.PAUSED)
    assert status_text(paused, started, now, hc.HEALTHY) == "Up 3 minutes (Paused)"


def test_ps_health_filter() -> None:
    f = Filters.parse(["health=healthy", "health=starting"])
    assert f.match(container(hc.HEALTHY), None) and f.match(container(hc.STARTING), None)
    assert not f.match(container(hc.UNHEALTHY), None)
    none = Filters.parse(["health=none"])
    assert none.match(container(None, with_check=False), None) and none.match(container(None), None)
    assert not none.match(container(hc.HEALTHY), None)
    with pytest.raises(InvalidArgument, match="health is one of"):
        Filters.parse(["health=sick"])


def test_inspect_shape() -> None:
    c = container(hc.UNHEALTHY)
    assert healthview.state_json(c) == {
        "Status": "unhealthy", "FailingStreak": 1,
        "Log": [{"Start": "2023-11-14T22:13:20.000000005Z", "End": "2023-11-14T22:13:21Z", "ExitCode": 1,
                 "Output": "no\n"}]}
    assert healthview.config_json(c) == {"Test": ["CMD-SHELL", "true"]}
    assert healthview.state_json(container(None)) is None
