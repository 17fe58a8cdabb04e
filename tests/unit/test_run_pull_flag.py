"""`--pull missing|always|never` of `dock run` and `dock containers create`: parsed into the
RunRequest (the CLI's default missing, the SDK's never), and the pull of a run as the user sees
it: the notice only once the registry answered, the progress and the result on the stream given
(never stdout), a failed pull as one error of the daemon's kind naming the image."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from dock import autopull
from dock.client import Client
from dock.commands.run import request_from_args
from dock.parser import build_parser
from dock.registry import Resolved, TransferDone
from dock.runner import RunRequest
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound, Unavailable
from dockyard_common.imagespec import Descriptor

TARGET = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 100)


def parsed(*argv: str) -> Any:
    return build_parser(list(argv)).parse_args(list(argv))


@pytest.mark.parametrize("command", [["run"], ["containers", "create"]])
def test_pull_flag_parsed_into_the_request(command: list[str]) -> None:
    assert request_from_args(parsed(*command, "busybox")).pull == "missing"  # as Docker
    for policy in autopull.POLICIES:
        assert request_from_args(parsed(*command, "--pull", policy, "busybox", "true")).pull == policy


def test_bad_policy_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parsed("run", "--pull", "sometimes", "busybox")
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_sdk_default_is_never_and_policies_are_checked() -> None:
    assert RunRequest("busybox", "x").pull == "never", "an SDK caller's run keeps to the store"
    assert autopull.check_policy("always") == "always"
    with pytest.raises(InvalidArgument, match="want one of missing, always, never"):
        autopull.check_policy("sometimes")


class FakeRegistry:
    def __init__(self, events: list[Any], error: DockyardError | None = None) -> None:
        self.events = events
        self.error = error
        self.asked: list[tuple[str, dict[str, object]]] = []

    async def pull_stream(self, ref: str, **options: object) -> AsyncIterator[Any]:
        self.asked.append((ref, options))
        for ev in self.events:
            yield ev
        if self.error is not None:
            raise self.error


class FakeClient:
    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry


def pull(registry: FakeRegistry, *, missing: bool = True) -> tuple[TransferDone, str]:
    out = io.StringIO()
    done = asyncio.run(autopull.pull_for_run(cast(Client, FakeClient(registry)), "reg.example/app:1",
                                             platform="linux/arm64", snapshotter="native", missing=missing, out=out))
    return done, out.getvalue()


@pytest.fixture(autouse=True)
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # none stored: anonymous


def test_pull_of_a_run_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    done = TransferDone("reg.example/app:1", TARGET, True, 2048, "sha256:" + "cd" * 32, "native")
    registry = FakeRegistry([Resolved("reg.example/app:1", TARGET, "https://reg.example"), done])
    got, text = pull(registry)
    assert got == done
    assert text.splitlines() == [
        "Unable to find image 'reg.example/app:1' locally",
        f"reg.example/app:1: resolved to {TARGET.digest} ({TARGET.media_type}) on https://reg.example",
        f"pulled reg.example/app:1 {TARGET.digest} (2.0 KiB fetched, unpacked into native)",
    ]
    [(ref, options)] = registry.asked
    assert ref == "reg.example/app:1"
    assert options == {"platform": "linux/arm64", "snapshotter": "native", "username": "", "secret": ""}
    assert capsys.readouterr().out == "", "nothing on stdout"
    _, text = pull(FakeRegistry([done]), missing=False)  # --pull always: no "Unable to find"
    assert text.splitlines()[0].startswith("pulled ")


@pytest.mark.parametrize("error", [NotFound("resolve reg.example/app:1: not found on registry reg.example"),
                                   Unavailable("registry reg.example: unreachable")])
def test_failed_pull_is_one_error_of_the_daemons_kind(error: DockyardError) -> None:
    with pytest.raises(type(error)) as raised:
        pull(FakeRegistry([], error))
    assert str(raised.value) == f'image "reg.example/app:1": not found locally, and pulling it failed: {error}'
    out = io.StringIO()
    with pytest.raises(type(error)):
        asyncio.run(autopull.pull_for_run(cast(Client, FakeClient(FakeRegistry([], error))), "reg.example/app:1",
                                          platform="", snapshotter="", missing=True, out=out))
    assert out.getvalue() == "", "no notice before the registry answered: the error is the one line"


def test_pull_without_a_result_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="ended without a result"):
        pull(FakeRegistry([]))
