"""`docker commit --change` instructions applied to a run config (supervisor/build/commit_changes.py),
checked against what Docker's BuildFromConfig makes of the same changes."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.build.commit_changes import apply_changes, logical_lines, parse_port_spec, split_words

BASE: dict[str, Any] = {"Env": ["PATH=/usr/bin:/bin", "HOME=/root"], "Cmd": ["sh"], "Labels": {"a": "1"}}


def changed(*changes: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_changes(list(changes), BASE if config is None else config)


def test_no_changes_is_a_copy() -> None:
    out = changed()
    assert out == BASE and out is not BASE
    out["Env"].append("X=1")
    assert BASE["Env"] == ["PATH=/usr/bin:/bin", "HOME=/root"]


@pytest.mark.parametrize(("change", "cmd"), [
    ('CMD ["echo", "hi"]', ["echo", "hi"]),
    ("CMD echo hi", ["/bin/sh", "-c", "echo hi"]),
    ('CMD  [ "a" ,"b" ] ', ["a", "b"]),
    ("CMD [not json", ["/bin/sh", "-c", "[not json"]),
    ('CMD {"a": 1}', ["/bin/sh", "-c", '{"a": 1}']),
    ("CMD []", []),
    ("cmd echo $HOME", ["/bin/sh", "-c", "echo $HOME"]),  # not expanded: the shell does it
])
def test_cmd_json_and_shell_forms(change: str, cmd: list[str]) -> None:
    assert changed(change)["Cmd"] == cmd


def test_shell_form_uses_the_config_shell() -> None:
    out = changed("CMD echo hi", config={"Shell": ["/bin/bash", "-eu", "-c"]})
    assert out["Cmd"] == ["/bin/bash", "-eu", "-c", "echo hi"]


def test_entrypoint_drops_cmd_unless_cmd_came_first() -> None:
    out = changed('ENTRYPOINT ["/init"]')
    assert out["Entrypoint"] == ["/init"] and out["Cmd"] is None
    out = changed('CMD ["x"]', "ENTRYPOINT /init --flag")
    assert out["Entrypoint"] == ["/bin/sh", "-c", "/init --flag"] and out["Cmd"] == ["x"]
    out = changed('ENTRYPOINT ["/init"]', 'CMD ["y"]')
    assert out["Entrypoint"] == ["/init"] and out["Cmd"] == ["y"]


def test_env_pairs_replace_in_place_and_expand_before() -> None:
    out = changed('ENV HOME=/home/u NEW="a b" REF=$HOME ESC=\\$HOME SQ=\'$HOME\'')
    assert out["Env"] == ["PATH=/usr/bin:/bin", "HOME=/home/u", "NEW=a b", "REF=/root", "ESC=$HOME", "SQ=$HOME"]
    out = changed("ENV A 1 2  3", "ENV B=${A}-${MISSING:-dflt}-${A:+set}")
    assert out["Env"][-2:] == ["A=1 2  3", "B=1 2  3-dflt-set"]


def test_labels_expand_and_merge() -> None:
    out = changed('LABEL "x y"=z b=$HOME', "LABEL a old form value")
    assert out["Labels"] == {"a": "old form value", "x y": "z", "b": "/root"}


def test_expose_ports() -> None:
    out = changed("EXPOSE 80 53/UDP 8000-8002/tcp 127.0.0.1:8080:9090", "EXPOSE 443")
    assert out["ExposedPorts"] == {p: {} for p in ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp",
                                                    "9090/tcp", "443/tcp"]}
    assert parse_port_spec("[::1]:80:81/sctp") == ["81/sctp"]


def test_user_workdir_volume_stopsignal() -> None:
    out = changed("USER $HOME:1", "WORKDIR /a", "WORKDIR b/../c", "WORKDIR d e",
                  'VOLUME ["/v1", "/v 2"]', "VOLUME /v3 $HOME", "STOPSIGNAL SIGUSR1")
    assert out["User"] == "/root:1"
    assert out["WorkingDir"] == "/a/c/d e"
    assert out["Volumes"] == {"/v1": {}, "/v 2": {}, "/v3": {}, "/root": {}}
    assert out["StopSignal"] == "SIGUSR1"
    for sig in ("TERM", "9", "sigkill", "SIGRTMIN+3", "RTMAX-1"):
        assert changed(f"STOPSIGNAL {sig}")["StopSignal"] == sig


def test_lines_continuations_and_comments() -> None:
    assert logical_lines("# a comment\n\nENV A=1 \\\n  B=2\nCMD x\\\n# inside\ny") == [
        ("ENV", "A=1   B=2"), ("CMD", "xy")]
    out = changed("ENV A=1\nENV B=$A", "  label   k=v  ")
    assert out["Env"][-2:] == ["A=1", "B=1"] and out["Labels"]["k"] == "v"


def test_words_keep_quotes_for_expansion() -> None:
    assert split_words('a="b c" \'d e\' f\\ g') == ['a="b c"', "'d e'", "f\\ g"]


@pytest.mark.parametrize(("change", "message"), [
    ("RUN echo hi", "RUN is not a valid change command"),
    ("FROM scratch", "FROM is not a valid change command"),
    ("ONBUILD RUN x", "ONBUILD is not a valid change command"),
    ("COPY a b", "COPY is not a valid change command"),
    ("CMDX echo", "CMDX is not a valid change command"),
    ("CMD", "CMD requires at least one argument"),
    ("CMD [1, 2]", "arrays must be comprised of strings only"),
    ("CMD --foo bar", "CMD: unknown flag: foo"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV ONLYNAME", "ENV must have two arguments"),
    ("ENV A=1 B", "can't find = in 'B'"),
    ("ENV =x", "ENV names can not be blank"),
    ('ENV A="unterminated', "ENV A=\"unterminated"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("EXPOSE 70000", "invalid containerPort: 70000"),
    ("EXPOSE 80/quic", "invalid proto: quic"),
    ("EXPOSE 90-80", "invalid range"),
    ("USER", "USER requires exactly one argument"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("STOPSIGNAL SIGNOPE", "invalid signal: SIGNOPE"),
    ("STOPSIGNAL 0", "invalid signal: 0"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
])
def test_errors_name_the_problem(change: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=None) as info:
        changed(change)
    assert message in info.value.message


def test_a_later_bad_change_fails_the_whole_set() -> None:
    with pytest.raises(InvalidArgument, match="RUN"):
        changed("ENV A=1", "RUN x")
