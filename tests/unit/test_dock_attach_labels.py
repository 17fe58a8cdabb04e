"""create/run's -a and -i as the labels `dock start -a` and `dock attach` read (dock/attachflags.py),
by docker/cli's rules for AttachStdin/AttachStdout/AttachStderr and StdinOnce."""

from __future__ import annotations

import pytest

from dock.attachflags import ATTACH_LABEL, STDIN_ONCE_LABEL, attached_streams, labels_for, parse_attach, stdin_once


@pytest.mark.parametrize(("attach", "interactive", "detach", "want"), [
    ([], False, False, {}),                                       # docker run: stdout, stderr (the default)
    ([], True, False, {STDIN_ONCE_LABEL: "true"}),                # docker run -i / create -i
    ([], True, True, {}),                                         # docker run -d -i: OpenStdin, not StdinOnce
    (["STDOUT"], False, False, {ATTACH_LABEL: "stdout"}),
    (["stderr", "stdout"], False, False, {ATTACH_LABEL: "stdout,stderr"}),
    (["stdin"], False, False, {ATTACH_LABEL: "stdin"}),           # no open stdin: not StdinOnce
    (["stdout"], True, False, {ATTACH_LABEL: "stdin,stdout", STDIN_ONCE_LABEL: "true"}),  # -i attaches stdin
])
def test_labels_follow_docker_cli(attach: list[str], interactive: bool, detach: bool, want: dict[str, str]) -> None:
    assert labels_for(parse_attach(attach), interactive=interactive, detach=detach) == want


def test_reading_the_labels_back() -> None:
    assert attached_streams({}) == frozenset()  # the default: stdout and stderr
    assert attached_streams({ATTACH_LABEL: "stdin,stdout"}) == {"stdin", "stdout"}
    assert attached_streams({ATTACH_LABEL: " STDERR , weird"}) == {"stderr"}  # another client's: what we know
    assert attached_streams({ATTACH_LABEL: "weird"}) == frozenset()
    assert stdin_once({STDIN_ONCE_LABEL: "true"}) and stdin_once({STDIN_ONCE_LABEL: "TRUE"})
    assert not stdin_once({}) and not stdin_once({STDIN_ONCE_LABEL: "false"})
