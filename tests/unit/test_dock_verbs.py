"""The pure parts of `dock ps|inspect|stop|...` (dock/ps.py, dock/lookup.py): Docker's time phrases
and STATUS words, container names, reference resolution by prefix, `--filter` parsing and matching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dock.commands.run import request_from_args
from dock.lookup import check_container_name, display_name, new_container_id, pick, prefix_filter
from dock.parser import build_parser
from dock.ps import Filters, command_text, human_duration, image_text, process_started, state_of, status_text
from dock.tasks import Process
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.types import AnyValue, Container, Status
from supervisor import filters

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "Less than a second"), (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"),
    (60, "About a minute"), (119, "About a minute"), (120, "2 minutes"), (59 * 60 + 59, "59 minutes"),
    (3600, "About an hour"), (89 * 60, "About an hour"), (90 * 60, "2 hours"), (47 * 3600, "47 hours"),
    (48 * 3600, "2 days"), (13 * 86400, "13 days"), (14 * 86400, "2 weeks"), (59 * 86400, "8 weeks"),
    (60 * 86400, "2 months"), (729 * 86400, "24 months"), (730 * 86400, "2 years"),
])
def test_human_duration_is_dockers(seconds: float, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def task(status: Status, exit_status: int = 0, exited_at: datetime | None = None, pid: int = 0) -> Process:
    return Process("c", pid, status, exit_status=exit_status, exited_at=exited_at)


def test_status_words() -> None:
    started = NOW - timedelta(minutes=3)
    assert status_text(None, None, NOW) == "Created" and state_of(None) == "created"
    assert status_text(task(Status.CREATED), None, NOW) == "Created"
    assert status_text(task(Status.RUNNING, pid=5), started, NOW) == "Up 3 minutes"
    assert status_text(task(Status.RUNNING, pid=5), None, NOW) == "Up"  # start time unknown
    assert status_text(task(Status.PAUSED, pid=5), started, NOW) == "Up 3 minutes (Paused)"
    assert state_of(task(Status.PAUSING)) == "paused"
    gone = task(Status.STOPPED, 137, NOW - timedelta(minutes=2))
    assert status_text(gone, None, NOW) == "Exited (137) 2 minutes ago" and state_of(gone) == "exited"
    assert status_text(task(Status.STOPPED, 1), None, NOW) == "Exited (1)"
    assert status_text(task(Status.UNKNOWN), None, NOW) == "Unknown"


def test_command_cell() -> None:
    assert command_text(["sleep", "600"]) == '"sleep 600"'
    assert command_text(["sh", "-c", "while true; do sleep 1; done"]) == '"sh -c while true; d…"'
    assert command_text(["sh", "-c", "while true; do sleep 1; done"], truncate=False) == \
        '"sh -c while true; do sleep 1; done"'
    assert command_text(["echo", 'say "hi"']) == '"echo say \\"hi\\""'
    assert command_text([]) == '""'


def test_image_cell() -> None:
    assert image_text("docker.io/library/busybox:latest") == "busybox:latest"
    assert image_text("127.0.0.1:5000/team/app:1") == "127.0.0.1:5000/team/app:1"
    assert image_text("") == "-"


def test_container_names() -> None:
    for good in ("web", "a", "Web_1.test-x", "0abc"):
        assert check_container_name(good) == good
    for bad in ("", "-x", "_x", ".x", "a b", "a/b", "é", "a" * 77):
        with pytest.raises(InvalidArgument, match="invalid container name"):
            check_container_name(bad)
    assert new_container_id("web") == "web"
    generated = {new_container_id() for _ in range(3)}
    assert len(generated) == 3 and all(len(g) == 64 and int(g, 16) >= 0 for g in generated)
    assert display_name(next(iter(generated))) == next(iter(generated))[:12]
    assert display_name("web") == "web" and display_name("f" * 63) == "f" * 63


def test_run_takes_docker_shaped_arguments() -> None:
    args = build_parser().parse_args(["run", "--name", "web", "busybox", "sh", "-c", "exit 3"])
    req = request_from_args(args)
    assert (req.id, req.image, req.spec.args) == ("web", "busybox", ["sh", "-c", "exit 3"])
    req = request_from_args(build_parser().parse_args(["run", "busybox"]))
    assert len(req.id) == 64 and req.spec.args == []
    with pytest.raises(SystemExit, match="invalid container name 'a/b'"):
        request_from_args(build_parser().parse_args(["run", "--name", "a/b", "busybox"]))


def box(cid: str, image: str = "docker.io/library/busybox:latest", labels: dict[str, str] | None = None) -> Container:
    spec = AnyValue("x", json.dumps({"process": {"args": ["true"]}}).encode())
    return Container(id=cid, runtime_name="r", spec=spec, labels=labels or {}, image=image)


def test_pick_exact_then_unique_prefix() -> None:
    found = [box("ab"), box("abc1"), box("abc2"), box("xyz")]
    assert pick("ab", found).id == "ab"  # exact wins over the prefix of others
    assert pick("x", found).id == "xyz"
    with pytest.raises(InvalidArgument, match="ambiguous: 2 containers start with 'abc'"):
        pick("abc", found)
    with pytest.raises(NotFound, match="container 'q'"):
        pick("q", found)
    missing = NotFound("the daemon's words")
    with pytest.raises(NotFound) as caught:
        pick("q", found, missing)
    assert caught.value is missing


@pytest.mark.parametrize("ids", [["web.1", "webx1", "web.2"], ["a-b_c", "a-b_d"]])
def test_the_prefix_filter_means_a_prefix_to_the_daemon(ids: list[str]) -> None:
    prefix = ids[0][:-1]
    selected = filters.parse(prefix_filter(prefix))
    matched = [i for i in ids if selected.match(filters.adaptor_from({"id": i}))]
    assert matched == [i for i in ids if i.startswith(prefix)]


def test_filters_parse_and_match() -> None:
    web = box("web-1", labels={"tier": "web", "solo": ""})
    batch = box("batch-1", image="docker.io/library/alpine:3", labels={"tier": "batch"})
    running, exited3 = task(Status.RUNNING, pid=4), task(Status.STOPPED, 3)

    def match(*items: str) -> list[str]:
        f = Filters.parse(items)
        return [c.id for c, t in ((web, running), (batch, exited3)) if f.match(c, t)]

    assert match() == ["web-1", "batch-1"]
    assert match("status=running") == ["web-1"] and match("status=exited") == ["batch-1"]
    assert match("status=running", "status=exited") == ["web-1", "batch-1"]
    assert match("status=running", "label=tier=batch") == []
    assert match("exited=3") == ["batch-1"] and match("exited=0") == []
    assert match("label=tier") == ["web-1", "batch-1"] and match("label=solo") == ["web-1"]
    assert match("label=tier=web") == ["web-1"]
    assert match("name=atch") == ["batch-1"] and match("id=web") == ["web-1"] and match("id=eb") == []
    assert match("ancestor=busybox") == ["web-1"] and match("ancestor=alpine") == ["batch-1"]
    assert match("ancestor=alpine:3") == ["batch-1"] and match("ancestor=alpine:4") == []
    assert match("ancestor=docker.io/library/busybox:latest") == ["web-1"]
    assert Filters.parse(["status=exited"]).wants_all and not Filters.parse(["status=running"]).wants_all
    assert Filters.parse(["exited=1"]).wants_all and not Filters.parse(["label=x"]).wants_all
    for bad, words in (("status", "want KEY=VALUE"), ("colour=red", "want KEY=VALUE"),
                       ("status=asleep", "status is one of"), ("exited=x", "exit code"),
                       ("ancestor=Bad:Name", "ancestor")):
        with pytest.raises(InvalidArgument, match=words):
            Filters.parse([bad])


def test_process_started_reads_proc() -> None:
    started = process_started(os.getpid())
    assert started is not None and timedelta(0) <= datetime.now(UTC) - started < timedelta(days=30)
    assert process_started(0) is None and process_started(2**22 + 12345) is None


def test_a_verbs_short_options_are_its_own() -> None:
    # `ps -a` is ps's --all, not the global --address: one clear line (the daemon is not there), and
    # only the group of the command is imported
    res = subprocess.run([sys.executable, "-m", "dock.cli", "--address", "/nonexistent.sock", "ps", "-a", "-q"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("dock: cannot connect") and len(res.stderr.splitlines()) == 1, res.stderr
    code = ("import sys; from dock.parser import build_parser; build_parser(['-n', 'x', 'ps', '-a']); "
            "print('dock.commands.verbs' in sys.modules, 'dock.commands.build' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
