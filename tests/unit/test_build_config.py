"""Config effects of Dockerfile instructions and the ARG/ENV scope (supervisor/build/config.py)."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.build.config import DEFAULT_PATH, StageState
from supervisor.build.dockerfile import DockerfileError, parse_dockerfile
from supervisor.build.stages import BuildOptions, plan_build

BASE: dict[str, Any] = {
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin", "FROMBASE=1"], "Cmd": ["sh"], "WorkingDir": "/base", "Labels": {"old": "1"}},
}


def run(text: str, base: dict[str, Any] | None = None, stage: int = -1, **kw: Any) -> StageState:
    p = plan_build(parse_dockerfile(text), BuildOptions(**kw))
    s = p.stages[stage]
    state = StageState.start(base, p, s)
    for ins in s.instructions:
        state.apply(ins)
    return state


def test_scratch_starts_like_buildkit() -> None:
    state = run("FROM scratch\n")
    assert state.config == {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}


def test_base_config_is_copied_not_changed() -> None:
    state = run("FROM img\nENV A=1\n", base=BASE)
    assert BASE["config"]["Env"] == ["PATH=/bin", "FROMBASE=1"]
    assert state.config["Env"] == ["PATH=/bin", "FROMBASE=1", "A=1"]


def test_env_forms_quotes_and_replacement_in_place() -> None:
    state = run('FROM img\nENV PATH=/x:$PATH B="two words" C=\'$lit\'\nENV OLD style value\n', base=BASE)
    assert state.config["Env"] == ["PATH=/x:/bin", "FROMBASE=1", "B=two words", "C=$lit", "OLD=style value"]


def test_arg_scope_and_precedence() -> None:
    text = ("ARG G=global\nARG NOVAL\nFROM img\nARG G\nARG NOVAL\nARG A=${G}-a\nENV E=$A\n"
            "ENV SAME=env\nARG SAME=arg\nLABEL g=$G a=$A same=$SAME noval=x$NOVAL\n")
    state = run(text, base=BASE)
    assert state.config["Labels"] == {"old": "1", "g": "global", "a": "global-a", "same": "env", "noval": "x"}
    assert "A=global-a" not in state.config["Env"]  # ARGs stay out of the image
    assert "E=global-a" in state.config["Env"]
    assert "A=global-a" in state.run_env() and "G=global" in state.run_env()
    assert "SAME=arg" not in state.run_env()


def test_build_arg_overrides_default_and_global_arg_needs_redeclaring() -> None:
    state = run("ARG G=global\nFROM img\nARG A=default\nLABEL a=$A g=$G\n", base=BASE,
                build_args={"A": "cli", "G": "cli-g"})
    assert state.config["Labels"] == {"old": "1", "a": "cli", "g": ""}


def test_platform_args_need_an_arg_line() -> None:
    state = run("FROM img\nLABEL before=$TARGETARCH\nARG TARGETARCH\nLABEL after=$TARGETARCH\n", base=BASE)
    assert state.config["Labels"]["before"] == ""
    assert state.config["Labels"]["after"] in ("amd64", "arm64")


def test_proxy_args_reach_run_only() -> None:
    state = run("FROM img\n", base=BASE, build_args={"HTTP_PROXY": "http://p:3128"})
    assert "HTTP_PROXY=http://p:3128" in state.run_env()
    assert all("PROXY" not in e for e in state.config["Env"])


def test_workdir_relative_to_previous() -> None:
    state = run("FROM img\nWORKDIR app\nWORKDIR sub/../d\nENV X=/abs\nWORKDIR $X/y\n", base=BASE)
    assert state.config["WorkingDir"] == "/abs/y"
    assert run("FROM img\nWORKDIR rel\n", base=BASE).config["WorkingDir"] == "/base/rel"


def test_cmd_entrypoint_shell() -> None:
    state = run('FROM img\nENTRYPOINT ["/ep"]\n', base=BASE)
    assert state.config["Entrypoint"] == ["/ep"] and state.config["Cmd"] is None  # inherited CMD cleared
    state = run('FROM img\nCMD ["a"]\nENTRYPOINT ep arg\n', base=BASE)
    assert state.config["Cmd"] == ["a"] and state.config["Entrypoint"] == ["/bin/sh", "-c", "ep arg"]
    state = run('FROM img\nSHELL ["/bin/bash", "-xc"]\nCMD echo $HOME\n', base=BASE)
    assert state.config["Cmd"] == ["/bin/bash", "-xc", "echo $HOME"]  # not expanded by the builder
    assert state.config["Shell"] == ["/bin/bash", "-xc"]
    assert run("FROM img\nENTRYPOINT []\n", base=BASE).config["Entrypoint"] is None


def test_expose_label_volume_user_stopsignal() -> None:
    state = run('FROM img\nARG P=8080\nEXPOSE 80 $P/udp 9000-9001\nLABEL "a b"=c d=e\nVOLUME ["/v1", "/v2"]\n'
                "VOLUME /v3 /v4\nUSER app:$P\nSTOPSIGNAL SIGINT\n", base=BASE)
    c = state.config
    assert c["ExposedPorts"] == {"80/tcp": {}, "8080/udp": {}, "9000/tcp": {}, "9001/tcp": {}}
    assert c["Labels"] == {"old": "1", "a b": "c", "d": "e"}
    assert c["Volumes"] == {"/v1": {}, "/v2": {}, "/v3": {}, "/v4": {}}
    assert c["User"] == "app:8080"
    assert c["StopSignal"] == "SIGINT"


def test_healthcheck() -> None:
    c = run("FROM img\nHEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --start-interval=1s "
            "--retries=3 CMD curl -f http://x/\n", base=BASE).config
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/"], "Interval": 90_000_000_000,
                                "Timeout": 500_000_000, "StartPeriod": 2_000_000_000,
                                "StartInterval": 1_000_000_000, "Retries": 3}
    c = run('FROM img\nHEALTHCHECK CMD ["/bin/check", "-q"]\n', base=BASE).config
    assert c["Healthcheck"] == {"Test": ["CMD", "/bin/check", "-q"]}
    assert run("FROM img\nHEALTHCHECK NONE\n", base=BASE).config["Healthcheck"] == {"Test": ["NONE"]}


def test_onbuild_and_maintainer() -> None:
    state = run("FROM img\nONBUILD COPY --chown=1 . /app\nONBUILD RUN make\nMAINTAINER Jo <jo@x>\n", base=BASE)
    assert state.config["OnBuild"] == ["COPY --chown=1 . /app", "RUN make"]
    assert state.image["author"] == "Jo <jo@x>"


def test_triggers_of_the_base_run_first_and_are_not_inherited() -> None:
    base = {"config": {"OnBuild": ["ENV FROM_TRIGGER=1", "COPY --chown=2 a /b"]}}
    p = plan_build(parse_dockerfile("FROM img\nENV OWN=1\n"))
    state = StageState.start(base, p, p.stages[0])
    triggers = state.run_triggers(None, p.stages[0].line)
    assert [t.name for t in triggers] == ["ENV", "COPY"] and triggers[1].flags["chown"] == "2"
    assert "OnBuild" not in state.config
    state.apply(triggers[0])
    assert state.config["Env"] == ["FROM_TRIGGER=1"]


@pytest.mark.parametrize(("text", "message"), [
    ("FROM img\nHEALTHCHECK --interval=10us CMD x\n", "cannot be less than 1ms"),
    ("FROM img\nHEALTHCHECK --interval=5 CMD x\n", "invalid duration"),
    ("FROM img\nHEALTHCHECK --retries=-1 CMD x\n", "cannot be negative"),
    ("FROM img\nHEALTHCHECK NONE x\n", "NONE takes no arguments"),
    ("FROM img\nHEALTHCHECK WAT x\n", "try CMD"),
    ("FROM img\nSTOPSIGNAL SIGNOPE\n", "invalid signal"),
    ("FROM img\nEXPOSE 99999\n", "invalid containerPort"),
    ('FROM img\nVOLUME [""]\n', "can not be an empty string"),
    ("FROM img\nLABEL a=${B\n", "missing '}'"),
    ("FROM img\nENV =x\n", "names"),
])
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as err:
        run(text, base=BASE)
    assert err.value.line == 2


def _copy_args(text: str, **kw: Any):  # type: ignore[no-untyped-def]
    p = plan_build(parse_dockerfile(text), BuildOptions(**kw))
    s = p.stages[-1]
    state = StageState.start(BASE, p, s)
    for ins in s.instructions[:-1]:
        state.apply(ins)
    return state.copy_args(s.instructions[-1])


def test_copy_args_expand_words_and_flags() -> None:
    a = _copy_args('FROM img\nARG U=app\nENV D=/srv\nWORKDIR /w\nCOPY --chown=$U:$U --chmod=6${M:-44} a ${D}/x rel/\n')
    assert a.sources == ("a", "/srv/x")
    assert (a.dest, a.chown, a.chmod, a.inline) == ("/w/rel/", "app:app", "644", ())
    assert _copy_args("FROM img\nCOPY a .\n").dest == "/base/"
    assert _copy_args('FROM img\nENV D=d\nCOPY ["a b", "$D/"]\n').sources == ("a b",)
    # The shell form splits at blanks before quotes are read (buildkit does too): use JSON for spaces.
    with pytest.raises(DockerfileError, match="double-quote"):
        _copy_args('FROM img\nCOPY "a b" /d/\n')
    assert _copy_args("FROM img\nADD --checksum=sha256:${S:-ab} http://h/f /f\n").checksum == "sha256:ab"


def test_copy_args_heredocs() -> None:
    a = _copy_args('FROM img\nENV NAME=world\nCOPY <<EOF <<"RAW" /etc/\nhello $NAME "q" \\$x\nEOF\n$NAME\nRAW\n')
    assert a.sources == ()
    assert a.inline == (("EOF", 'hello world "q" \\$x\n'), ("RAW", "$NAME\n"))
    with pytest.raises(DockerfileError, match="cannot accept a heredoc as a destination"):
        _copy_args("FROM img\nCOPY a <<EOF\nx\nEOF\n")


def test_copy_args_unsupported_flags() -> None:
    from dockyard_common.errors import Unimplemented

    with pytest.raises(Unimplemented, match="Dockerfile:2: COPY --parents"):
        _copy_args("FROM img\nCOPY --parents a /b/\n")


def test_env_pairs_expand_with_the_env_before_the_line() -> None:
    state = run("FROM img\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n", base=BASE)
    assert state.config["Env"][-3:] == ["abc=bye", "def=hello", "ghi=bye"]  # docker's documented example
